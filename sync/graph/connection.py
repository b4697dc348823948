"""What every Graph reader of ctcs shares: the msgraph-sdk client of one round, raw-JSON pages, our own retries.

`GraphConnection` holds the credential, the cloud's Graph root, the retry policy and the httpx client factory.
`get_json` sends one request (built by an SDK request builder) with the SDK's retry handler switched off and a
native response handler, so every answer comes back as the httpx response; it retries 429/503/504 and broken
connections within a `RetryBudget`, and maps the rest to `SourceError`, `SourceThrottled`, `DeltaTokenExpired` or,
for no token and 401/403, `SourceAuthError` (the pair's credentials: it is quarantined, not retried).
`run_sync` runs a coroutine from sync code, also when called from inside an event loop.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import inspect
import json
import threading
from collections.abc import Awaitable, Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar
from urllib.parse import urlsplit

import httpx
from azure.core.credentials import TokenCredential
from azure.core.exceptions import ClientAuthenticationError
from kiota_abstractions.native_response_handler import NativeResponseHandler
from kiota_authentication_azure.azure_identity_authentication_provider import AzureIdentityAuthenticationProvider
from kiota_http.kiota_client_factory import KiotaClientFactory
from kiota_http.middleware.options import ResponseHandlerOption, RetryHandlerOption
from msgraph.graph_request_adapter import GraphRequestAdapter
from msgraph.graph_request_adapter import options as graph_middleware_options
from msgraph.graph_service_client import GraphServiceClient
from msgraph_core import GraphClientFactory

from sync.core.diagnosis import is_transient_sign_in
from sync.core.retry import RetryBudget, RetryPolicy, parse_retry_after
from sync.errors import DeltaTokenExpired, SourceAuthError, SourceError, SourceThrottled

EXPIRED_TOKEN_CODES = frozenset({"syncstatenotfound", "resyncrequired", "syncstateinvalid"})
RETRY_STATUSES = frozenset({429, 503, 504})
DEFAULT_GRAPH_RETRY = RetryPolicy(max_retries=8, max_wait_seconds=120.0, base_delay=2.0, max_delay=30.0)

Sleep = Callable[[float], object]
"""`asyncio.sleep`, `time.sleep` or a test double; an awaitable result is awaited."""

HttpClientFactory = Callable[[], httpx.AsyncClient]
T = TypeVar("T")


class LoopThread:
    """An event loop of its own in a daemon thread, for async work that outlives one call: a delta round read page
    by page keeps its client (and connections) from the first page to the last while the caller works synchronously,
    and the next page can be on its way meanwhile."""

    def __init__(self, name: str = "ctcs-graph-pages") -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name=name, daemon=True)
        self._thread.start()

    def submit(self, work: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        return asyncio.run_coroutine_threadsafe(work, self._loop)

    def run(self, work: Coroutine[Any, Any, T]) -> T:
        return self.submit(work).result()

    def close(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        if not self._thread.is_alive():
            self._loop.close()


def run_sync(work: Coroutine[Any, Any, T]) -> T:
    """`asyncio.run(work)`; from async code (an async Functions handler) asyncio.run cannot nest, so a thread of ours."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(work)
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="ctcs-graph") as pool:
        return pool.submit(asyncio.run, work).result()


class GraphConnection:
    """One source tenant's Graph: `graph_endpoint` is the cloud's Graph root (`https://graph.microsoft.com`); the
    SDK's base URL becomes `{graph_endpoint}/v1.0` and the token scope `{graph_endpoint}/.default`."""

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

    def _connection_args(self) -> dict[str, Any]:
        """Keyword arguments that make another reader of the same tenant with the same credential and policy."""
        return {"graph_endpoint": self.graph_endpoint, "retry": self.retry, "sleep": self._sleep,
                "http_client_factory": self._http_client_factory}

    def _http_client(self) -> httpx.AsyncClient:
        client: httpx.AsyncClient = GraphClientFactory.create_with_default_middleware(
            client=self._http_client_factory(), options=graph_middleware_options
        )
        return client

    def _client(self, http_client: httpx.AsyncClient) -> GraphServiceClient:
        # Scopes and allowed hosts are explicit: the SDK's defaults know only Microsoft's own Graph hosts,
        # and would send no token at all to another host (a simulator, a private endpoint).
        auth = AzureIdentityAuthenticationProvider(
            self._credential, scopes=[f"{self.graph_endpoint}/.default"], allowed_hosts=[self._host]
        )
        adapter = GraphRequestAdapter(auth, client=http_client)
        adapter.base_url = f"{self.graph_endpoint}/v1.0"
        return GraphServiceClient(request_adapter=adapter)

    async def _with_client(self, work: Callable[[GraphServiceClient], Awaitable[T]]) -> T:
        """Run `work` with a client made for it, closed afterwards."""
        http_client = self._http_client()
        try:
            return await work(self._client(http_client))
        finally:
            await http_client.aclose()

    async def get_json(
        self,
        client: GraphServiceClient,
        build: Callable[[], Any],
        budget: RetryBudget,
        *,
        what: str,
        permission: str,
        count: Callable[[], None],
        missing_ok: bool = False,
    ) -> dict[str, Any] | None:
        """The JSON object of one answer. `build` makes the request information (an attempt each); `count` is called
        per attempt. With `missing_ok` a 404 answers None."""
        while True:
            info = build()
            info.add_request_options(
                [ResponseHandlerOption(NativeResponseHandler()), RetryHandlerOption(max_retries=0, should_retry=False)]
            )
            count()
            try:
                # The native response handler makes this return the httpx response instead of raising on 4xx/5xx.
                adapter: Any = client.request_adapter
                response = await adapter.send_primitive_async(info, "bytes", None)
            except ClientAuthenticationError as error:
                text = first_line(error)
                if is_transient_sign_in(text):  # Entra itself failed: a later run gets its token
                    raise SourceError(f"no Graph token for the source tenant (sign-in service failed): {text}") from None
                raise SourceAuthError(f"no Graph token for the source tenant: {text}") from None
            except httpx.TransportError as error:
                await self._wait_or_raise(budget, None, f"Graph unreachable ({type(error).__name__})", throttled=False)
                continue
            if not isinstance(response, httpx.Response):
                raise SourceError(f"msgraph-sdk returned no response for {what}")
            status = response.status_code
            if 200 <= status < 300:
                return json_page(response, what) if response.content else {}  # 204 (a DELETE) has no body
            code, message = graph_error(response)
            if status == 410 or (status == 400 and code.lower() in EXPIRED_TOKEN_CODES):
                raise DeltaTokenExpired(f"the delta token is no longer valid (HTTP {status} {code}): a full round is needed")
            if status in RETRY_STATUSES:
                retry_after = parse_retry_after(response.headers.get("Retry-After"))
                await self._wait_or_raise(budget, retry_after, f"Graph answered {status} {code}")
                continue
            if status == 404 and missing_ok:
                return None
            if status in (401, 403):
                raise SourceAuthError(
                    f"Graph refused {what} (HTTP {status} {code}): {message} "
                    f"(check the credential and the {permission} application permission with admin consent)",
                    status=status,
                )
            raise SourceError(f"Graph {what} failed (HTTP {status} {code}): {message}")

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


def json_page(response: httpx.Response, what: str = "users/delta") -> dict[str, Any]:
    try:
        page = json.loads(response.content)
    except ValueError:
        raise SourceError(f"Graph answered HTTP {response.status_code} with a body that is not JSON") from None
    if not isinstance(page, dict):
        raise SourceError(f"Graph answered a {what} page that is not a JSON object")
    return page


def graph_error(response: httpx.Response) -> tuple[str, str]:
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


def first_line(error: Exception) -> str:
    lines = str(error).strip().splitlines()
    return lines[0][:300] if lines else type(error).__name__
