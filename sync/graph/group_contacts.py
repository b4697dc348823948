"""`GroupContactReader`: the source's mail-enabled groups for groups-as-contacts, on `GraphGroupReader`'s footing.

- `read_round(link)`: one `groups/delta` round with the contact properties (`GROUP_SELECT`, no `members`): from a
  deltaLink, the groups that changed or were removed; without one, every group (a full round). Pages are read and
  folded as `DeltaRound`, last occurrence winning, `@removed` a removal. Expired or reset tokens raise
  `DeltaTokenExpired`, as for users; the caller then reads a full round.
- `find_group(id)`: one group with all of it, `hideFromAddressLists` included (`explain`).
- `hide_flags(ids)`: `hideFromAddressLists` of Microsoft 365 groups. Graph returns it only from `GET /groups/{id}`
  with an explicit `$select`, never from delta or a list, so each changed Microsoft 365 group costs one such read;
  they go 20 to a JSON `$batch` request (Graph's limit), so 100 changed groups cost 5 requests and an idle round none.

The deltaLink is the caller's to keep (per pair, apart from the membership-scoping state of sync.app.planner.group_round).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from functools import partial
from typing import Any
from urllib.parse import quote

from kiota_abstractions.base_request_configuration import RequestConfiguration
from kiota_abstractions.method import Method
from kiota_abstractions.request_information import RequestInformation
from msgraph.generated.groups.delta.delta_request_builder import DeltaRequestBuilder
from msgraph.graph_service_client import GraphServiceClient

from sync.contract.groupattrs import GROUP_SELECT
from sync.core.retry import parse_retry_after
from sync.core.source import DeltaRound
from sync.errors import SourceAuthError, SourceError
from sync.graph.connection import RETRY_STATUSES, run_sync
from sync.graph.groups import GraphGroupReader, _values

BATCH_SIZE = 20  # requests in one JSON $batch (Graph's limit)
PROPERTY_PERMISSION = "Group.Read.All"


class GroupContactReader(GraphGroupReader):
    """Reads the groups a pair turns into contacts; make one per planning run (one retry budget for all of it)."""

    def __repr__(self) -> str:
        return f"<GroupContactReader {self.graph_endpoint}>"

    def read_round(self, link: str | None) -> DeltaRound:
        return run_sync(self._with_client(lambda client: self._round(client, link)))

    def hide_flags(self, group_ids: Iterable[str]) -> dict[str, bool]:
        """`hideFromAddressLists` per group id; a group that no longer exists is left out."""
        ids = list(dict.fromkeys(group_ids))
        if not ids:
            return {}
        return run_sync(self._with_client(lambda client: self._hide_flags(client, ids)))

    def find_group(self, group_id: str) -> dict[str, Any] | None:
        """One group by object id with every property a groups round reads, hideFromAddressLists included (for
        `explain`); None when there is no such group."""
        return run_sync(self._with_client(lambda client: self._find(client, group_id)))

    async def _find(self, client: GraphServiceClient, group_id: str) -> dict[str, Any] | None:
        def build() -> RequestInformation:
            info = RequestInformation()
            info.http_method = Method.GET
            fields = ",".join((*GROUP_SELECT, "hideFromAddressLists"))
            info.url = f"{self.graph_endpoint}/v1.0/groups/{quote(group_id, safe='')}?$select={fields}"
            return info

        return await self.get_json(client, build, self._budget, what="GET /groups/{id}",
                                   permission=PROPERTY_PERMISSION, count=self._count, missing_ok=True)

    async def _round(self, client: GraphServiceClient, link: str | None) -> DeltaRound:
        round_ = DeltaRound(full=link is None)
        following = link
        while True:
            page = await self.get_json(client, partial(_delta_request, client, following), self._budget,
                                       what="groups/delta", permission=PROPERTY_PERMISSION, count=self._count)
            assert page is not None
            round_.add_page(_values(page, "groups/delta"))
            final, following = page.get("@odata.deltaLink"), page.get("@odata.nextLink")
            if isinstance(final, str) and final:
                round_.delta_link = final
                round_.requests = self.requests
                return round_
            if not isinstance(following, str) or not following:
                raise SourceError("groups/delta answered a page with neither a nextLink nor a deltaLink")

    async def _hide_flags(self, client: GraphServiceClient, ids: list[str]) -> dict[str, bool]:
        flags: dict[str, bool] = {}
        pending = ids
        while pending:
            retry: list[str] = []
            retry_after: float | None = None
            for start in range(0, len(pending), BATCH_SIZE):
                chunk = pending[start : start + BATCH_SIZE]
                body = await self.get_json(client, partial(self._batch_request, chunk), self._budget,
                                           what="$batch of GET /groups/{id}", permission=PROPERTY_PERMISSION,
                                           count=self._count)
                for answer in (body or {}).get("responses") or ():
                    group_id, status, value = _answer(answer, chunk)
                    if status == 200:
                        flags[group_id] = value.get("hideFromAddressLists") is True
                    elif status in RETRY_STATUSES:  # one request of the batch throttled: that one again
                        retry.append(group_id)
                        retry_after = max(retry_after or 0.0, _retry_after(answer) or 0.0) or retry_after
                    elif status in (401, 403):
                        raise SourceAuthError(
                            f"Graph refused GET /groups/{{id}} (HTTP {status}) reading hideFromAddressLists (check the "
                            f"{PROPERTY_PERMISSION} application permission with admin consent)", status=status)
                    elif status != 404:  # 404: the group went meanwhile; the next round reports it
                        raise SourceError(f"Graph GET /groups/{group_id} failed in a $batch (HTTP {status})")
            if retry:
                await self._wait_or_raise(self._budget, retry_after, "Graph throttled requests inside a $batch")
            pending = retry
        return flags

    def _batch_request(self, chunk: list[str]) -> RequestInformation:
        info = RequestInformation()
        info.http_method = Method.POST
        info.url = f"{self.graph_endpoint}/v1.0/$batch"
        requests = [{"id": str(index), "method": "GET", "url": f"/groups/{group_id}?$select=id,hideFromAddressLists"}
                    for index, group_id in enumerate(chunk)]
        info.headers.try_add("Content-Type", "application/json")
        info.content = json.dumps({"requests": requests}).encode()
        return info


def _answer(answer: Any, chunk: list[str]) -> tuple[str, int, dict[str, Any]]:
    """(group id, status, body) of one response of a $batch; ids are the request's index in `chunk`."""
    if not isinstance(answer, dict) or not str(answer.get("id", "")).isdigit() or int(answer["id"]) >= len(chunk):
        raise SourceError("Graph answered a $batch with a response that names no request of it")
    body = answer.get("body")
    status = answer.get("status")
    return chunk[int(answer["id"])], int(status) if isinstance(status, int) else 0, body if isinstance(body, dict) else {}


def _retry_after(answer: dict[str, Any]) -> float | None:
    headers = answer.get("headers")
    if not isinstance(headers, dict):
        return None
    value = next((v for k, v in headers.items() if str(k).lower() == "retry-after"), None)
    return parse_retry_after(str(value)) if value is not None else None


def _delta_request(client: GraphServiceClient, link: str | None) -> Any:
    if link is not None:
        return client.groups.delta.with_url(link).to_get_request_information()
    params = DeltaRequestBuilder.DeltaRequestBuilderGetQueryParameters(select=list(GROUP_SELECT))
    config: RequestConfiguration[Any] = RequestConfiguration(query_parameters=params)
    return client.groups.delta.to_get_request_information(config)
