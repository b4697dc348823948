"""`POST /api/notifications/{pair}/{token}`: where Graph posts change notifications and lifecycle events (auth level
ANONYMOUS).

    wrong {pair}/{token}        404, before any storage, queue or log work (counted in memory, one log line a minute)
    Content-Length too large    413, before the body is read
    ?validationToken=<token>    the validation handshake: 200 with the token as text/plain, only while the timer is
                                creating this pair's subscription of this address id; 404 otherwise
    {"value": [...]}            notifications: each item checked, the pair's run asked for: 202

Graph cannot send a header of ours, only what is in the URL it was given, so the route is anonymous and the URL's
path token (an HMAC of the pair and a per-subscription address id with CTCS_NOTIFICATION_KEY) is the first check,
each item's `clientState` (a secret per subscription, compared with its stored hash) and `tenantId` the next. Even
an accepted item only starts a delta round. See sync.app.notifications.intake for the rest.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from sync.app.notifications.intake import (
    MAX_BODY_BYTES,
    NotNotifications,
    accept_notifications,
    issued_address_id,
    validation_answer,
)
from sync.app.notifications.lean import IntakeRuntime

log = logging.getLogger("ctcs.http")


@dataclass(frozen=True)
class PlainResponse:
    status: int
    text: str
    mimetype: str = "text/plain"


NOT_FOUND = PlainResponse(404, "")


def declared_size(headers: Mapping[str, str]) -> int | None:
    """The request's Content-Length, or None when it sends none (chunked) or one that is not a number."""
    raw = next((value for name, value in headers.items() if name.lower() == "content-length"), None)
    try:
        return int(raw) if raw is not None else None
    except ValueError:
        return None


def receive(rt: IntakeRuntime, address: tuple[str, str], params: Mapping[str, str], headers: Mapping[str, str],
            read_body: Callable[[], bytes]) -> PlainResponse:
    """One request to the notification route; `address` is the path's (pair, token), `read_body` is called only
    once the path and the declared size have passed."""
    pair_id, token = address
    address_id = issued_address_id(rt, pair_id, token)
    if address_id is None:
        return NOT_FOUND
    size = declared_size(headers)
    if size is not None and size > MAX_BODY_BYTES:
        return PlainResponse(413, f"more than {MAX_BODY_BYTES} bytes: not a change notification")
    validation = params.get("validationToken")
    if validation is not None:
        answer = validation_answer(rt, pair_id, address_id, validation)
        return NOT_FOUND if answer is None else PlainResponse(200, answer)
    try:
        done = accept_notifications(rt, read_body(), pair_id=pair_id, address_id=address_id)
    except NotNotifications as bad:
        return PlainResponse(400, f"not a change notification: {bad}")
    except Exception:  # Graph retries a 5xx; the items are hints and the timer still runs, so say no more
        log.exception("change notifications could not be recorded")
        return PlainResponse(500, "could not record the notifications")
    log.info("change notifications: %d accepted, %d rejected, runs asked for %s", done.accepted, done.rejected,
             done.runs_requested or "none",
             extra={"accepted": done.accepted, "rejected": done.rejected, "pairs": done.pairs,
                    "runs_requested": done.runs_requested, "lifecycle": dict(done.lifecycle)})
    return PlainResponse(202, "")
