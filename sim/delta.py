"""What the simulated Microsoft Graph delta endpoints share: `users/delta` (sim.graph) and `groups/delta` (sim.groups)
follow the same protocol (Microsoft Graph's delta query documentation) and differ only in their resource, `$select`
and paging.

Tokens ($skiptoken / $deltatoken) are opaque: base64url JSON + an HMAC, so an edited token is "garbled" (400
syncStateInvalid). Every payload names its tenant ("t") and resource ("k"), so a token taken to another tenant or to
the other endpoint is refused the same way. A $skiptoken names a round whose content was fixed when the round
started (server-side), like Graph's snapshot, and a page index; the same nextLink can be read again. A full users
round keeps only the ids it will list and renders each page when it is served, so a 100,000-user round costs the
simulator a list of ids, not a copy of every user. The last `MAX_ROUNDS_KEPT` rounds are kept; an older round's
nextLink answers 400 syncStateNotFound, as an expired one does. A $deltatoken carries the change-log sequence it
covers, the $select and the $filter ids. Delta tokens expire after `directory.delta_token_lifetime`, skip tokens
after `directory.skip_token_lifetime`, or when the directory expires or resets them (410 with a Location for a
fresh round).

Page size: `directory.page_size` (200, what Graph uses for users and cannot be raised); a `Prefer:
odata.maxpagesize=N` header on a round's first request lowers it for that round (N above the maximum is capped), and
the answer says so in `Preference-Applied`.

Processing delay (`DeltaDelay`, `cloud.delta_delay`): Microsoft says to "expect varying delays" before a change shows
in delta, so a users/delta round ends at the last change Graph has processed: each change waits a seeded share of
up to `max_seconds` (30 by default; `CTCS_SIM_DELTA_DELAY=0` or `cloud.delta_delay.max_seconds = 0` switches it off)
and changes are processed in order, so one slow change holds back those after it. A change not yet processed is in
no incremental round; the next round after it is processed lists it. A full round renders the objects as they are.

`graph_handler` is the request pipeline of a Graph route (count, transient fault, authorize, answer, GraphError →
Graph's error envelope); `delta_routes` adds the injected delta faults and the three spellings of a delta path.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import os
import re
import secrets
import time
import uuid
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from sim.directory import Directory
from sim.tokens import Forbidden, TokenRejected, bearer_token
from sim.transient import graph_error, transient_response

if TYPE_CHECKING:
    from sim.cloud import SimCloud

DELTA_FAULTS = ("delta_expired", "delta_reset", "delta_garbled", "resync_required")
TRANSIENT_FAULTS = ("throttle", "unavailable", "gateway_timeout")
FILTER_CLAUSE = re.compile(r"^\s*id\s+eq\s+'([^']*)'\s*$", re.IGNORECASE)
MAX_FILTER_IDS = 50
MAX_PAGE_SIZE = re.compile(r"odata\.maxpagesize\s*=\s*(\d+)", re.IGNORECASE)
MAX_ROUNDS_KEPT = 64  # per endpoint; older rounds' nextLinks answer syncStateNotFound
DELTA_DELAY_ENV = "CTCS_SIM_DELTA_DELAY"  # seconds; 0 switches the processing delay off
DEFAULT_DELTA_DELAY = 30.0

Page = list[dict[str, Any]]
Authorize = Callable[[Request], Directory | Response]
Serve = Callable[[Request, Directory], dict[str, Any] | Response]
Latency = Callable[[str, Request, Response], float]
"""Seconds an answer waits before it is sent (the realistic Graph profile; 0 by default): endpoint, request, answer."""
Handler = Callable[[Request], Awaitable[Response]]


class GraphError(Exception):
    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers

    def response(self) -> JSONResponse:
        return graph_error(self.status, self.code, self.message, self.headers)


def expired_token() -> GraphError:
    return GraphError(400, "syncStateNotFound", "The sync state generation is not found. The delta token is expired "
                                                "and data must be synchronized again.")


def garbled_token() -> GraphError:
    return GraphError(400, "syncStateInvalid", "Invalid delta token: the sync state is invalid.")


def reset_token(location: str) -> GraphError:
    """410: the directory reset its sync state; `location` is the link of a fresh round."""
    return GraphError(410, "resyncRequired", "Resync required.", {"Location": location})


@dataclass
class DeltaDelay:
    """How long after a change users/delta shows it: each change waits a seeded share of up to `max_seconds` on
    `clock`, and changes are processed in the order they were made (see the module docstring)."""

    max_seconds: float = DEFAULT_DELTA_DELAY
    seed: int = 0
    clock: Callable[[], float] = time.monotonic
    _processed: dict[str, int] = field(default_factory=dict)  # tenant -> last sequence processed (never goes back)

    @classmethod
    def switch(cls, max_seconds: float | None = None, *, seed: int = 0) -> DeltaDelay:
        """The delay `max_seconds` asks for; None reads CTCS_SIM_DELTA_DELAY (default 30 s, 0: off)."""
        if max_seconds is None:
            raw = os.environ.get(DELTA_DELAY_ENV, "").strip()
            max_seconds = float(raw) if raw else DEFAULT_DELTA_DELAY
        return cls(max(0.0, max_seconds), seed)

    def wait_of(self, tenant_id: str, seq: int) -> float:
        """The seconds change `seq` of a tenant waits before it is processed (seeded: the same every run)."""
        digest = hashlib.sha256(f"{self.seed}|{tenant_id}|{seq}".encode()).digest()
        return self.max_seconds * int.from_bytes(digest[:4], "big") / 2**32

    def processed_sequence(self, directory: Directory) -> int:
        """The last change of the directory's log that delta shows now (the whole log when the delay is off)."""
        if self.max_seconds <= 0:
            return directory.sequence
        now = self.clock()
        done = self._processed.get(directory.tenant_id, 0)
        for change in directory.changes_after(done):
            if change.at + self.wait_of(directory.tenant_id, change.seq) > now:
                break
            done = change.seq
        self._processed[directory.tenant_id] = done
        return done


class RoundPages(ABC):
    """The pages of one round, fixed when it started."""

    @property
    @abstractmethod
    def count(self) -> int:
        """How many pages (at least one)."""

    @abstractmethod
    def page(self, index: int) -> Page:
        """The objects of page `index`."""


class FixedPages(RoundPages):
    """Pages computed when the round started (incremental rounds, groups)."""

    def __init__(self, pages: list[Page]) -> None:
        self._pages = pages or [[]]

    @property
    def count(self) -> int:
        return len(self._pages)

    def page(self, index: int) -> Page:
        return self._pages[index]


def fixed_pages(items: Page, size: int) -> FixedPages:
    return FixedPages([items[i : i + size] for i in range(0, len(items), max(1, size))])


def page_size_preference(prefer: str | None, maximum: int) -> tuple[int, bool]:
    """The page size a `Prefer` header asks for, capped at `maximum`; (maximum, False) when it asks for none."""
    match = MAX_PAGE_SIZE.search(prefer or "")
    if not match:
        return maximum, False
    return max(1, min(maximum, int(match.group(1)))), True


@dataclass
class _Round:
    """One delta round, fixed when the round started."""

    pages: RoundPages
    end_seq: int
    select: list[str] | None
    ids: list[str] | None
    page_size: int
    size_preferred: bool = False


class TokenCodec:
    """Signs token payloads with a key of its own, so only the service that issued a token can read it back."""

    def __init__(self) -> None:
        self._key = secrets.token_bytes(32)

    def encode(self, payload: dict[str, Any]) -> str:
        body = base64.urlsafe_b64encode(json.dumps(payload, separators=(",", ":")).encode()).rstrip(b"=")
        mac = base64.urlsafe_b64encode(hmac.new(self._key, body, hashlib.sha256).digest()[:12]).rstrip(b"=")
        return f"{body.decode()}.{mac.decode()}"

    def decode(self, token: str) -> dict[str, Any]:
        body, _, mac = token.partition(".")
        expected = base64.urlsafe_b64encode(hmac.new(self._key, body.encode(), hashlib.sha256).digest()[:12])
        if not mac or not hmac.compare_digest(expected.rstrip(b"=").decode(), mac):
            raise garbled_token()
        payload: dict[str, Any] = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
        return payload


def parse_filter(raw: str | None) -> list[str] | None:
    """The ids of `id eq '…' or id eq '…'` (lower-cased, at most MAX_FILTER_IDS), or None without a filter."""
    if raw is None or not raw.strip():
        return None
    ids = []
    for clause in re.split(r"\s+or\s+", raw.strip(), flags=re.IGNORECASE):
        match = FILTER_CLAUSE.match(clause)
        if not match:
            raise GraphError(400, "Request_UnsupportedQuery", "Unsupported query: only id eq '...' joined by 'or'.")
        ids.append(match.group(1).lower())
    if len(ids) > MAX_FILTER_IDS:
        raise GraphError(400, "Request_UnsupportedQuery", "Number of included identifiers cannot exceed 50.")
    return ids


class DeltaService(ABC):
    """State and logic of one `{resource}/delta` endpoint for every tenant of the cloud (rounds are keyed by a random
    id). A subclass names the resource, parses `$select` and computes a round's pages."""

    resource: ClassVar[str]

    def __init__(self, cloud: SimCloud) -> None:
        self.cloud = cloud
        self.codec = TokenCodec()
        self.rounds: OrderedDict[str, _Round] = OrderedDict()

    @abstractmethod
    def _parse_select(self, raw: str | None) -> list[str] | None:
        """The canonical names of a `$select`, or None without one; GraphError 400 for an unknown property."""

    @abstractmethod
    def _pages(self, directory: Directory, since: int | None, select: list[str] | None,
               ids: list[str] | None, size: int, until: int) -> RoundPages:
        """A round's pages (at least one, maybe empty): a full round when `since` is None, else the changes after it
        up to `until` (the last change processed). `size` is the page size of the round (objects per page, for an
        endpoint that pages by objects)."""

    def processed_sequence(self, directory: Directory) -> int:
        """The last change a round of this endpoint may show (every change, unless the endpoint has a delay)."""
        return directory.sequence

    def max_page_size(self, directory: Directory) -> int:
        """The most objects a page of this endpoint holds (what a `Prefer: odata.maxpagesize` is capped at)."""
        return max(1, directory.page_size)

    def link(self, kind: str, token: str) -> str:
        return f"{self.cloud.endpoints['graph']}/v1.0/{self.resource}/delta()?${kind}={quote(token, safe='.-_')}"

    def respond(self, directory: Directory, query: dict[str, str], prefer: str | None = None) -> JSONResponse:
        with directory.lock:
            size, preferred = page_size_preference(prefer, self.max_page_size(directory))
            if query.get("$skiptoken"):
                payload = self._checked(directory, query["$skiptoken"])
                return self._page(directory, payload["r"], payload["p"])
            if query.get("$deltatoken"):
                if query["$deltatoken"] == "latest":
                    select, ids = self._parse_select(query.get("$select")), parse_filter(query.get("$filter"))
                    return JSONResponse(self._finish(directory, [], self.processed_sequence(directory), select, ids))
                payload = self._checked(directory, query["$deltatoken"])
                return self._start_round(directory, payload["s"], payload["sel"], payload["ids"], size, preferred)
            select, ids = self._parse_select(query.get("$select")), parse_filter(query.get("$filter"))
            return self._start_round(directory, None, select, ids, size, preferred)

    def _checked(self, directory: Directory, token: str) -> dict[str, Any]:
        payload = self.codec.decode(token)
        if payload.get("t") != directory.tenant_id or payload.get("k") != self.resource:
            raise GraphError(400, "syncStateInvalid", "The delta token belongs to another tenant or resource.")
        if payload["n"] < directory.reset_before_serial:
            raise reset_token(self.link("deltatoken", ""))
        skip = "r" in payload
        lifetime = directory.skip_token_lifetime if skip else directory.delta_token_lifetime
        too_old = time.time() - payload["ts"] > lifetime
        if payload["n"] < directory.expired_before_serial or too_old or (skip and payload["r"] not in self.rounds):
            raise expired_token()
        return payload

    def _start_round(self, directory: Directory, since: int | None, select: list[str] | None,
                     ids: list[str] | None, size: int, preferred: bool) -> JSONResponse:
        end_seq = max(since or 0, self.processed_sequence(directory))
        pages = self._pages(directory, since, select, ids, size, end_seq)
        round_id = uuid.uuid4().hex
        self.rounds[round_id] = _Round(pages, end_seq, select, ids, size, preferred)
        while len(self.rounds) > MAX_ROUNDS_KEPT:
            self.rounds.popitem(last=False)
        return self._page(directory, round_id, 0)

    def _page(self, directory: Directory, round_id: str, index: int) -> JSONResponse:
        current = self.rounds[round_id]
        headers = {"Preference-Applied": f"odata.maxpagesize={current.page_size}"} if current.size_preferred else None
        value = current.pages.page(index)
        if index + 1 < current.pages.count:
            body: dict[str, Any] = {"value": value}
            body["@odata.nextLink"] = self.link("skiptoken", self._token(directory, {"r": round_id, "p": index + 1}))
            return JSONResponse(self._context(body, current.select), headers=headers)
        # The round stays readable: a client that lost the last page (a crash) may ask for it again.
        finished = self._finish(directory, value, current.end_seq, current.select, current.ids)
        return JSONResponse(finished, headers=headers)

    def _finish(self, directory: Directory, value: Page, end_seq: int, select: list[str] | None,
                ids: list[str] | None) -> dict[str, Any]:
        token = self._token(directory, {"s": end_seq, "sel": select, "ids": ids})
        return self._context({"value": value, "@odata.deltaLink": self.link("deltatoken", token)}, select)

    def _context(self, body: dict[str, Any], select: list[str] | None) -> dict[str, Any]:
        fields = f"({','.join(select)})" if select else ""
        return {"@odata.context": f"{self.cloud.endpoints['graph']}/v1.0/$metadata#{self.resource}{fields}", **body}

    def _token(self, directory: Directory, payload: dict[str, Any]) -> str:
        payload.update({"t": directory.tenant_id, "k": self.resource, "n": directory.next_token_serial(), "ts": time.time()})
        return self.codec.encode(payload)


def graph_authorizer(cloud: SimCloud, roles: tuple[str, ...] = ()) -> Authorize:
    """Authenticate a Graph request to its tenant's directory, or the 401/403 to send. With `roles`, the token must also
    carry one of them (the 403 names the first)."""

    def authorize(request: Request) -> Directory | Response:
        try:
            tenant, claims = cloud.authenticate(bearer_token(request.headers), "graph")
        except TokenRejected as exc:
            return graph_error(401, "InvalidAuthenticationToken", f"Access token validation failure. {exc}")
        except Forbidden as exc:
            return graph_error(403, "Authorization_RequestDenied", f"Insufficient privileges to complete the operation. {exc}")
        if roles and not set(claims.roles) & set(roles):
            return graph_error(403, "Authorization_RequestDenied",
                               f"Insufficient privileges to complete the operation. The app lacks {roles[0]}.")
        return tenant.directory

    return authorize


def graph_handler(cloud: SimCloud, count_key: str, authorize: Authorize, serve: Serve) -> Handler:
    """A Graph route: count the request, fire a transient fault, authorize, then `serve` (a dict is sent as JSON; a
    GraphError becomes Graph's error envelope)."""

    async def handler(request: Request) -> Response:
        cloud.counts.add("graph", ("graph", count_key))
        fault = cloud.faults.take("graph", request.url.path, kinds=TRANSIENT_FAULTS)
        if fault is not None:
            return transient_response(fault, graph_style=True)
        directory = authorize(request)
        if isinstance(directory, Response):
            return directory
        try:
            answer = serve(request, directory)
        except GraphError as exc:
            return exc.response()
        response = answer if isinstance(answer, Response) else JSONResponse(answer)
        delay = cloud.graph_latency(count_key, request, response)
        if delay > 0:
            await asyncio.sleep(delay)  # outside the lock: other tenants' and clients' requests go on meanwhile
        return response

    return handler


def delta_routes(cloud: SimCloud, service: DeltaService, authorize: Authorize) -> list[Route]:
    """The routes of `{resource}/delta` (three spellings); a request that carries a token may get an injected delta fault."""

    def serve(request: Request, directory: Directory) -> dict[str, Any] | Response:
        query = dict(request.query_params)
        if query.get("$skiptoken") or (query.get("$deltatoken") not in (None, "", "latest")):
            fault = cloud.faults.take("graph", request.url.path, kinds=DELTA_FAULTS)
            if fault is not None:
                return _delta_fault_response(fault.kind, service.link("deltatoken", ""))
        return service.respond(directory, query, request.headers.get("prefer"))

    handler = graph_handler(cloud, f"{service.resource}/delta", authorize, serve)
    paths = (f"/v1.0/{service.resource}/delta", f"/v1.0/{service.resource}/delta()",
             f"/v1.0/{service.resource}/microsoft.graph.delta()")
    return [Route(path, handler) for path in paths]


def _delta_fault_response(kind: str, location: str) -> Response:
    """The answer for an injected delta fault; `location` is the fresh-round link a 410 points at."""
    if kind == "delta_reset":
        return reset_token(location).response()
    if kind == "delta_garbled":
        return garbled_token().response()
    if kind == "resync_required":
        return graph_error(400, "resyncRequired", "Resync required. Replace any local cached data with the full data.")
    return expired_token().response()
