"""Microsoft Graph `users/delta` over the directory, following the reference protocol (graph-delta.md); the group
endpoints (`groups/delta`, `transitiveMembers`) live in sim.groups and are served by the same app.

Tokens ($skiptoken / $deltatoken) are opaque: base64url JSON + an HMAC, so an edited token is "garbled" (400
syncStateInvalid). A $skiptoken names a round whose pages were computed when the round started (server-side), like
Graph's snapshot; a $deltatoken carries the change-log sequence it covers, the $select and the $filter ids.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import hmac
import json
import re
import secrets
import time
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from sim.directory import USER_PROPERTIES, Directory
from sim.tokens import Forbidden, TokenRejected, bearer_token
from sim.transient import graph_error, transient_response

if TYPE_CHECKING:
    from sim.cloud import SimCloud

DELTA_FAULTS = ("delta_expired", "delta_reset", "delta_garbled", "resync_required")
TRANSIENT_FAULTS = ("throttle", "unavailable", "gateway_timeout")
FILTER_CLAUSE = re.compile(r"^\s*id\s+eq\s+'([^']*)'\s*$", re.IGNORECASE)
MAX_FILTER_IDS = 50
REPLAYED_EARLIER_CHANGES = 5


class GraphError(Exception):
    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers

    def response(self) -> JSONResponse:
        return graph_error(self.status, self.code, self.message, self.headers)


@dataclass
class _Round:
    """Pages of one delta round, fixed when the round started."""

    pages: list[list[dict[str, Any]]]
    end_seq: int
    select: list[str] | None
    ids: list[str] | None


class _TokenCodec:
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
            raise GraphError(400, "syncStateInvalid", "Invalid delta token: the sync state is invalid.")
        payload: dict[str, Any] = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
        return payload


def render_user(user: dict[str, Any], select: list[str] | None, *, with_manager: bool = True,
                former_manager: str = "") -> dict[str, Any]:
    """The user as Graph sends it: `id` plus the selected properties that are set (never-set ones are absent).

    A selected `manager` is a relationship: it comes as `manager@delta` when `with_manager` (a full round: users
    who have one; an incremental round: users whose manager changed), with `@removed` for a removed manager."""
    if select is None:
        return {k: copy.deepcopy(v) for k, v in user.items() if k not in ("deletedDateTime", "manager")}
    rendered: dict[str, Any] = {"id": user["id"]}
    for name in select:
        if name in user and name != "manager":
            rendered[name] = copy.deepcopy(user[name])
    if "manager" in select and with_manager:
        if user.get("manager"):
            rendered["manager@delta"] = [{"@odata.type": "#microsoft.graph.user", "id": user["manager"]}]
        elif former_manager:
            rendered["manager@delta"] = [
                {"@odata.type": "#microsoft.graph.user", "id": former_manager, "@removed": {"reason": "deleted"}}
            ]
    return rendered


def parse_select(raw: str | None) -> list[str] | None:
    if raw is None or not raw.strip():
        return None
    names = [name.strip() for name in raw.split(",") if name.strip()]
    lowered = {p.lower(): p for p in USER_PROPERTIES}
    canonical = []
    for name in names:
        if name.lower() not in lowered:
            raise GraphError(400, "BadRequest", f"Could not find a property named '{name}' on type 'microsoft.graph.user'.")
        canonical.append(lowered[name.lower()])
    return canonical


def parse_filter(raw: str | None) -> list[str] | None:
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


class UsersDelta:
    """State and logic of users/delta for every tenant of the cloud (rounds are keyed by a random id)."""

    def __init__(self, cloud: SimCloud) -> None:
        self.cloud = cloud
        self.codec = _TokenCodec()
        self.rounds: dict[str, _Round] = {}

    def link(self, kind: str, token: str) -> str:
        return f"{self.cloud.endpoints['graph']}/v1.0/users/delta()?${kind}={quote(token, safe='.-_')}"

    def respond(self, directory: Directory, query: dict[str, str]) -> dict[str, Any]:
        with directory.lock:
            if query.get("$skiptoken"):
                payload = self._checked(directory, query["$skiptoken"], query)
                return self._page(directory, payload["r"], payload["p"])
            if query.get("$deltatoken"):
                if query["$deltatoken"] == "latest":
                    select, ids = parse_select(query.get("$select")), parse_filter(query.get("$filter"))
                    return self._finish(directory, [], directory.sequence, select, ids)
                payload = self._checked(directory, query["$deltatoken"], query)
                return self._start_round(directory, payload["s"], payload["sel"], payload["ids"])
            return self._start_round(directory, None, parse_select(query.get("$select")), parse_filter(query.get("$filter")))

    def _checked(self, directory: Directory, token: str, query: dict[str, str]) -> dict[str, Any]:
        payload = self.codec.decode(token)
        if payload.get("t") != directory.tenant_id:
            raise GraphError(400, "syncStateInvalid", "The delta token belongs to another tenant.")
        if payload["n"] < directory.reset_before_serial:
            raise GraphError(410, "resyncRequired", "Resync required.", {"Location": self.link("deltatoken", "")})
        too_old = time.time() - payload["ts"] > directory.delta_token_lifetime
        if payload["n"] < directory.expired_before_serial or too_old or ("r" in payload and payload["r"] not in self.rounds):
            raise GraphError(
                400, "syncStateNotFound",
                "The sync state generation is not found. The delta token is expired and data must be synchronized again.",
            )
        return payload

    def _start_round(self, directory: Directory, since: int | None, select: list[str] | None,
                     ids: list[str] | None) -> dict[str, Any]:
        end_seq = directory.sequence
        items = self._full(directory, select, ids) if since is None else self._incremental(directory, since, select, ids)
        size = max(1, directory.page_size)
        pages = [items[i : i + size] for i in range(0, len(items), size)] or [[]]
        round_id = uuid.uuid4().hex
        self.rounds[round_id] = _Round(pages, end_seq, select, ids)
        return self._page(directory, round_id, 0)

    def _page(self, directory: Directory, round_id: str, index: int) -> dict[str, Any]:
        current = self.rounds[round_id]
        body: dict[str, Any] = {"value": current.pages[index]}
        if index + 1 < len(current.pages):
            token = self._token(directory, {"r": round_id, "p": index + 1})
            body["@odata.nextLink"] = self.link("skiptoken", token)
            return self._context(body, current.select)
        del self.rounds[round_id]
        return self._finish(directory, current.pages[index], current.end_seq, current.select, current.ids)

    def _finish(self, directory: Directory, value: list[dict[str, Any]], end_seq: int, select: list[str] | None,
                ids: list[str] | None) -> dict[str, Any]:
        token = self._token(directory, {"s": end_seq, "sel": select, "ids": ids})
        return self._context({"value": value, "@odata.deltaLink": self.link("deltatoken", token)}, select)

    def _context(self, body: dict[str, Any], select: list[str] | None) -> dict[str, Any]:
        fields = f"({','.join(select)})" if select else ""
        return {"@odata.context": f"{self.cloud.endpoints['graph']}/v1.0/$metadata#users{fields}", **body}

    def _token(self, directory: Directory, payload: dict[str, Any]) -> str:
        payload.update({"t": directory.tenant_id, "n": directory.next_token_serial(), "ts": time.time()})
        return self.codec.encode(payload)

    @staticmethod
    def _full(directory: Directory, select: list[str] | None, ids: list[str] | None) -> list[dict[str, Any]]:
        users = sorted(directory.users, key=lambda u: str(u["id"]))
        return [render_user(u, select) for u in users if ids is None or str(u["id"]).lower() in ids]

    @staticmethod
    def _entry(directory: Directory, user_id: str, select: list[str] | None, hard: bool,
               manager_changed: frozenset[str] = frozenset()) -> dict[str, Any]:
        state, user = directory.state_of(user_id)
        if state == "active" and user is not None:
            changed = user_id in manager_changed
            return render_user(user, select, with_manager=changed,
                               former_manager=directory.former_manager(user_id) if changed else "")
        reason = "deleted" if hard or state == "gone" else "changed"
        return {"id": user_id, "@removed": {"reason": reason}}

    def _incremental(self, directory: Directory, since: int, select: list[str] | None,
                     ids: list[str] | None) -> list[dict[str, Any]]:
        changed: dict[str, bool] = {}  # id -> was hard-deleted; insertion order = order of last change
        managers = frozenset(c.object_id for c in directory.changes_since(since)
                             if c.kind == "upsert" and "manager" in c.properties)
        for change in directory.changes_since(since):
            if ids is not None and change.object_id.lower() not in ids:
                continue
            tracked = select is None or change.kind != "upsert" or bool(change.properties & set(select))
            if not tracked:
                continue
            changed.pop(change.object_id, None)
            changed[change.object_id] = change.kind == "hard_delete"
        items = [self._entry(directory, uid, select, hard, managers) for uid, hard in changed.items()]
        if directory.replay_next_round:
            directory.replay_next_round = False
            earlier = [c.object_id for c in directory.changes_up_to(since)][-REPLAYED_EARLIER_CHANGES:]
            replayed = [self._entry(directory, uid, select, False, managers) for uid in earlier if ids is None or uid in ids]
            items = replayed + items + items[:2]  # old changes again, and the same objects twice in one round
        return items


def build_graph_app(cloud: SimCloud) -> Starlette:
    delta = UsersDelta(cloud)

    async def users_delta(request: Request) -> Response:
        cloud.counts.add("graph", ("graph", "users/delta"))
        query = dict(request.query_params)
        fault = cloud.faults.take("graph", request.url.path, kinds=TRANSIENT_FAULTS)
        if fault is not None:
            return transient_response(fault, graph_style=True)
        try:
            tenant, _ = cloud.authenticate(bearer_token(request.headers), "graph")
        except TokenRejected as exc:
            return graph_error(401, "InvalidAuthenticationToken", f"Access token validation failure. {exc}")
        except Forbidden as exc:
            return graph_error(403, "Authorization_RequestDenied", f"Insufficient privileges to complete the operation. {exc}")
        if query.get("$skiptoken") or (query.get("$deltatoken") not in (None, "", "latest")):
            fault = cloud.faults.take("graph", request.url.path, kinds=DELTA_FAULTS)
            if fault is not None:
                return _delta_fault_response(fault.kind, delta.link("deltatoken", ""))
        try:
            return JSONResponse(delta.respond(tenant.directory, query))
        except GraphError as exc:
            return exc.response()

    # Groups build on this module's tokens and errors, so they are imported here, not at the top.
    from sim.groups import group_routes

    paths = ("/v1.0/users/delta", "/v1.0/users/delta()", "/v1.0/users/microsoft.graph.delta()")
    return Starlette(routes=[*(Route(path, users_delta) for path in paths), *group_routes(cloud)])


def _delta_fault_response(kind: str, location: str) -> Response:
    """The answer for an injected delta fault; `location` is the fresh-round link a 410 points at."""
    if kind == "delta_reset":
        return GraphError(410, "resyncRequired", "Resync required.", {"Location": location}).response()
    if kind == "delta_garbled":
        return graph_error(400, "syncStateInvalid", "Invalid delta token: the sync state is invalid.")
    if kind == "resync_required":
        return graph_error(400, "resyncRequired", "Resync required. Replace any local cached data with the full data.")
    return graph_error(
        400, "syncStateNotFound",
        "The sync state generation is not found. The delta token is expired and data must be synchronized again.",
    )
