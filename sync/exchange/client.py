"""`AdminApiClient`: one Exchange Online organisation's admin API (the REST endpoint the ExchangeOnlineManagement
module uses), on httpx.

Every cmdlet is one `POST {exchange}/adminapi/beta/{tenant}/InvokeCommand` with the headers the admin API
expects (those the ExchangeOnlineManagement module sends); listings follow `@odata.nextLink` with the same body.
Failures become the typed errors of `sync.errors` (see `sync.exchange.errors`).

Retrying happens here, within bounds: throttling and transient failures are retried per call with backoff that
honours Retry-After, up to `retry` (a `RetryPolicy`); then the error is raised so the queue can defer the op.
A NotFound right after New-MailContact is replication lag and is retried briefly (`retry_not_found`). A NotFound
that names the `Manager` of a Set-Contact (not its Identity) is `ManagerNotFound`: raised at once, for the queue to
retry the op later, and never taken for a missing contact. `requests` counts HTTP requests per cmdlet (pages and
retries included) for the engine's run report.

The client knows cmdlets, not contacts: `ExchangeTarget` (sync.exchange.contacts) builds the mail-contact
operations on it, and `SourceVisibility` reads the source's own organisation with it. The httpx client is the test
seam: pass one with a `transport=` to test without a network.
"""

from __future__ import annotations

import collections
import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple
from urllib.parse import urlsplit

import httpx
from azure.core.credentials import TokenCredential
from azure.core.exceptions import ClientAuthenticationError

from sync.core.diagnosis import is_transient_sign_in
from sync.core.retry import RetryBudget, RetryPolicy, parse_retry_after
from sync.errors import (
    ManagerNotFound,
    TargetAuthError,
    TargetError,
    TargetNotFound,
    TargetRejected,
    TargetThrottled,
    TargetTransient,
)
from sync.exchange.errors import ExchangeFailure, read_answer, to_target_error
from sync.exchange.pacing import CONCURRENCY_RETRY_SECONDS, OrgPacer

SYSTEM_MAILBOX = "SystemMailbox{bb558c35-97f1-4cb9-8ff7-d53741dc928c}"
DEFAULT_EXCHANGE_RETRY = RetryPolicy(max_retries=4, max_wait_seconds=60.0, base_delay=2.0, max_delay=20.0)
NAME_EXISTS = "ADObjectAlreadyExistsException"
# A refused sign-in is remembered this long: the worker's concurrent ops then fail at once, without a token request
# each, while the first failure quarantines the pair.
TOKEN_FAILURE_MEMO_SECONDS = 60.0


@dataclass(frozen=True)
class CallBounds:
    """How often and how long the client tries one call: `retry` for throttling and transient failures,
    `not_found_retries` waits of `not_found_delay` (growing) for the replication lag after a create, and `timeout`
    per HTTP request of the httpx client the AdminApiClient makes itself (a client passed in keeps its own)."""

    retry: RetryPolicy = DEFAULT_EXCHANGE_RETRY
    not_found_retries: int = 4
    not_found_delay: float = 2.0
    timeout: float = 100.0


class AdminApiClient:
    """Cmdlets against one organisation.

    `tenant` is the tenant id (or `xxx.onmicrosoft.com`) in the URL; `organization` the `.onmicrosoft.com` domain
    of the anchor mailbox header. `bounds` bound the retries and waits (`CallBounds`). `sleep` waits between
    retries (tests pass a recorder). `pacer` paces the calls (None: every call goes out at once, as the caller's
    threads make them).
    """

    def __init__(
        self,
        credential: TokenCredential,
        *,
        exchange_endpoint: str,
        tenant: str,
        organization: str,
        client: httpx.Client | None = None,
        bounds: CallBounds | None = None,
        sleep: Callable[[float], object] = time.sleep,
        pacer: OrgPacer | None = None,
    ) -> None:
        if not tenant or not organization:
            raise ValueError("tenant and organization are required")
        bounds = bounds or CallBounds()
        self._credential = credential
        self.endpoint = exchange_endpoint.rstrip("/")
        self.url = f"{self.endpoint}/adminapi/beta/{tenant}/InvokeCommand"
        self.organization = organization
        self.retry = bounds.retry
        self.not_found_retries = bounds.not_found_retries
        self.not_found_delay = bounds.not_found_delay
        self._sleep = sleep
        self.pacer = pacer
        self._owns_client = client is None
        self._client = client if client is not None else httpx.Client(timeout=bounds.timeout)
        self._scope = f"{self.endpoint}/.default"
        self._origin = _origin(self.endpoint)
        self.requests: collections.Counter[str] = collections.Counter()
        self._count_lock = threading.Lock()  # one target serves the worker's concurrent ops
        self._token_lock = threading.Lock()  # one sign-in at a time: concurrent ops share its outcome
        self._thread = threading.local()  # requests and 429s of the calling thread: one op's share of them
        self._token_failure: tuple[float, TargetAuthError] | None = None

    def __repr__(self) -> str:
        return f"<AdminApiClient {self.url}>"

    def close(self) -> None:
        if self._owns_client:
            self._client.close()

    def __enter__(self) -> AdminApiClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    @property
    def total_requests(self) -> int:
        return sum(self.requests.values())

    def thread_counts(self) -> tuple[int, int]:
        """(requests, 429 answers) this thread has made so far: the worker's per-op share, for its log line."""
        return getattr(self._thread, "requests", 0), getattr(self._thread, "throttled", 0)

    # --- cmdlet calls --------------------------------------------------------------------------------------

    def invoke(
        self, cmdlet: str, parameters: Mapping[str, Any], *, select: tuple[str, ...] = (), retry_not_found: bool = False,
        paced: bool = True,
    ) -> list[dict[str, Any]]:
        """Run one cmdlet and return every object it answered (all pages). `paced=False` sends it outside the
        organisation's shared pace: for a single probe a planner makes, which should not count this process as one
        of the instances sharing the pace."""
        return list(self.iter_rows(cmdlet, parameters, select=select, retry_not_found=retry_not_found, paced=paced))

    def iter_rows(
        self, cmdlet: str, parameters: Mapping[str, Any], *, select: tuple[str, ...] = (), retry_not_found: bool = False,
        paced: bool = True,
    ) -> Iterator[dict[str, Any]]:
        if "Identity" in parameters and not str(parameters["Identity"] or "").strip():
            # Get-* with an empty Identity answers every object; Set-*/Remove-* would act on a wrong one.
            raise ValueError(f"{cmdlet}: refusing to send an empty Identity")
        body = json.dumps({"CmdletInput": {"CmdletName": cmdlet, "Parameters": dict(parameters)}})
        url = self.url + (f"?$select={','.join(select)}" if select else "")
        manager = str(parameters.get("Manager") or "") if cmdlet == "Set-Contact" else ""
        while url:
            page = self._post(cmdlet, url, body, retry_not_found=retry_not_found, manager=manager, paced=paced)
            for row in page.get("value") or []:
                if isinstance(row, dict):
                    yield {key: value for key, value in row.items() if "@" not in key}
            next_link = page.get("@odata.nextLink")
            url = self._checked_link(cmdlet, next_link) if next_link else ""

    def _post(
        self, cmdlet: str, url: str, body: str, *, retry_not_found: bool, manager: str = "", paced: bool = True
    ) -> dict[str, Any]:
        budget = RetryBudget(self.retry)
        lag_retries = 0
        while True:
            attempt = self._post_once(cmdlet, url, body, paced=paced)
            error = attempt.error
            if error is None and attempt.page is not None:
                return attempt.page
            if isinstance(error, TargetNotFound) and manager and _names(str(error), manager):
                raise ManagerNotFound(str(error), manager=manager, status=error.status)
            if isinstance(error, TargetNotFound) and retry_not_found and lag_retries < self.not_found_retries:
                lag_retries += 1
                self._sleep(self.not_found_delay * lag_retries)
                continue
            if isinstance(error, TargetTransient):
                # Retry-After is honoured on any transient answer (429, 503, ...), not only on throttling.
                retry_after = attempt.retry_after
                if retry_after is None and self.pacer is not None and _refused_for_concurrency(error):
                    retry_after = CONCURRENCY_RETRY_SECONDS  # the pacer already gave up the slot: wait for the next
                wait = budget.next_wait(retry_after)
                if wait is not None:
                    budget.spend(wait)
                    self._sleep(wait)
                    continue
            if budget.retries and isinstance(error, TargetRejected) and error.exception_type == NAME_EXISTS:
                # An earlier attempt of this very call may have succeeded behind a timeout or a 5xx.
                raise ConflictAfterRetry(str(error), status=error.status, exception_type=error.exception_type)
            raise error or TargetError(f"{cmdlet}: no answer")

    def _post_once(self, cmdlet: str, url: str, body: str, *, paced: bool = True) -> _Attempt:
        headers = {
            "Authorization": f"Bearer {self._token()}",
            "Content-Type": "application/json",
            "Accept": "application/json",
            "X-AnchorMailbox": f"UPN:{SYSTEM_MAILBOX}@{self.organization}",
            "Prefer": "odata.maxpagesize=1000",
            "X-ResponseFormat": "json",
            "X-CmdletName": cmdlet,
            "client-request-id": str(uuid.uuid4()),
        }
        with self._count_lock:
            self.requests[cmdlet] += 1
        self._thread.requests = getattr(self._thread, "requests", 0) + 1
        if self.pacer is None or not paced:
            return self._send(cmdlet, url, body, headers, report=paced)
        with self.pacer.slot():
            attempt = self._send(cmdlet, url, body, headers)
        return attempt

    def _send(self, cmdlet: str, url: str, body: str, headers: dict[str, str], *, report: bool = True) -> _Attempt:
        try:
            response = self._client.post(url, content=body, headers=headers)
        except httpx.TransportError as error:
            if self.pacer is not None and report:
                self.pacer.observe(status=0)
            return _Attempt(error=TargetTransient(f"{cmdlet}: Exchange unreachable ({type(error).__name__})"))
        attempt = self._read(cmdlet, response)
        if self.pacer is not None and report:
            self.pacer.observe(status=response.status_code, concurrency_refused=_refused_for_concurrency(attempt.error),
                               retry_after=attempt.retry_after, headers=response.headers)
        return attempt

    def _read(self, cmdlet: str, response: httpx.Response) -> _Attempt:
        if response.status_code == 429:
            self._thread.throttled = getattr(self._thread, "throttled", 0) + 1
        retry_after = parse_retry_after(response.headers.get("Retry-After"))
        page = read_answer(response.status_code, response.content, response.headers)
        if isinstance(page, ExchangeFailure):
            return _Attempt(error=to_target_error(page, cmdlet=cmdlet, retry_after=retry_after), retry_after=retry_after)
        return _Attempt(page=page)

    def token(self) -> str:
        """An access token for this organisation's Exchange (azure-identity caches and refreshes it).

        `TargetAuthError` when the sign-in is refused (remembered for TOKEN_FAILURE_MEMO_SECONDS, so concurrent
        and following calls fail without asking again), `TargetTransient` when Entra itself failed."""
        with self._token_lock:
            failure = self._token_failure
            if failure is not None and time.monotonic() < failure[0]:
                raise TargetAuthError(str(failure[1]), status=failure[1].status)
            try:
                token = self._credential.get_token(self._scope).token
            except ClientAuthenticationError as error:
                lines = str(error).strip().splitlines()
                text = lines[0][:300] if lines else type(error).__name__
                if is_transient_sign_in(text):
                    raise TargetTransient(f"no Exchange token (sign-in service failed): {text}") from None
                refused = TargetAuthError(f"no Exchange token for tenant {self.organization}: {text}", status=401)
                self._token_failure = (time.monotonic() + TOKEN_FAILURE_MEMO_SECONDS, refused)
                raise refused from None
            self._token_failure = None
            return token

    def _token(self) -> str:
        return self.token()

    def _checked_link(self, cmdlet: str, link: object) -> str:
        # The token goes wherever the link points: only follow links to the endpoint we were given.
        if not isinstance(link, str) or _origin(link) != self._origin:
            raise TargetError(f"{cmdlet}: refusing a nextLink to another host")
        return link


class ConflictAfterRetry(TargetRejected):
    """The name exists, and an earlier attempt of the same call had failed transiently: perhaps it was us."""


class _Attempt(NamedTuple):
    """One HTTP attempt: the page, or the error it maps to and the Retry-After that came with it."""

    page: dict[str, Any] | None = None
    error: TargetError | None = None
    retry_after: float | None = None


def _refused_for_concurrency(error: TargetError | None) -> bool:
    return isinstance(error, TargetThrottled) and error.concurrency


def _names(message: str, value: str) -> bool:
    """The message quotes `value` ('x' or "x"): which object a NotFound is about."""
    return f"'{value}'" in message or f'"{value}"' in message


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    return parts.scheme.lower(), (parts.hostname or "").lower(), parts.port
