"""Microsoft Graph `users/delta` over the directory, following Graph's delta query protocol; the group
endpoints (`groups/delta`, `transitiveMembers`) live in sim.groups and are served by the same app.

Tokens, rounds, `$filter`, delta faults and the request pipeline are shared with `groups/delta` (sim.delta); what is
users' own is the `$select` over USER_PROPERTIES (a selected `manager` comes as `manager@delta`), paging by
`directory.page_size` (200, Graph's size for users; `Prefer: odata.maxpagesize` lowers it), and the incremental
round, which may replay earlier changes and repeat objects (as Graph may).

How long Graph takes is `GraphLatency`: nothing by default, so tests stay fast; the realistic profile
(`SimCloud(realistic_graph=True)` or `CTCS_SIM_REALISTIC_GRAPH=1`) makes every answer as slow as Microsoft's.
Beside delta: `GET /users` ($top, $select, $filter by userPrincipalName / mail / id), `GET /users/{id}` and
`GET /groups/{id}`, the reads of a connection test and of a look-up by UPN or mail.
"""

from __future__ import annotations

import copy
import math
import os
import random
import re
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from sim.delta import (
    DeltaService,
    GraphError,
    Page,
    RoundPages,
    delta_routes,
    fixed_pages,
    graph_authorizer,
    graph_handler,
)
from sim.directory import USER_PROPERTIES, Directory
from sim.groups import get_group as groups_get
from sim.groups import group_authorizer, group_routes

if TYPE_CHECKING:
    from sim.cloud import SimCloud

REPLAYED_EARLIER_CHANGES = 5
REALISTIC_GRAPH_ENV = "CTCS_SIM_REALISTIC_GRAPH"


@dataclass
class GraphLatency:
    """How long a simulated Graph answer takes, in seconds (0 when not `enabled`).

    The realistic profile is an estimate, not a figure Microsoft publishes: every request pays `base`, a delta or
    member page `per_object` more for each object it holds (200 users: 0.25 + 0.4 = 0.65 s), the first page of a
    full round `round_start` more (the service builds the round's snapshot), all spread by a seeded log-normal
    jitter (mean 1). Answers wait outside the directory lock, so parallel clients overlap as they do against Graph.
    """

    enabled: bool = False
    base: float = 0.25
    per_object: float = 0.002
    round_start: float = 1.0
    jitter: float = 0.25
    seed: int = 0
    _rng: random.Random = field(init=False, repr=False)
    _lock: threading.Lock = field(init=False, repr=False, default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)

    @classmethod
    def switch(cls, realistic: bool | None = None, *, seed: int = 0) -> GraphLatency:
        """The profile `realistic` asks for; None reads `CTCS_SIM_REALISTIC_GRAPH` (1, true or yes: realistic)."""
        if realistic is None:
            realistic = os.environ.get(REALISTIC_GRAPH_ENV, "").strip().lower() in ("1", "true", "yes")
        return cls(enabled=realistic, seed=seed)

    def seconds(self, objects: int, *, starts_full_round: bool = False) -> float:
        if not self.enabled:
            return 0.0
        with self._lock:
            spread = self._rng.lognormvariate(-(self.jitter**2) / 2, self.jitter)
        return (self.base + self.per_object * objects + (self.round_start if starts_full_round else 0.0)) * spread

    def __call__(self, endpoint: str, request: Request, response: Response) -> float:
        """The wait of one answer (the `Latency` hook of sim.delta.graph_handler)."""
        if not self.enabled:
            return 0.0
        query = request.query_params
        starts_full_round = endpoint.endswith("/delta") and not (query.get("$skiptoken") or query.get("$deltatoken"))
        return self.seconds(_objects(response), starts_full_round=starts_full_round and response.status_code == 200)


def _objects(response: Response) -> int:
    """How many objects a JSON answer's `value` holds (0 for anything else), counted without parsing: the answer
    is ours, so each object of `value` starts with `{"` right after `[` or `},`."""
    body = bytes(response.body) if response.status_code == 200 else b""
    start = body.find(b'"value":[')
    if start < 0 or body[start + 9 : start + 10] == b"]":
        return 0
    return 1 + body.count(b'},{"', start)


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


class FullRoundPages(RoundPages):
    """A full round: the ids of the users that existed when it started, rendered page by page as they are served
    (a user deleted meanwhile is left out; the next round reports the removal)."""

    def __init__(self, directory: Directory, ids: list[str], select: list[str] | None, size: int) -> None:
        self.directory, self.ids, self.select, self.size = directory, ids, select, max(1, size)

    @property
    def count(self) -> int:
        return max(1, math.ceil(len(self.ids) / self.size))

    def page(self, index: int) -> Page:
        with self.directory.lock:
            users = (self.directory.peek_user(uid) for uid in self.ids[index * self.size : (index + 1) * self.size])
            return [render_user(user, self.select) for user in users if user is not None]


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


class UsersDelta(DeltaService):
    """users/delta: pages of `directory.page_size` users; an incremental round lists each changed user once, in order of
    last change, and, when the directory asks for a replay, earlier changes again and some objects twice."""

    resource = "users"

    def _parse_select(self, raw: str | None) -> list[str] | None:
        return parse_select(raw)

    def processed_sequence(self, directory: Directory) -> int:
        return self.cloud.delta_delay.processed_sequence(directory)

    def _pages(self, directory: Directory, since: int | None, select: list[str] | None,
               ids: list[str] | None, size: int, until: int) -> RoundPages:
        if since is None:
            listed = [uid for uid in directory.user_ids() if ids is None or uid.lower() in ids]
            return FullRoundPages(directory, listed, select, size)
        return fixed_pages(self._incremental(directory, since, until, select, ids), size)

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

    def _incremental(self, directory: Directory, since: int, until: int, select: list[str] | None,
                     ids: list[str] | None) -> list[dict[str, Any]]:
        changed: dict[str, bool] = {}  # id -> was hard-deleted; insertion order = order of last change
        processed = [c for c in directory.changes_since(since) if c.seq <= until]  # Graph has not seen the rest yet
        managers = frozenset(c.object_id for c in processed if c.kind == "upsert" and "manager" in c.properties)
        for change in processed:
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


USER_FILTER_CLAUSE = re.compile(r"^\s*(userPrincipalName|mail|id)\s+eq\s+'((?:[^']|'')*)'\s*$", re.IGNORECASE)


def _user_filter(raw: str) -> list[tuple[str, str]]:
    """`userPrincipalName eq 'x' or mail eq 'x'`: the (property, value) clauses; anything else is refused as Graph does."""
    clauses = []
    for part in re.split(r"\s+or\s+", raw.strip(), flags=re.IGNORECASE):
        match = USER_FILTER_CLAUSE.match(part)
        if match is None:
            raise GraphError(400, "Request_UnsupportedQuery", f"Unsupported or invalid query filter clause: {part!r}.")
        clauses.append((match.group(1).lower(), match.group(2).replace("''", "'").lower()))
    return clauses


def list_users(request: Request, directory: Directory) -> dict[str, Any]:
    """GET /users: `$top` (1..999), `$select` (a relationship such as `manager` is not returned here: only delta
    reports it), `$filter` of `eq` clauses joined by `or`."""
    query = dict(request.query_params)
    select = parse_select(query.get("$select"))
    top = int(query.get("$top") or 100)
    if not 1 <= top <= 999:
        raise GraphError(400, "Request_BadRequest", f"Invalid page size specified: '{top}'.")
    users = sorted(directory.users, key=lambda u: str(u["id"]))
    if query.get("$filter"):
        clauses = _user_filter(query["$filter"])
        names = {"userprincipalname": "userPrincipalName", "mail": "mail", "id": "id"}
        users = [u for u in users if any(str(u.get(names[prop]) or "").lower() == value for prop, value in clauses)]
    return {"value": [render_user(u, select, with_manager=False) for u in users[:top]]}


def get_user(request: Request, directory: Directory) -> dict[str, Any]:
    user = directory.get_user(request.path_params["user_id"])
    if user is None:
        raise GraphError(404, "Request_ResourceNotFound",
                         f"Resource '{request.path_params['user_id']}' does not exist or one of its queried reference-property "
                         "objects are not present.")
    return render_user(user, parse_select(request.query_params.get("$select")), with_manager=False)


def get_group(request: Request, directory: Directory) -> dict[str, Any]:
    return groups_get(directory, request.path_params["group_id"], request.query_params.get("$select"))


def build_graph_app(cloud: SimCloud) -> Starlette:
    read_users = graph_authorizer(cloud)
    users = delta_routes(cloud, UsersDelta(cloud), read_users)
    return Starlette(routes=[
        *users, *group_routes(cloud),
        Route("/v1.0/users", graph_handler(cloud, "users", read_users, list_users)),
        Route("/v1.0/users/{user_id}", graph_handler(cloud, "users/id", read_users, get_user)),
        Route("/v1.0/groups/{group_id}", graph_handler(cloud, "groups/id", group_authorizer(cloud), get_group)),
        *cloud.subscriptions.routes(),
    ])
