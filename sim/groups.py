"""Microsoft Graph `groups/delta` and `groups/{id}/transitiveMembers` over the directory (graph-delta.md, "Groups").

`groups/delta?$filter=id eq 'g1' or id eq 'g2'&$select=displayName,members` tracks membership: each group comes with
`members@delta`, every current member on the first round and only the changes (removals carry `@removed`) later.
Pages hold `directory.group_page_size` member entries, so a large group spans several consecutive pages, each with a
slice of its `members@delta`. Tokens, rounds, `$filter` and faults are users/delta's (sim.delta), and every group
endpoint needs one of GROUP_ROLES (else 403).

`transitiveMembers` is the flat nested membership of one group, paged by nextLink (`$top` up to 999, default 100),
each object with its `@odata.type`.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.routing import Route

from sim.delta import DeltaService, FixedPages, GraphError, RoundPages, delta_routes, graph_authorizer, graph_handler
from sim.directory import Directory

if TYPE_CHECKING:
    from sim.cloud import SimCloud

GROUP_PROPERTIES = ("id", "displayName", "members", "description", "mail", "mailEnabled", "securityEnabled", "groupTypes")
GROUP_ROLES = ("GroupMember.Read.All", "Group.Read.All", "Directory.Read.All")
ODATA_TYPE = {"user": "#microsoft.graph.user", "group": "#microsoft.graph.group"}
DEFAULT_TOP, MAX_TOP = 100, 999


def parse_group_select(raw: str | None) -> list[str] | None:
    if raw is None or not raw.strip():
        return None
    lowered = {name.lower(): name for name in GROUP_PROPERTIES}
    names = []
    for name in (part.strip() for part in raw.split(",") if part.strip()):
        if name.lower() not in lowered:
            raise GraphError(400, "BadRequest", f"Could not find a property named '{name}' on type 'microsoft.graph.group'.")
        names.append(lowered[name.lower()])
    return names


def member_entry(kind: str, member_id: str, *, removed: bool = False) -> dict[str, Any]:
    entry: dict[str, Any] = {"@odata.type": ODATA_TYPE.get(kind, "#microsoft.graph.directoryObject"), "id": member_id}
    if removed:
        entry["@removed"] = {"reason": "deleted"}
    return entry


class GroupsDelta(DeltaService):
    """groups/delta: groups with their `members@delta`, paged by member entries (`directory.group_page_size`)."""

    resource = "groups"

    def _parse_select(self, raw: str | None) -> list[str] | None:
        return parse_group_select(raw)

    def max_page_size(self, directory: Directory) -> int:
        return max(1, directory.group_page_size)

    def _pages(self, directory: Directory, since: int | None, select: list[str] | None,
               ids: list[str] | None, size: int) -> RoundPages:
        objects = self._full(directory, ids) if since is None else self._incremental(directory, since, ids)
        return FixedPages(self._paginate(objects, select, size))

    @staticmethod
    def _paginate(objects: list[tuple[dict[str, Any], list[dict[str, Any]]]], select: list[str] | None,
                  size: int) -> list[list[dict[str, Any]]]:
        """Fill pages with `size` member entries each; a group longer than the room left continues on the next page."""
        with_members = select is None or "members" in select
        pages: list[list[dict[str, Any]]] = [[]]
        room = size
        for head, members in objects:
            if "@removed" in head or not with_members:
                members = []
            offset = 0
            while True:
                if room == 0:
                    pages.append([])
                    room = size
                chunk = members[offset : offset + room]
                obj = dict(head)
                if with_members and "@removed" not in head:
                    obj["members@delta"] = chunk
                pages[-1].append(obj)
                room -= max(1, len(chunk))
                offset += len(chunk)
                if offset >= len(members):
                    break
        return pages

    @staticmethod
    def _head(group: dict[str, Any]) -> dict[str, Any]:
        return {"id": group["id"], "displayName": group["displayName"]}

    def _full(self, directory: Directory, ids: list[str] | None) -> list[tuple[dict[str, Any], list[dict[str, Any]]]]:
        groups = sorted(directory.groups, key=lambda g: str(g["id"]))
        return [
            (self._head(g), [member_entry(kind, member) for member, kind in g["members"].items()])
            for g in groups
            if ids is None or str(g["id"]).lower() in ids
        ]

    def _incremental(self, directory: Directory, since: int,
                     ids: list[str] | None) -> list[tuple[dict[str, Any], list[dict[str, Any]]]]:
        touched: dict[str, dict[str, tuple[str, bool]]] = {}  # group -> member -> (type, present); order = last change
        deleted: dict[str, str] = {}
        for change in directory.changes_since(since, "group"):
            if ids is not None and change.object_id.lower() not in ids:
                continue
            members = touched.setdefault(change.object_id, {})
            if change.kind in ("hard_delete", "soft_delete"):
                deleted[change.object_id] = "deleted" if change.kind == "hard_delete" else "changed"
            elif change.kind in ("member_add", "member_remove"):
                members.pop(change.member_id, None)
                members[change.member_id] = (change.member_type, change.kind == "member_add")
        objects: list[tuple[dict[str, Any], list[dict[str, Any]]]] = []
        for group_id, members in touched.items():
            group = directory.get_group(group_id)
            if group is None:
                objects.append(({"id": group_id, "@removed": {"reason": deleted.get(group_id, "deleted")}}, []))
                continue
            entries = [member_entry(kind, member, removed=not present) for member, (kind, present) in members.items()]
            objects.append((self._head(group), entries))
        return objects


class TransitiveMembers:
    """Paged flat membership; the member list is fixed when the first page is served."""

    def __init__(self, cloud: SimCloud) -> None:
        self.cloud = cloud
        self.snapshots: dict[str, tuple[str, list[dict[str, Any]], int]] = {}  # id -> (group, objects, page size)

    def respond(self, directory: Directory, group_id: str, query: dict[str, str]) -> dict[str, Any]:
        with directory.lock:
            token = query.get("$skiptoken")
            if token:
                key, _, offset_text = token.partition(".")
                if key not in self.snapshots or not offset_text.isdigit():
                    raise GraphError(400, "Request_BadRequest", "The skip token is not valid.")
                _, objects, top = self.snapshots[key]
                return self._page(key, group_id, objects, int(offset_text), top)
            if directory.group_state(group_id) != "active":
                raise GraphError(
                    404, "Request_ResourceNotFound",
                    f"Resource '{group_id}' does not exist or one of its queried reference-property objects are not present.",
                )
            top = DEFAULT_TOP
            if query.get("$top"):
                if not query["$top"].isdigit() or not 1 <= int(query["$top"]) <= MAX_TOP:
                    raise GraphError(400, "Request_BadRequest", f"Invalid page size specified: '{query['$top']}'. Must be between 1 and 999 inclusive.")
                top = int(query["$top"])
            objects = []
            for kind, member in directory.transitive_members(group_id):
                obj: dict[str, Any] = {"@odata.type": ODATA_TYPE.get(kind, "#microsoft.graph.directoryObject"), "id": member}
                source = directory.get_user(member) if kind == "user" else directory.get_group(member)
                if source is not None:
                    obj["displayName"] = source.get("displayName")
                objects.append(obj)
            key = uuid.uuid4().hex
            self.snapshots[key] = (group_id, objects, top)
            return self._page(key, group_id, objects, 0, top)

    def _page(self, key: str, group_id: str, objects: list[dict[str, Any]], offset: int, top: int) -> dict[str, Any]:
        graph = self.cloud.endpoints["graph"]
        body: dict[str, Any] = {
            "@odata.context": f"{graph}/v1.0/$metadata#directoryObjects",
            "value": objects[offset : offset + top],
        }
        if offset + top < len(objects):
            body["@odata.nextLink"] = f"{graph}/v1.0/groups/{group_id}/transitiveMembers?$top={top}&$skiptoken={key}.{offset + top}"
        else:
            self.snapshots.pop(key, None)
        return body


def group_routes(cloud: SimCloud) -> list[Route]:
    authorize = graph_authorizer(cloud, GROUP_ROLES)
    transitive = TransitiveMembers(cloud)

    def transitive_members(request: Request, directory: Directory) -> dict[str, Any]:
        return transitive.respond(directory, request.path_params["group_id"], dict(request.query_params))

    return [
        *delta_routes(cloud, GroupsDelta(cloud), authorize),
        Route("/v1.0/groups/{group_id}/transitiveMembers",
              graph_handler(cloud, "groups/transitiveMembers", authorize, transitive_members)),
    ]
