"""`GraphSource`: the source tenant's users through Microsoft Graph `users/delta`, on msgraph-sdk.

Pages are read as raw JSON, not typed models: typed models cannot tell an explicit null from an absent property
and hide `@removed`. Requests are built by the SDK's request builders and sent with
`send_primitive_async` plus a native response handler, so every answer (also 4xx/5xx) comes back as the
httpx response, with status, headers and body.

Retrying is ours, not the SDK's: its retry handler is switched off per request (it gives up on decimal or long
Retry-After values and hides its attempts). `GraphSource` retries 429/503/504 and broken connections within
one `RetryBudget` per round and raises `SourceThrottled` when Graph asks for more patience than the budget has,
so a run never hangs. `DeltaRound.requests` counts every HTTP attempt, retries included.

Expired or reset delta tokens (400 syncStateNotFound / resyncRequired / syncStateInvalid, 410 Gone) raise
`DeltaTokenExpired`. The engine then calls `read_round(None, select)` itself for a full round; a second
`DeltaTokenExpired` from that full round is a failed run, not a reason to loop.

msgraph-sdk is async and `Source` is not: `read_pages` runs the round on an event loop of its own in a thread
(`LoopThread`), with one client from its first page to its last, and asks for the next page as soon as it hands one
over, so Graph's latency overlaps the caller's work on the page (planning and queueing it). Closing the iterator
stops it and drops a page read ahead. Credentials are not per round: they come from the caller (cached).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import re
from collections.abc import Generator, Sequence
from typing import Any
from urllib.parse import quote

from kiota_abstractions.base_request_configuration import RequestConfiguration
from msgraph.generated.users.delta.delta_request_builder import DeltaRequestBuilder
from msgraph.graph_service_client import GraphServiceClient

from sync.core.retry import RetryBudget
from sync.core.source import DeltaPage, DeltaRound, read_whole_round
from sync.errors import SourceError
from sync.graph.connection import (
    DEFAULT_GRAPH_RETRY,
    EXPIRED_TOKEN_CODES,
    RETRY_STATUSES,
    GraphConnection,
    HttpClientFactory,
    LoopThread,
    Sleep,
    run_sync,
)
from sync.graph.group_contacts import GroupContactReader
from sync.graph.groups import GraphGroupReader

__all__ = ["DEFAULT_GRAPH_RETRY", "EXPIRED_TOKEN_CODES", "RETRY_STATUSES", "GraphSource", "HttpClientFactory", "Sleep"]

GUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


class GraphSource(GraphConnection):
    """Reads `users/delta` rounds of one source tenant.

    `graph_endpoint` is the cloud's Graph root (`https://graph.microsoft.com`); the SDK's base URL becomes
    `{graph_endpoint}/v1.0` and the token scope `{graph_endpoint}/.default`. `retry` bounds the retries of one
    round; `sleep` waits between them. `http_client_factory` builds the httpx client of a round (the SDK's
    middleware is added to it).
    """

    def __repr__(self) -> str:
        return f"<GraphSource {self.graph_endpoint}>"

    def read_round(self, delta_link: str | None, select: tuple[str, ...]) -> DeltaRound:
        """Every change since `delta_link` (every user when None), net of duplicates, in memory at once."""
        return read_whole_round(self, delta_link, tuple(select))

    def read_pages(self, link: str | None, select: tuple[str, ...]) -> Generator[DeltaPage, None, None]:
        """The round's pages from `link` (None: a full round), each asked for while the caller works on the one
        before; see the module docstring."""
        loop = LoopThread()
        http_client = self._http_client()
        client = self._client(http_client)
        budget = RetryBudget(self.retry)
        ahead: concurrent.futures.Future[DeltaPage] | None = None
        try:
            coming = loop.submit(self._page(client, link, tuple(select) if link is None else (), budget))
            while True:
                ahead = coming
                page = coming.result()
                ahead = None
                if page.next_link is not None:
                    coming = ahead = loop.submit(self._page(client, page.next_link, (), budget))
                yield page
                if page.next_link is None:
                    return
        finally:
            if ahead is not None:
                ahead.cancel()
                with contextlib.suppress(Exception):  # cancelled, or the dropped page failed: nobody wants it
                    ahead.result(timeout=60)
            loop.run(http_client.aclose())
            loop.close()

    def find_user(self, key: str, select: tuple[str, ...]) -> dict[str, Any] | None:
        """One user by object id, UPN or mail (for `explain`); None when no user matches."""
        user: dict[str, Any] | None = self._run(self._find_user(key, tuple(select)))
        return user

    def _run(self, work: Any) -> Any:
        return run_sync(work)

    def group_reader(self) -> GraphGroupReader:
        """A reader of the same tenant's group membership, with this source's credential and retry policy."""
        return GraphGroupReader(self._credential, **self._connection_args())

    def group_contact_reader(self) -> GroupContactReader:
        """A reader of the same tenant's groups as contacts (groups/delta with mail properties, hide flags)."""
        return GroupContactReader(self._credential, **self._connection_args())

    async def _find_user(self, key: str, select: tuple[str, ...]) -> dict[str, Any] | None:
        """By object id: a `users/delta` round filtered to that id, so the user comes exactly as a planning round
        shows it (`manager@delta` included). By UPN or mail: `GET /users?$filter=...` finds the id first."""
        http_client = self._http_client()
        try:
            client = self._client(http_client)
            user_id = key if GUID.fullmatch(key) else await self._id_of(client, key)
            if user_id is None:
                return None
            literal = quote("'" + user_id.replace("'", "''") + "'", safe="")
            fields = quote(",".join(select), safe=",")
            url = f"{self.graph_endpoint}/v1.0/users/delta?$filter=id%20eq%20{literal}&$select={fields}"
            # Graph answers 404 for an object id it does not know: that is "no such user", not a failure.
            page = await self._get_page(client, url, (), DeltaRound(), RetryBudget(self.retry), missing_ok=True)
        finally:
            await http_client.aclose()
        users = [user for user in page.get("value", []) if isinstance(user, dict) and "@removed" not in user]
        return users[0] if users else None

    async def _page(self, client: GraphServiceClient, link: str | None, select: Sequence[str],
                    budget: RetryBudget) -> DeltaPage:
        counter = DeltaRound()
        body = await self._get_page(client, link, select, counter, budget)
        values = body.get("value", [])
        if not isinstance(values, list):
            raise SourceError("users/delta answered a page whose 'value' is not a list")
        page = DeltaPage([obj for obj in values if isinstance(obj, dict) and "id" in obj], requests=counter.requests)
        next_link, final_link = body.get("@odata.nextLink"), body.get("@odata.deltaLink")
        if isinstance(final_link, str) and final_link:
            page.delta_link = final_link
        elif isinstance(next_link, str) and next_link:
            page.next_link = next_link
        else:
            raise SourceError("users/delta answered a page with neither a nextLink nor a deltaLink")
        return page

    async def _id_of(self, client: GraphServiceClient, key: str) -> str | None:
        literal = quote("'" + key.replace("'", "''") + "'", safe="")
        url = (f"{self.graph_endpoint}/v1.0/users?$filter=userPrincipalName%20eq%20{literal}%20or%20mail%20eq%20"
               f"{literal}&$select=id")
        page = await self._get_page(client, url, (), DeltaRound(), RetryBudget(self.retry))
        found = [user for user in page.get("value", []) if isinstance(user, dict) and isinstance(user.get("id"), str)]
        return str(found[0]["id"]) if found else None

    async def _get_page(
        self,
        client: GraphServiceClient,
        link: str | None,
        select: Sequence[str],
        delta: DeltaRound,
        budget: RetryBudget,
        *,
        missing_ok: bool = False,
    ) -> dict[str, Any]:
        def count() -> None:
            delta.requests += 1

        page = await self.get_json(
            client, lambda: _delta_request(client, link, select), budget,
            what="users/delta", permission="User.Read.All", count=count, missing_ok=missing_ok,
        )
        return page if page is not None else {"value": []}  # only `missing_ok` answers None: no such object


def _delta_request(client: GraphServiceClient, link: str | None, select: Sequence[str]) -> Any:
    """The request of one page: the first from the builder with `$select`, later ones from the opaque link."""
    if link is None:
        builder = client.users.delta
        config: RequestConfiguration[Any] = RequestConfiguration(
            query_parameters=DeltaRequestBuilder.DeltaRequestBuilderGetQueryParameters(select=list(select) or None)
        )
        info = builder.to_get_request_information(config)
    else:
        info = client.users.delta.with_url(link).to_get_request_information()
    return info
