"""Reading Exchange admin API failures: the shapes the admin API reports a failed cmdlet in, and their classes.

The admin API reports a failed cmdlet in several shapes (as the ExchangeOnlineManagement module and other public
clients of the endpoint read them). `read_failure` tries them in this order and `to_target_error` classifies the
result into the tree of `sync.errors`:

    JSON string in error.details[0].message   {"Message": ..., "TypeName": "...NotFoundException"}
    pipe string                               Ex6F9304|Microsoft....ManagementObjectNotFoundException|text
    error.innererror.internalexception        {"message": ..., "type": ...}
    error.message                             "Error executing cmdlet" or "Invalid Operation"
    plain text body                           "You have reached the maximum number of concurrent requests ..."
    a body that is not text                   NUL bytes (a live 403): "HTTP 403 with a body that is not JSON (4 bytes)"

Both envelopes seen live are read: "Error executing cmdlet" with a JSON-string or `Ex…|Type|text` detail, and
"Invalid Operation" with an empty-prefix pipe string (`|Type|text`) in details[0] and/or the innererror. Control
characters never reach a message (they would reach logs and Table Storage).

A 200 whose body carries `@adminapi.errors` is a failed cmdlet too (`errors_in_success`).

Retry-After parsing and retry budgets, which the Graph edge shares, live in `sync.core.retry`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sync.errors import (
    AddressInUse,
    CreationQuotaReached,
    TargetAuthError,
    TargetError,
    TargetNotFound,
    TargetRejected,
    TargetThrottled,
    TargetTransient,
)

TRANSIENT_EXCEPTION_TYPES = frozenset(
    {"ServerBusyException", "TransientException", "BackendCommunicationException", "DCOverloadedException"}
)
TRANSIENT_STATUSES = frozenset({500, 502, 503, 504})
CONCURRENCY_LIMIT_TEXT = "maximum number of concurrent requests"
QUOTA_EXCEPTION_TYPE = "RecipientUsageExceededRecentQuotaException"
QUOTA_TEXT = "maximum number of mail users and contacts you can create"
_MAX_MESSAGE = 500

_PIPE_SHAPE = re.compile(r"^\s*([^|\s]*)\|([A-Za-z_][\w.`+]*)\|(.*)$", re.DOTALL)
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ufffd]+")  # unprintable, and what bad UTF-8 decodes to
_HOLDER = re.compile(r'LegacyExchangeDN of "([^"]*)"', re.IGNORECASE)


@dataclass(frozen=True)
class ExchangeFailure:
    """One failed call, reduced to what classification needs."""

    status: int
    exception_type: str | None  # short name: ManagementObjectNotFoundException
    message: str
    code: str | None = None  # error.code of the envelope: BadRequest, NotFound, ...


def read_failure(status: int, body: bytes | str, headers: Mapping[str, str] | None = None) -> ExchangeFailure:
    """Extract the exception type and message from a non-2xx answer, trying each documented shape in order."""
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    header_type = _short_type((headers or {}).get("X-ExceptionType") or (headers or {}).get("x-exceptiontype"))
    payload = _json_object(text)
    error = payload.get("error") if payload is not None else None
    if not isinstance(error, Mapping):
        return ExchangeFailure(status, header_type, _plain_text(status, body, text))
    code = error.get("code") if isinstance(error.get("code"), str) else None
    candidates: list[tuple[str, str | None]] = []
    details = error.get("details")
    if isinstance(details, list) and details and isinstance(details[0], Mapping):
        message = details[0].get("message")
        if isinstance(message, str):
            candidates.append((message, None))
    inner = error.get("innererror") or error.get("innerError")
    if isinstance(inner, Mapping):
        internal = inner.get("internalexception") or inner.get("internalException")
        if isinstance(internal, Mapping) and isinstance(internal.get("message"), str):
            candidates.append((internal["message"], _short_type(internal.get("type"))))
    if isinstance(error.get("message"), str):
        candidates.append((error["message"], None))
    for candidate, known_type in candidates:
        exception_type, message = _read_message(candidate)
        exception_type = exception_type or known_type
        if exception_type or message:
            return ExchangeFailure(status, exception_type or header_type, _clip(message), code)
    return ExchangeFailure(status, header_type, _clip(text.strip()) or f"HTTP {status}", code)


def errors_in_success(payload: Mapping[str, Any]) -> ExchangeFailure | None:
    """A 200 that carries `@adminapi.errors` reports a failed cmdlet; None when it carries none."""
    errors = payload.get("@adminapi.errors")
    if not errors:
        return None
    first = errors[0] if isinstance(errors, list) else errors
    if isinstance(first, str):
        exception_type, message = _read_message(first)
        return ExchangeFailure(200, exception_type, _clip(message))
    if isinstance(first, Mapping):
        message = _first_str(first, "Message", "message", "ErrorMessage", "Exception") or json.dumps(first)[:_MAX_MESSAGE]
        exception_type, message = _read_message(message)
        declared = _short_type(_first_str(first, "TypeName", "ExceptionType", "type", "Type", "ErrorType"))
        return ExchangeFailure(200, exception_type or declared, _clip(message))
    return ExchangeFailure(200, None, _clip(str(first)))


def read_answer(status: int, content: bytes, headers: Mapping[str, str]) -> dict[str, Any] | ExchangeFailure:
    """An InvokeCommand answer: its JSON page, or why it failed (a refusal, a success whose body is not a JSON
    object, or a 200 that carries `@adminapi.errors`). The client and the deep test read answers alike."""
    page: Any = None
    if 200 <= status < 300:
        try:
            page = json.loads(content)
        except ValueError:
            page = None
    if not isinstance(page, dict):
        return read_failure(status, content, headers)
    return errors_in_success(page) or page


def to_target_error(
    failure: ExchangeFailure, *, cmdlet: str, retry_after: float | None = None
) -> TargetError:
    """The `sync.errors` exception for a failure; the message names the cmdlet, status and exception type."""
    kind = failure.exception_type
    lowered = failure.message.lower()
    prefix = f"{cmdlet} failed (HTTP {failure.status}{', ' + kind if kind else ''}): "
    message = prefix + failure.message
    common: dict[str, Any] = {"status": failure.status, "exception_type": kind}
    if failure.status in (401, 403):
        return TargetAuthError(
            message + " (check the certificate or secret, Exchange.ManageAsApp and the Exchange Recipient Administrator role)",
            **common,
        )
    if kind == QUOTA_EXCEPTION_TYPE or QUOTA_TEXT in lowered:
        # Before the 4xx catch-all: the creation quota is a pause of the organisation, not a refusal of the contact.
        return CreationQuotaReached(message, status=failure.status)
    if failure.status == 429 or CONCURRENCY_LIMIT_TEXT in lowered:
        concurrency = CONCURRENCY_LIMIT_TEXT in lowered
        return TargetThrottled(message, retry_after=retry_after, status=failure.status, concurrency=concurrency)
    if kind in TRANSIENT_EXCEPTION_TYPES:
        return TargetTransient(message, **common)
    if kind == "ProxyAddressExistsException" or "is already being used by the proxy addresses" in lowered:
        holder = _HOLDER.search(failure.message)
        return AddressInUse(message, holder=holder.group(1) if holder else None, status=failure.status)
    if kind == "ManagementObjectNotFoundException" or failure.status == 404 or "couldn't be found" in lowered:
        return TargetNotFound(message, **common)
    if kind == "ADObjectAlreadyExistsException" or "already exists" in lowered:
        return TargetRejected(message, **common)
    if "matching identity" in lowered or "multiple recipients" in lowered:
        # Ambiguous identity: retrying the same call finds the same several objects.
        return TargetRejected(message, **common)
    if failure.status in TRANSIENT_STATUSES:
        return TargetTransient(message, **common)
    if 400 <= failure.status < 500 or failure.status == 200:
        return TargetRejected(message, **common)
    return TargetError(message, **common)


def _read_message(text: str) -> tuple[str | None, str]:
    """(exception type, message) from a JSON-string or pipe-string message; the text itself otherwise."""
    stripped = text.strip()
    payload = _json_object(stripped)
    if payload is not None:
        message = _first_str(payload, "Message", "message") or stripped
        inner_type, inner_message = _read_message(message) if message != stripped else (None, message)
        declared = _short_type(_first_str(payload, "TypeName", "ExceptionType", "type", "ErrorType"))
        return declared or inner_type, inner_message
    match = _PIPE_SHAPE.match(stripped)
    if match:
        return _short_type(match.group(2)), match.group(3).strip()
    return None, stripped


def _json_object(text: str) -> dict[str, Any] | None:
    if not text.lstrip().startswith("{"):
        return None
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _first_str(mapping: Mapping[str, Any], *keys: str) -> str | None:
    for key in keys:
        value = mapping.get(key)
        if isinstance(value, str) and value:
            return value
    return None


def _short_type(full: object) -> str | None:
    if not isinstance(full, str) or not full.strip():
        return None
    return full.strip().rsplit(".", 1)[-1]


def _plain_text(status: int, body: bytes | str, text: str) -> str:
    """The message of a body that is not a JSON error: its text when it is readable, else what it was."""
    readable = _CONTROL.sub(" ", text).strip()
    if not readable:
        size = len(body)
        return f"HTTP {status}" + (f" with a body that is not JSON ({size} bytes)" if size else "")
    if len(readable) < len(text.strip()) / 2:  # mostly unreadable: binary, not a message
        return f"HTTP {status} with a body that is not JSON ({len(body)} bytes)"
    return _clip(re.sub(r"\s+", " ", readable))


def _clip(text: str) -> str:
    text = _CONTROL.sub(" ", text)
    return text if len(text) <= _MAX_MESSAGE else text[: _MAX_MESSAGE - 1] + "…"
