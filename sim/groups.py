"""Microsoft Graph `groups/delta` and `groups/{id}/transitiveMembers` over the directory (as Graph documents them).

`groups/delta?$filter=id eq 'g1' or id eq 'g2'&$select=displayName,members` tracks membership: each group comes with
`members@delta`, every current member on the first round and only the changes (removals carry `@removed`) later.
Pages hold `directory.group_page_size` member entries, so a large group spans several consecutive pages, each with a
slice of its `members@delta`. Tokens, rounds, `$filter` and faults are users/delta's (sim.delta), and every group
endpoint needs one of GROUP_ROLES (else 403).

With a `$select` of group properties and no `members` (groups-as-contacts), a group comes with its selected
properties and an incremental round lists the groups whose selected properties changed (or that were deleted);
membership changes alone do not show. `hideFromAddressLists` is never served by delta: only `GET /groups/{id}` with an
explicit `$select` returns it, alone or through JSON `$batch` (up to 20 requests per call). Properties beyond the basic
ones (MAIL_PROPERTIES) need Group.Read.All or Directory.Read.All.

`transitiveMembers` is the flat nested membership of one group, paged by nextLink (`$top` up to 999, default 100),
each object with its `@odata.type`.
"""

from __future__ import annotations

import asyncio
import copy
import json
import uuid
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from sim.delta import (
    Authorize,
    DeltaService,
    FixedPages,
    GraphError,
    RoundPages,
    delta_routes,
    graph_authorizer,
    graph_handler,
)
from sim.directory import Directory
from sim.transient import transient_response

if TYPE_CHECKING:
    from sim.cloud import SimCloud

GROUP_PROPERTIES = ("id", "displayName", "members", "description", "mail", "mailEnabled", "securityEnabled", "groupTypes",
                    "proxyAddresses", "mailNickname", "visibility", "hideFromAddressLists")
GROUP_ROLES = ("GroupMember.Read.All", "Group.Read.All", "Directory.Read.All")
# Group properties beyond the basic ones: Microsoft's group resource documentation names Group.Read.All as the
# permission that reads them; GroupMember.Read.All is enough for membership only. A request whose $select names one
# of these needs one of PROPERTY_ROLES.
MAIL_PROPERTIES = frozenset({"description", "mail", "proxyAddresses", "mailNickname", "visibility", "hideFromAddressLists"})
PROPERTY_ROLES = ("Group.Read.All", "Directory.Read.All")
# Returned only by GET /groups/{id} with an explicit $select: never by groups/delta or a list.
SELECT_ONLY = frozenset({"hideFromAddressLists"})
# What GET /groups/{id} returns without $select (the default set; hideFromAddressLists is not in it).
DEFAULT_GET = ("id", "displayName", "description", "mail", "mailEnabled", "securityEnabled", "groupTypes",
               "proxyAddresses", "mailNickname", "visibility")
MAX_BATCH = 20  # requests in one JSON $batch
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
    def _head(group: dict[str, Any], select: list[str] | None) -> dict[str, Any]:
        names = [name for name in (select or DEFAULT_GET) if name not in SELECT_ONLY and name not in ("id", "members")]
        return {"id": group["id"], **{name: copy.deepcopy(group[name]) for name in names if name in group}}

    def _pages(self, directory: Directory, since: int | None, select: list[str] | None,
               ids: list[str] | None, size: int, until: int) -> RoundPages:
        objects = self._full(directory, ids, select) if since is None else self._incremental(directory, since, ids, select)
        return FixedPages(self._paginate(objects, select, size))

    def _full(self, directory: Directory, ids: list[str] | None,
              select: list[str] | None = None) -> list[tuple[dict[str, Any], list[dict[str, Any]]]]:
        groups = sorted(directory.groups, key=lambda g: str(g["id"]))
        return [
            (self._head(g, select), [member_entry(kind, member) for member, kind in g["members"].items()])
            for g in groups
            if ids is None or str(g["id"]).lower() in ids
        ]

    def _incremental(self, directory: Directory, since: int, ids: list[str] | None,
                     select: list[str] | None = None) -> list[tuple[dict[str, Any], list[dict[str, Any]]]]:
        touched: dict[str, dict[str, tuple[str, bool]]] = {}  # group -> member -> (type, present); order = last change
        deleted: dict[str, str] = {}
        with_members = select is None or "members" in select
        tracked = set(select or GROUP_PROPERTIES) - SELECT_ONLY
        for change in directory.changes_since(since, "group"):
            if ids is not None and change.object_id.lower() not in ids:
                continue
            if change.kind in ("member_add", "member_remove") and not with_members:
                continue  # membership is not what this round tracks
            if change.kind == "upsert" and not change.properties & tracked:
                continue  # e.g. hideFromAddressLists: kept by Exchange, never reported by delta
            members = touched.pop(change.object_id, {})  # moved to the end: order = last change
            touched[change.object_id] = members
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
            objects.append((self._head(group, select), entries))
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


def _selected(request: Request) -> set[str]:
    """The properties a request's $select names (a delta nextLink/deltaLink carries none: its first request did)."""
    raw = request.query_params.get("$select") or ""
    return {part.strip() for part in raw.split(",") if part.strip()}


def group_authorizer(cloud: SimCloud) -> Authorize:
    """GROUP_ROLES, or PROPERTY_ROLES when the request selects mail properties."""
    basic, properties = graph_authorizer(cloud, GROUP_ROLES), graph_authorizer(cloud, PROPERTY_ROLES)

    def authorize(request: Request) -> Directory | Response:
        return properties(request) if _selected(request) & MAIL_PROPERTIES else basic(request)

    return authorize


def render_group(group: dict[str, Any], select: list[str] | None) -> dict[str, Any]:
    """GET /groups/{id}: the default set, or exactly the selected properties (hideFromAddressLists only this way)."""
    names = select if select is not None else list(DEFAULT_GET)
    return {"id": group["id"], **{name: copy.deepcopy(group.get(name)) for name in names
                                  if name not in ("id", "members") and (name in group or name in SELECT_ONLY)}}


def get_group(directory: Directory, group_id: str, raw_select: str | None) -> dict[str, Any]:
    group = directory.get_group(group_id)
    if group is None:
        raise GraphError(404, "Request_ResourceNotFound",
                         f"Resource '{group_id}' does not exist or one of its queried reference-property objects are "
                         "not present.")
    rendered = render_group(group, parse_group_select(raw_select))
    if "hideFromAddressLists" in rendered and rendered["hideFromAddressLists"] is None:
        rendered["hideFromAddressLists"] = False  # a Microsoft 365 group answers false until someone hides it
    return rendered


class JsonBatch:
    """POST /v1.0/$batch: up to MAX_BATCH `GET /groups/{id}` requests answered in one response, each with its own
    status (a missing group is a 404 inside a 200 batch; a `batch_throttle` fault a 429 with Retry-After inside a 200
    batch, seeded like every fault). Other sub-requests answer 400 here: ctcs sends none."""

    def __init__(self, cloud: SimCloud) -> None:
        self.cloud = cloud

    async def handle(self, request: Request) -> Response:
        self.cloud.counts.add("graph", ("graph", "$batch"))
        fault = self.cloud.faults.take("graph", request.url.path)
        if fault is not None:
            return transient_response(fault, graph_style=True)
        try:
            body = json.loads(await request.body())
            requests = body["requests"]
            assert isinstance(requests, list)
        except (ValueError, KeyError, TypeError, AssertionError):
            return GraphError(400, "BadRequest", "Invalid batch payload format.").response()
        if not 1 <= len(requests) <= MAX_BATCH:
            return GraphError(400, "BadRequest", f"Batch request count must be between 1 and {MAX_BATCH}.").response()
        response = JSONResponse({"responses": [self._one(request, item) for item in requests]})
        delay = self.cloud.graph_latency("$batch", request, response)  # the realistic profile: a request's base cost
        if delay > 0:
            await asyncio.sleep(delay)
        return response

    def _one(self, request: Request, item: Any) -> dict[str, Any]:
        item_id = str(item.get("id", "")) if isinstance(item, dict) else ""
        url = str(item.get("url", "")) if isinstance(item, dict) else ""
        parts = urlsplit(url)
        path = parts.path.strip("/").split("/")
        if not isinstance(item, dict) or item.get("method", "GET").upper() != "GET" or len(path) != 2 or path[0] != "groups":
            return _batch_error(item_id, GraphError(400, "BadRequest", "Only GET /groups/{id} is simulated in $batch."))
        throttled = self.cloud.faults.take("graph", f"$batch{url}", kinds=("batch_throttle",))
        if throttled is not None:  # Graph throttles each request of a batch on its own: a 429 inside a 200
            headers = {} if throttled.retry_after is None else {"Retry-After": throttled.retry_after}
            return {"id": item_id, "status": 429, "headers": headers,
                    "body": {"error": {"code": "TooManyRequests", "message": "Too many requests."}}}
        select = parse_qs(parts.query).get("$select", [None])[0]
        selected = {part.strip() for part in (select or "").split(",") if part.strip()}
        authorize = graph_authorizer(self.cloud, PROPERTY_ROLES if selected & MAIL_PROPERTIES else GROUP_ROLES)
        directory = authorize(request)
        if not isinstance(directory, Directory):
            error = json.loads(bytes(directory.body))
            return {"id": item_id, "status": directory.status_code, "headers": {}, "body": error}
        try:
            return {"id": item_id, "status": 200, "headers": {"Content-Type": "application/json"},
                    "body": get_group(directory, path[1], select)}
        except GraphError as error:
            return _batch_error(item_id, error)


def _batch_error(item_id: str, error: GraphError) -> dict[str, Any]:
    return {"id": item_id, "status": error.status, "headers": {},
            "body": {"error": {"code": error.code, "message": error.message}}}


def group_routes(cloud: SimCloud) -> list[Route]:
    authorize = group_authorizer(cloud)
    transitive = TransitiveMembers(cloud)

    def transitive_members(request: Request, directory: Directory) -> dict[str, Any]:
        return transitive.respond(directory, request.path_params["group_id"], dict(request.query_params))

    return [
        *delta_routes(cloud, GroupsDelta(cloud), authorize),
        Route("/v1.0/groups/{group_id}/transitiveMembers",
              graph_handler(cloud, "groups/transitiveMembers", authorize, transitive_members)),
        Route("/v1.0/$batch", JsonBatch(cloud).handle, methods=["POST"]),
    ]
