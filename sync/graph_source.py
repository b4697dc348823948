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

msgraph-sdk is async and `Source` is not: each round runs on its own event loop (`asyncio.run`) with a client
created for that round and closed after it. Credentials are not per round: they come from the caller (cached).
"""

from __future__ import annotations

import asyncio
import inspect
import json
import re
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import quote, urlsplit

import httpx
from azure.core.credentials import TokenCredential
from azure.core.exceptions import ClientAuthenticationError
from kiota_abstractions.base_request_configuration import RequestConfiguration
from kiota_abstractions.native_response_handler import NativeResponseHandler
from kiota_authentication_azure.azure_identity_authentication_provider import AzureIdentityAuthenticationProvider
from kiota_http.kiota_client_factory import KiotaClientFactory
from kiota_http.middleware.options import ResponseHandlerOption, RetryHandlerOption
from msgraph.generated.users.delta.delta_request_builder import DeltaRequestBuilder
from msgraph.graph_request_adapter import GraphRequestAdapter
from msgraph.graph_request_adapter import options as graph_middleware_options
from msgraph.graph_service_client import GraphServiceClient
from msgraph_core import GraphClientFactory

from sync.errors import DeltaTokenExpired, SourceError, SourceThrottled
from sync.exchange_errors import RetryBudget, RetryPolicy, parse_retry_after
from sync.source import DeltaRound

EXPIRED_TOKEN_CODES = frozenset({"syncstatenotfound", "resyncrequired", "syncstateinvalid"})
RETRY_STATUSES = frozenset({429, 503, 504})
DEFAULT_GRAPH_RETRY = RetryPolicy(max_retries=8, max_wait_seconds=120.0, base_delay=2.0, max_delay=30.0)

Sleep = Callable[[float], object]
"""`asyncio.sleep`, `time.sleep` or a test double; an awaitable result is awaited."""

HttpClientFactory = Callable[[], httpx.AsyncClient]


GUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


class GraphSource:
    """Reads `users/delta` rounds of one source tenant.

    `graph_endpoint` is the cloud's Graph root (`https://graph.microsoft.com`); the SDK's base URL becomes
    `{graph_endpoint}/v1.0` and the token scope `{graph_endpoint}/.default`. `retry` bounds the retries of one
    round; `sleep` waits between them. `http_client_factory` builds the httpx client of a round (the SDK's
    middleware is added to it).
    """

    def __init__(
        self,
        credential: TokenCredential,
        *,
        graph_endpoint: str,
        retry: RetryPolicy = DEFAULT_GRAPH_RETRY,
        sleep: Sleep = asyncio.sleep,
        http_client_factory: HttpClientFactory = KiotaClientFactory.get_default_client,
    ) -> None:
        self._credential = credential
        self.graph_endpoint = graph_endpoint.rstrip("/")
        self.retry = retry
        self._sleep = sleep
        self._http_client_factory = http_client_factory
        host = urlsplit(self.graph_endpoint).hostname
        if not host:
            raise ValueError("graph_endpoint must be an absolute URL")
        self._host = host

    def __repr__(self) -> str:
        return f"<GraphSource {self.graph_endpoint}>"

    def read_round(self, delta_link: str | None, select: tuple[str, ...]) -> DeltaRound:
        """Every change since `delta_link` (every user when None), net of duplicates; see the module docstring."""
        # From async code (an async Functions handler) asyncio.run cannot nest: `_run` then uses a thread of its own.
        round_: DeltaRound = self._run(self._read_round(delta_link, tuple(select)))
        return round_

    def find_user(self, key: str, select: tuple[str, ...]) -> dict[str, Any] | None:
        """One user by object id, UPN or mail (for `explain`); None when no user matches."""
        user: dict[str, Any] | None = self._run(self._find_user(key, tuple(select)))
        return user

    def _run(self, work: Any) -> Any:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(work)
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="ctcs-graph") as pool:
            return pool.submit(asyncio.run, work).result()

    async def _find_user(self, key: str, select: tuple[str, ...]) -> dict[str, Any] | None:
        literal = quote("'" + key.replace("'", "''") + "'", safe="")
        fields = quote(",".join(select), safe=",")
        if GUID.fullmatch(key):
            url = f"{self.graph_endpoint}/v1.0/users/delta?$filter=id%20eq%20{literal}&$select={fields}"
        else:
            url = (f"{self.graph_endpoint}/v1.0/users?$filter=userPrincipalName%20eq%20{literal}%20or%20mail%20eq%20"
                   f"{literal}&$select={fields}")
        http_client = GraphClientFactory.create_with_default_middleware(
            client=self._http_client_factory(), options=graph_middleware_options
        )
        try:
            page = await self._get_page(self._client(http_client), url, (), DeltaRound(), RetryBudget(self.retry))
        finally:
            await http_client.aclose()
        users = [user for user in page.get("value", []) if isinstance(user, dict) and "@removed" not in user]
        return users[0] if users else None

    async def _read_round(self, delta_link: str | None, select: tuple[str, ...]) -> DeltaRound:
        delta = DeltaRound(full=delta_link is None)
        budget = RetryBudget(self.retry)
        http_client = GraphClientFactory.create_with_default_middleware(
            client=self._http_client_factory(), options=graph_middleware_options
        )
        try:
            client = self._client(http_client)
            link = delta_link
            first = True
            while True:
                page = await self._get_page(client, link, select if first else (), delta, budget)
                first = False
                values = page.get("value", [])
                if not isinstance(values, list):
                    raise SourceError("users/delta answered a page whose 'value' is not a list")
                delta.add_page(obj for obj in values if isinstance(obj, dict) and "id" in obj)
                next_link = page.get("@odata.nextLink")
                final_link = page.get("@odata.deltaLink")
                if isinstance(final_link, str) and final_link:
                    delta.delta_link = final_link
                    return delta
                if not isinstance(next_link, str) or not next_link:
                    raise SourceError("users/delta answered a page with neither a nextLink nor a deltaLink")
                link = next_link
        finally:
            await http_client.aclose()

    def _client(self, http_client: httpx.AsyncClient) -> GraphServiceClient:
        # Scopes and allowed hosts are explicit: the SDK's defaults know only Microsoft's own Graph hosts,
        # and would send no token at all to another host (a simulator, a private endpoint).
        auth = AzureIdentityAuthenticationProvider(
            self._credential, scopes=[f"{self.graph_endpoint}/.default"], allowed_hosts=[self._host]
        )
        adapter = GraphRequestAdapter(auth, client=http_client)
        adapter.base_url = f"{self.graph_endpoint}/v1.0"
        return GraphServiceClient(request_adapter=adapter)

    async def _get_page(
        self,
        client: GraphServiceClient,
        link: str | None,
        select: Sequence[str],
        delta: DeltaRound,
        budget: RetryBudget,
    ) -> dict[str, Any]:
        while True:
            info = _delta_request(client, link, select)
            delta.requests += 1
            try:
                # The native response handler makes this return the httpx response instead of raising on 4xx/5xx.
                adapter: Any = client.request_adapter
                response = await adapter.send_primitive_async(info, "bytes", None)
            except ClientAuthenticationError as error:
                raise SourceError(f"no Graph token for the source tenant: {_first_line(error)}") from None
            except httpx.TransportError as error:
                await self._wait_or_raise(budget, None, f"Graph unreachable ({type(error).__name__})", throttled=False)
                continue
            if not isinstance(response, httpx.Response):
                raise SourceError("msgraph-sdk returned no response for users/delta")
            status = response.status_code
            if 200 <= status < 300:
                return _json_page(response)
            code, message = _graph_error(response)
            if status == 410 or (status == 400 and code.lower() in EXPIRED_TOKEN_CODES):
                raise DeltaTokenExpired(f"the delta token is no longer valid (HTTP {status} {code}): a full round is needed")
            if status in RETRY_STATUSES:
                retry_after = parse_retry_after(response.headers.get("Retry-After"))
                await self._wait_or_raise(budget, retry_after, f"Graph answered {status} {code}")
                continue
            if status in (401, 403):
                raise SourceError(
                    f"Graph refused users/delta (HTTP {status} {code}): {message} "
                    "(check the credential and the User.Read.All application permission with admin consent)"
                )
            raise SourceError(f"Graph users/delta failed (HTTP {status} {code}): {message}")

    async def _wait_or_raise(
        self, budget: RetryBudget, retry_after: float | None, why: str, *, throttled: bool = True
    ) -> None:
        wait = budget.next_wait(retry_after)
        if wait is None:
            message = f"{why}; gave up after {budget.retries} retries and {budget.waited:.1f} s of waiting" + (
                f" (Retry-After {retry_after:g} s)" if retry_after is not None else ""
            )
            if not throttled:
                raise SourceError(message)
            raise SourceThrottled(message, retry_after=retry_after)
        budget.spend(wait)
        result = self._sleep(wait)
        if inspect.isawaitable(result):
            await result


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
    info.add_request_options(
        [ResponseHandlerOption(NativeResponseHandler()), RetryHandlerOption(max_retries=0, should_retry=False)]
    )
    return info


def _json_page(response: httpx.Response) -> dict[str, Any]:
    try:
        page = json.loads(response.content)
    except ValueError:
        raise SourceError(f"Graph answered HTTP {response.status_code} with a body that is not JSON") from None
    if not isinstance(page, dict):
        raise SourceError("Graph answered a users/delta page that is not a JSON object")
    return page


def _graph_error(response: httpx.Response) -> tuple[str, str]:
    """(error.code, error.message) of a Graph error envelope; empty strings when the body has none."""
    try:
        body = json.loads(response.content) if response.content else {}
    except ValueError:
        return "", response.text[:200]
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        return "", ""
    code = error.get("code")
    message = error.get("message")
    return (code if isinstance(code, str) else ""), (message[:300] if isinstance(message, str) else "")


def _first_line(error: Exception) -> str:
    lines = str(error).strip().splitlines()
    return lines[0][:300] if lines else type(error).__name__
