"""Microsoft Graph `groups/delta` and `groups/{id}/transitiveMembers` over the directory (graph-delta.md, "Groups").

`groups/delta?$filter=id eq 'g1' or id eq 'g2'&$select=displayName,members` tracks membership: each group comes with
`members@delta`, every current member on the first round and only the changes (removals carry `@removed`) later.
Pages hold `directory.group_page_size` member entries, so a large group spans several consecutive pages, each with a
slice of its `members@delta`. Tokens work like users/delta (same codec, expiry, reset and fault kinds).

`transitiveMembers` is the flat nested membership of one group, paged by nextLink (`$top` up to 999, default 100),
each object with its `@odata.type`.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from sim.directory import Directory
from sim.graph import DELTA_FAULTS, TRANSIENT_FAULTS, GraphError, _delta_fault_response, _TokenCodec, parse_filter
from sim.tokens import Forbidden, TokenRejected, bearer_token
from sim.transient import graph_error, transient_response

if TYPE_CHECKING:
    from sim.cloud import SimCloud

GROUP_PROPERTIES = ("id", "displayName", "members", "description", "mail", "mailEnabled", "securityEnabled", "groupTypes")
GROUP_ROLES = ("GroupMember.Read.All", "Group.Read.All", "Directory.Read.All")
ODATA_TYPE = {"user": "#microsoft.graph.user", "group": "#microsoft.graph.group"}
DEFAULT_TOP, MAX_TOP = 100, 999


@dataclass
class _Round:
    pages: list[list[dict[str, Any]]]
    end_seq: int
    select: list[str] | None
    ids: list[str] | None


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


class GroupsDelta:
    """State and logic of groups/delta for every tenant of the cloud."""

    def __init__(self, cloud: SimCloud) -> None:
        self.cloud = cloud
        self.codec = _TokenCodec()
        self.rounds: dict[str, _Round] = {}

    def link(self, kind: str, token: str) -> str:
        return f"{self.cloud.endpoints['graph']}/v1.0/groups/delta()?${kind}={quote(token, safe='.-_')}"

    def respond(self, directory: Directory, query: dict[str, str]) -> dict[str, Any]:
        with directory.lock:
            if query.get("$skiptoken"):
                payload = self._checked(directory, query["$skiptoken"])
                return self._page(directory, payload["r"], payload["p"])
            if query.get("$deltatoken"):
                if query["$deltatoken"] == "latest":
                    select, ids = parse_group_select(query.get("$select")), parse_filter(query.get("$filter"))
                    return self._finish(directory, [], directory.sequence, select, ids)
                payload = self._checked(directory, query["$deltatoken"])
                return self._start_round(directory, payload["s"], payload["sel"], payload["ids"])
            select, ids = parse_group_select(query.get("$select")), parse_filter(query.get("$filter"))
            return self._start_round(directory, None, select, ids)

    def _checked(self, directory: Directory, token: str) -> dict[str, Any]:
        payload = self.codec.decode(token)
        if payload.get("t") != directory.tenant_id or payload.get("k") != "groups":
            raise GraphError(400, "syncStateInvalid", "The delta token belongs to another tenant or resource.")
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
        objects = self._full(directory, ids) if since is None else self._incremental(directory, since, ids)
        pages = self._paginate(objects, select, max(1, directory.group_page_size))
        round_id = uuid.uuid4().hex
        self.rounds[round_id] = _Round(pages, end_seq, select, ids)
        return self._page(directory, round_id, 0)

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

    def _page(self, directory: Directory, round_id: str, index: int) -> dict[str, Any]:
        current = self.rounds[round_id]
        body: dict[str, Any] = {"value": current.pages[index]}
        if index + 1 < len(current.pages):
            body["@odata.nextLink"] = self.link("skiptoken", self._token(directory, {"r": round_id, "p": index + 1}))
            return self._context(body, current.select)
        del self.rounds[round_id]
        return self._finish(directory, current.pages[index], current.end_seq, current.select, current.ids)

    def _finish(self, directory: Directory, value: list[dict[str, Any]], end_seq: int, select: list[str] | None,
                ids: list[str] | None) -> dict[str, Any]:
        token = self._token(directory, {"s": end_seq, "sel": select, "ids": ids})
        return self._context({"value": value, "@odata.deltaLink": self.link("deltatoken", token)}, select)

    def _context(self, body: dict[str, Any], select: list[str] | None) -> dict[str, Any]:
        fields = f"({','.join(select)})" if select else ""
        return {"@odata.context": f"{self.cloud.endpoints['graph']}/v1.0/$metadata#groups{fields}", **body}

    def _token(self, directory: Directory, payload: dict[str, Any]) -> str:
        payload.update({"t": directory.tenant_id, "k": "groups", "n": directory.next_token_serial(), "ts": time.time()})
        return self.codec.encode(payload)

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
        objects = []
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
    delta = GroupsDelta(cloud)
    transitive = TransitiveMembers(cloud)

    def authorize(request: Request) -> tuple[Directory | None, Response | None]:
        try:
            tenant, claims = cloud.authenticate(bearer_token(request.headers), "graph")
        except TokenRejected as exc:
            return None, graph_error(401, "InvalidAuthenticationToken", f"Access token validation failure. {exc}")
        except Forbidden as exc:
            return None, graph_error(403, "Authorization_RequestDenied", f"Insufficient privileges to complete the operation. {exc}")
        if not set(claims.roles) & set(GROUP_ROLES):
            return None, graph_error(403, "Authorization_RequestDenied",
                                     "Insufficient privileges to complete the operation. The app lacks GroupMember.Read.All.")
        return tenant.directory, None

    async def groups_delta(request: Request) -> Response:
        cloud.counts.add("graph", ("graph", "groups/delta"))
        fault = cloud.faults.take("graph", request.url.path, kinds=TRANSIENT_FAULTS)
        if fault is not None:
            return transient_response(fault, graph_style=True)
        directory, refused = authorize(request)
        if directory is None:
            assert refused is not None
            return refused
        query = dict(request.query_params)
        if query.get("$skiptoken") or (query.get("$deltatoken") not in (None, "", "latest")):
            fault = cloud.faults.take("graph", request.url.path, kinds=DELTA_FAULTS)
            if fault is not None:
                return _delta_fault_response(fault.kind, delta.link("deltatoken", ""))
        try:
            return JSONResponse(delta.respond(directory, query))
        except GraphError as exc:
            return exc.response()

    async def transitive_members(request: Request) -> Response:
        cloud.counts.add("graph", ("graph", "groups/transitiveMembers"))
        fault = cloud.faults.take("graph", request.url.path, kinds=TRANSIENT_FAULTS)
        if fault is not None:
            return transient_response(fault, graph_style=True)
        directory, refused = authorize(request)
        if directory is None:
            assert refused is not None
            return refused
        try:
            return JSONResponse(transitive.respond(directory, request.path_params["group_id"], dict(request.query_params)))
        except GraphError as exc:
            return exc.response()

    paths = ("/v1.0/groups/delta", "/v1.0/groups/delta()", "/v1.0/groups/microsoft.graph.delta()")
    return [
        *(Route(path, groups_delta) for path in paths),
        Route("/v1.0/groups/{group_id}/transitiveMembers", transitive_members),
    ]
