"""Microsoft Graph `users/delta` over the directory, following the reference protocol (graph-delta.md); the group
endpoints (`groups/delta`, `transitiveMembers`) live in sim.groups and are served by the same app.

Tokens, rounds, `$filter`, delta faults and the request pipeline are shared with `groups/delta` (sim.delta); what is
users' own is the `$select` over USER_PROPERTIES (a selected `manager` comes as `manager@delta`), paging by
`directory.page_size`, and the incremental round, which may replay earlier changes and repeat objects (as Graph may).
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any

from starlette.applications import Starlette

from sim.delta import DeltaService, GraphError, Page, delta_routes, graph_authorizer
from sim.directory import USER_PROPERTIES, Directory
from sim.groups import group_routes

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


def build_graph_app(cloud: SimCloud) -> Starlette:
    users = delta_routes(cloud, UsersDelta(cloud), graph_authorizer(cloud))
    return Starlette(routes=[*users, *group_routes(cloud)])
