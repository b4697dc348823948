"""Microsoft Graph `users/delta` over the directory, following the reference protocol (graph-delta.md); the group
endpoints (`groups/delta`, `transitiveMembers`) live in sim.groups and are served by the same app.

Tokens, rounds, `$filter`, delta faults and the request pipeline are shared with `groups/delta` (sim.delta); what is
users' own is the `$select` over USER_PROPERTIES (a selected `manager` comes as `manager@delta`), paging by
`directory.page_size`, and the incremental round, which may replay earlier changes and repeat objects (as Graph may).
Beside delta: `GET /users` ($top, $select, $filter by userPrincipalName / mail / id), `GET /users/{id}` and
`GET /groups/{id}`, the reads of a connection test and of a look-up by UPN or mail.
"""

from __future__ import annotations

import copy
import re
from typing import TYPE_CHECKING, Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.routing import Route

from sim.delta import DeltaService, GraphError, Page, delta_routes, graph_authorizer, graph_handler
from sim.directory import USER_PROPERTIES, Directory
from sim.groups import GROUP_ROLES, group_routes

if TYPE_CHECKING:
    from sim.cloud import SimCloud

REPLAYED_EARLIER_CHANGES = 5


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


class UsersDelta(DeltaService):
    """users/delta: pages of `directory.page_size` users; an incremental round lists each changed user once, in order of
    last change, and, when the directory asks for a replay, earlier changes again and some objects twice."""

    resource = "users"

    def _parse_select(self, raw: str | None) -> list[str] | None:
        return parse_select(raw)

    def _pages(self, directory: Directory, since: int | None, select: list[str] | None,
               ids: list[str] | None) -> list[Page]:
        items = self._full(directory, select, ids) if since is None else self._incremental(directory, since, select, ids)
        size = max(1, directory.page_size)
        return [items[i : i + size] for i in range(0, len(items), size)] or [[]]

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
    group = directory.get_group(request.path_params["group_id"])
    if group is None:
        raise GraphError(404, "Request_ResourceNotFound",
                         f"Resource '{request.path_params['group_id']}' does not exist or one of its queried "
                         "reference-property objects are not present.")
    return {"id": group["id"], "displayName": group.get("displayName")}


def build_graph_app(cloud: SimCloud) -> Starlette:
    read_users = graph_authorizer(cloud)
    users = delta_routes(cloud, UsersDelta(cloud), read_users)
    return Starlette(routes=[
        *users, *group_routes(cloud),
        Route("/v1.0/users", graph_handler(cloud, "users", read_users, list_users)),
        Route("/v1.0/users/{user_id}", graph_handler(cloud, "users/id", read_users, get_user)),
        Route("/v1.0/groups/{group_id}", graph_handler(cloud, "groups/id", graph_authorizer(cloud, GROUP_ROLES), get_group)),
    ])
