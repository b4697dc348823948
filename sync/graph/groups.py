"""`GraphGroupReader`: group membership of the source tenant through Graph, on the same footing as `GraphSource`.

- `read_groups_delta(link, ids)`: one `groups/delta` round for up to 50 group ids (`$filter=id eq ... or ...`,
  `$select=displayName,members`), every page read and each group's `members@delta` slices merged before anything is
  decided. Without a link the round lists every direct member; from a link, only the changes.
- `transitive_members(ids)`: the flat nested membership of each group (`/groups/{id}/transitiveMembers`, `$top=999`).
- `users_by_id(ids, select)`: users by object id, 50 per `users/delta?$filter=id eq ...` request.

Pages are raw JSON and retries are ours (`sync.graph.connection`); one `RetryBudget` covers every request of a reader,
and a reader is made per planning run, so a run never waits longer than the policy allows. `requests` counts every
HTTP attempt. Expired or reset tokens raise `DeltaTokenExpired`, as for users.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from functools import partial
from typing import Any

from kiota_abstractions.base_request_configuration import RequestConfiguration
from msgraph.generated.groups.delta.delta_request_builder import DeltaRequestBuilder as GroupsDeltaRequestBuilder
from msgraph.generated.groups.item.transitive_members.transitive_members_request_builder import (
    TransitiveMembersRequestBuilder,
)
from msgraph.generated.users.delta.delta_request_builder import DeltaRequestBuilder as UsersDeltaRequestBuilder
from msgraph.graph_service_client import GraphServiceClient

from sync.core.group_graph import GroupDelta, GroupsDeltaRound, Transitive, member_kind
from sync.core.retry import RetryBudget
from sync.core.source import DeltaRound
from sync.errors import SourceError
from sync.graph.connection import GraphConnection, run_sync

MAX_IDS_PER_REQUEST = 50  # Graph's limit for `id eq` clauses in a delta $filter
TRANSITIVE_PAGE = 999
GROUP_SELECT = ("displayName", "members")
PERMISSION = "GroupMember.Read.All"


def id_filter(ids: Iterable[str]) -> str:
    return " or ".join(f"id eq '{group_id}'" for group_id in ids)


class GraphGroupReader(GraphConnection):
    """Reads group membership; see the module docstring. Make one per planning run."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.requests = 0
        self._budget = RetryBudget(self.retry)

    def __repr__(self) -> str:
        return f"<GraphGroupReader {self.graph_endpoint}>"

    def _count(self) -> None:
        self.requests += 1

    def read_groups_delta(self, link: str | None, group_ids: Sequence[str]) -> GroupsDeltaRound:
        """A round of up to 50 groups: from `link`, or (None) every member of `group_ids`."""
        if len(group_ids) > MAX_IDS_PER_REQUEST:
            raise ValueError(f"at most {MAX_IDS_PER_REQUEST} groups per groups/delta round")
        return run_sync(self._with_client(lambda client: self._groups_delta(client, link, tuple(group_ids))))

    def transitive_members(self, group_ids: Iterable[str]) -> dict[str, Transitive]:
        ids = list(dict.fromkeys(group_ids))
        return run_sync(self._with_client(lambda client: self._transitive(client, ids)))

    def users_by_id(self, user_ids: Iterable[str], select: tuple[str, ...]) -> DeltaRound:
        """The users among `user_ids` that exist, as a round (not full: absent ids say nothing)."""
        ids = sorted(set(user_ids))
        return run_sync(self._with_client(lambda client: self._users(client, ids, select)))

    async def _groups_delta(self, client: GraphServiceClient, link: str | None, ids: tuple[str, ...]) -> GroupsDeltaRound:
        round_ = GroupsDeltaRound(full=link is None)
        next_link = link
        while True:
            page = await self._page(client, partial(_groups_delta_request, client, next_link, ids), "groups/delta")
            for obj in _values(page, "groups/delta"):
                group_id = str(obj["id"]).lower()
                delta = round_.groups.setdefault(group_id, GroupDelta(group_id))
                if obj.get("@removed") is not None:
                    round_.groups[group_id] = GroupDelta(group_id, deleted=True)
                    continue
                if delta.deleted:  # deleted and back (a restore) within one round: start over
                    delta = round_.groups[group_id] = GroupDelta(group_id)
                if isinstance(obj.get("displayName"), str):
                    delta.display_name = obj["displayName"]
                for entry in obj.get("members@delta") or ():
                    if isinstance(entry, dict):
                        delta.add_member_entry(entry)
            final, following = page.get("@odata.deltaLink"), page.get("@odata.nextLink")
            if isinstance(final, str) and final:
                round_.delta_link = final
                return round_
            if not isinstance(following, str) or not following:
                raise SourceError("groups/delta answered a page with neither a nextLink nor a deltaLink")
            next_link = following

    async def _transitive(self, client: GraphServiceClient, ids: list[str]) -> dict[str, Transitive]:
        result: dict[str, Transitive] = {}
        for group_id in ids:
            members = result[group_id] = Transitive()
            link: str | None = None
            while True:
                page = await self._page(
                    client, partial(_transitive_request, client, group_id, link), "groups/transitiveMembers", missing_ok=True
                )
                if page is None:
                    members.found = False
                    break
                for obj in _values(page, "groups/transitiveMembers"):
                    kind = member_kind(obj)
                    if kind == "user":
                        members.users.add(str(obj["id"]).lower())
                    elif kind == "group":
                        members.groups.add(str(obj["id"]).lower())
                following = page.get("@odata.nextLink")
                if not isinstance(following, str) or not following:
                    break
                link = following
        return result

    async def _users(self, client: GraphServiceClient, ids: list[str], select: tuple[str, ...]) -> DeltaRound:
        found = DeltaRound()
        for start in range(0, len(ids), MAX_IDS_PER_REQUEST):
            chunk = ids[start : start + MAX_IDS_PER_REQUEST]
            link: str | None = None
            while True:
                page = await self._page(client, partial(_users_request, client, link, chunk, select), "users/delta")
                found.add_page(obj for obj in _values(page, "users/delta") if "@removed" not in obj)
                # The round's deltaLink is dropped: these reads only fill in users the groups round named.
                following = page.get("@odata.nextLink")
                if not isinstance(following, str) or not following:
                    break
                link = following
        return found

    async def _page(self, client: GraphServiceClient, build: Any, what: str, *, missing_ok: bool = False) -> Any:
        return await self.get_json(
            client, build, self._budget, what=what, permission=PERMISSION, count=self._count, missing_ok=missing_ok
        )


def _values(page: Mapping[str, Any], what: str) -> list[dict[str, Any]]:
    values = page.get("value", [])
    if not isinstance(values, list):
        raise SourceError(f"{what} answered a page whose 'value' is not a list")
    return [obj for obj in values if isinstance(obj, dict) and "id" in obj]


def _groups_delta_request(client: GraphServiceClient, link: str | None, ids: tuple[str, ...]) -> Any:
    if link is not None:
        return client.groups.delta.with_url(link).to_get_request_information()
    params = GroupsDeltaRequestBuilder.DeltaRequestBuilderGetQueryParameters(select=list(GROUP_SELECT), filter=id_filter(ids))
    config: RequestConfiguration[Any] = RequestConfiguration(query_parameters=params)
    return client.groups.delta.to_get_request_information(config)


def _transitive_request(client: GraphServiceClient, group_id: str, link: str | None) -> Any:
    builder = client.groups.by_group_id(group_id).transitive_members
    if link is not None:
        return builder.with_url(link).to_get_request_information()
    params = TransitiveMembersRequestBuilder.TransitiveMembersRequestBuilderGetQueryParameters(
        select=["id"], top=TRANSITIVE_PAGE
    )
    config: RequestConfiguration[Any] = RequestConfiguration(query_parameters=params)
    return builder.to_get_request_information(config)


def _users_request(client: GraphServiceClient, link: str | None, ids: list[str], select: tuple[str, ...]) -> Any:
    if link is not None:
        return client.users.delta.with_url(link).to_get_request_information()
    params = UsersDeltaRequestBuilder.DeltaRequestBuilderGetQueryParameters(select=list(select) or None, filter=id_filter(ids))
    config: RequestConfiguration[Any] = RequestConfiguration(query_parameters=params)
    return client.users.delta.to_get_request_information(config)
