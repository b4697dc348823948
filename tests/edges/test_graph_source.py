"""GraphSource against the simulated Graph: real msgraph-sdk, azure-identity and httpx over loopback HTTPS."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from azure.core.credentials import AccessToken

from sim import SimCloud, Tenant
from sync.contract.pairs import TenantPair
from sync.core.retry import RetryPolicy
from sync.errors import DeltaTokenExpired, SourceError, SourceThrottled
from sync.graph.users import GraphSource
from sync.identity.credentials import CredentialCache
from sync.identity.secrets import SecretResolver

from .conftest import SECRET, new_guid

SELECT = ("id", "displayName", "mail", "department", "accountEnabled")
POLICY = RetryPolicy(max_retries=5, max_wait_seconds=120.0, base_delay=2.0, max_delay=30.0)


class Recorder:
    """The source's `sleep` and the URLs it requested; nothing waits for real."""

    def __init__(self) -> None:
        self.sleeps: list[float] = []
        self.urls: list[str] = []

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)

    def http_client(self) -> httpx.AsyncClient:
        async def log(request: httpx.Request) -> None:
            self.urls.append(str(request.url))

        return httpx.AsyncClient(timeout=30, event_hooks={"request": [log]})


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
def graph_client_id(source_tenant: Tenant) -> str:
    client = new_guid()
    source_tenant.register_app(client, secret=SECRET, roles=["User.Read.All"])
    return client


@pytest.fixture
def pair(source_tenant: Tenant, target_tenant: Tenant, graph_client_id: str,
         make_pair: Callable[..., TenantPair]) -> TenantPair:
    return make_pair(source_tenant, target_tenant, source_client=graph_client_id, target_client=new_guid())


@pytest.fixture
def source(cloud: SimCloud, pair: TenantPair, resolver: SecretResolver, credentials: CredentialCache,
           recorder: Recorder) -> GraphSource:
    return GraphSource(credentials.for_source(pair, resolver), graph_endpoint=cloud.endpoints["graph"], retry=POLICY,
                       sleep=recorder.sleep, http_client_factory=recorder.http_client)


def add_users(tenant: Tenant, count: int, **extra: Any) -> list[str]:
    return [tenant.directory.add_user({"displayName": f"User {n}", "mail": f"user{n}@{tenant.domain}",
                                       "department": "Sales", "jobTitle": "Rep", "accountEnabled": True, **extra})
            for n in range(count)]


def query(url: str) -> dict[str, list[str]]:
    return parse_qs(urlsplit(url).query)


# --- rounds ------------------------------------------------------------------------------------------------------

def test_full_round_follows_pages_to_the_delta_link(
    source: GraphSource, source_tenant: Tenant, cloud: SimCloud, recorder: Recorder
) -> None:
    source_tenant.directory.page_size = 200
    ids = add_users(source_tenant, 450)
    delta = source.read_round(None, SELECT)
    assert delta.full and set(delta.users) == set(ids) and not delta.removed
    assert delta.delta_link and "$deltatoken=" in delta.delta_link
    assert delta.requests == 3 == cloud.counts[("graph", "users/delta")]
    # $select exactly as given, on the first request only; later links are followed as they came.
    assert query(recorder.urls[0])["$select"] == [",".join(SELECT)]
    assert all("$select" not in query(url) for url in recorder.urls[1:])
    user = delta.users[ids[0]]
    assert set(user) <= set(SELECT) and "jobTitle" not in user


def test_incremental_round_updates_creates_and_removals(source: GraphSource, source_tenant: Tenant) -> None:
    directory = source_tenant.directory
    changed, soft, hard, untouched = add_users(source_tenant, 4)
    first = source.read_round(None, SELECT)
    directory.update_user(changed, department="Marketing")
    directory.update_user(untouched, jobTitle="Boss")  # not selected: not tracked
    created = directory.add_user({"displayName": "New Person", "mail": "new@x.com"})
    directory.delete_user(soft)
    directory.delete_user(hard, permanent=True)
    second = source.read_round(first.delta_link, SELECT)
    assert not second.full
    assert set(second.users) == {changed, created}
    assert second.users[changed]["department"] == "Marketing"
    assert second.removed == {soft: "changed", hard: "deleted"}
    assert second.requests == 1
    third = source.read_round(second.delta_link, SELECT)
    assert not third.users and not third.removed and third.delta_link


def test_restore_comes_back_as_a_user(source: GraphSource, source_tenant: Tenant) -> None:
    (uid,) = add_users(source_tenant, 1)
    link = source.read_round(None, SELECT).delta_link
    source_tenant.directory.delete_user(uid)
    removed = source.read_round(link, SELECT)
    assert removed.removed == {uid: "changed"}
    source_tenant.directory.restore_user(uid)
    restored = source.read_round(removed.delta_link, SELECT)
    assert uid in restored.users and not restored.removed


def test_replays_and_duplicates_fold_to_the_last_state(source: GraphSource, source_tenant: Tenant) -> None:
    directory = source_tenant.directory
    ids = add_users(source_tenant, 6)
    link = source.read_round(None, SELECT).delta_link
    directory.update_user(ids[0], department="A")
    directory.update_user(ids[0], department="B")
    directory.delete_user(ids[1])
    directory.replay_next_round = True
    delta = source.read_round(link, SELECT)
    assert delta.users[ids[0]]["department"] == "B"
    assert delta.removed == {ids[1]: "changed"}
    assert ids[1] not in delta.users


def test_empty_tenant(source: GraphSource) -> None:
    delta = source.read_round(None, SELECT)
    assert delta.users == {} and delta.delta_link and delta.requests == 1


# --- expired, reset and garbled tokens -------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["delta_expired", "delta_reset", "delta_garbled", "resync_required"])
def test_each_token_fault_is_delta_token_expired(
    source: GraphSource, source_tenant: Tenant, cloud: SimCloud, kind: str
) -> None:
    add_users(source_tenant, 3)
    link = source.read_round(None, SELECT).delta_link
    cloud.faults.inject("graph", kind)
    with pytest.raises(DeltaTokenExpired):
        source.read_round(link, SELECT)
    full = source.read_round(None, SELECT)  # what the engine does next
    assert full.full and len(full.users) == 3


def test_expired_and_reset_directory_tokens(source: GraphSource, source_tenant: Tenant) -> None:
    add_users(source_tenant, 2)
    link = source.read_round(None, SELECT).delta_link
    source_tenant.directory.expire_tokens()
    with pytest.raises(DeltaTokenExpired, match="syncStateNotFound"):
        source.read_round(link, SELECT)
    link = source.read_round(None, SELECT).delta_link
    source_tenant.directory.reset_tokens()
    with pytest.raises(DeltaTokenExpired, match="410"):
        source.read_round(link, SELECT)


def test_garbled_link(source: GraphSource, source_tenant: Tenant) -> None:
    add_users(source_tenant, 1)
    link = source.read_round(None, SELECT).delta_link
    assert link
    with pytest.raises(DeltaTokenExpired, match="syncStateInvalid"):
        source.read_round(link[:-4] + "AAAA", SELECT)


def test_skiptoken_expiring_mid_round(source: GraphSource, source_tenant: Tenant, cloud: SimCloud) -> None:
    source_tenant.directory.page_size = 2
    add_users(source_tenant, 5)
    cloud.faults.inject("graph", "delta_expired")  # hits the first nextLink of the full round
    with pytest.raises(DeltaTokenExpired):
        source.read_round(None, SELECT)


# --- throttling and transient failures ---------------------------------------------------------------------------

def test_decimal_retry_after_is_honoured(
    source: GraphSource, source_tenant: Tenant, cloud: SimCloud, recorder: Recorder
) -> None:
    add_users(source_tenant, 3)
    cloud.faults.inject("graph", "throttle", times=2, retry_after="0.249")
    delta = source.read_round(None, SELECT)
    assert len(delta.users) == 3
    assert recorder.sleeps == [0.249, 0.249]
    assert delta.requests == 3 == cloud.counts["graph"]


def test_missing_retry_after_backs_off_exponentially(
    source: GraphSource, source_tenant: Tenant, cloud: SimCloud, recorder: Recorder
) -> None:
    add_users(source_tenant, 1)
    cloud.faults.inject("graph", "throttle", times=3, retry_after=None)
    delta = source.read_round(None, SELECT)
    assert recorder.sleeps == [2.0, 4.0, 8.0]
    assert delta.requests == 4


@pytest.mark.parametrize("kind, status", [("unavailable", 503), ("gateway_timeout", 504)])
def test_503_and_504_are_survived(
    source: GraphSource, source_tenant: Tenant, cloud: SimCloud, recorder: Recorder, kind: str, status: int
) -> None:
    source_tenant.directory.page_size = 2
    add_users(source_tenant, 3)
    cloud.faults.inject("graph", kind, times=2, retry_after="1")
    delta = source.read_round(None, SELECT)
    assert len(delta.users) == 3
    assert recorder.sleeps == [1.0, 1.0]
    assert delta.requests == 2 + 2 == cloud.counts["graph"]
    assert cloud.counts[("faults", "graph", kind)] == 2


def test_long_retry_after_becomes_source_throttled_at_once(
    source: GraphSource, source_tenant: Tenant, cloud: SimCloud, recorder: Recorder
) -> None:
    add_users(source_tenant, 1)
    cloud.faults.inject("graph", "throttle", times=1, retry_after="180")
    with pytest.raises(SourceThrottled) as caught:
        source.read_round(None, SELECT)
    assert caught.value.retry_after == 180.0
    assert recorder.sleeps == []
    assert cloud.counts["graph"] == 1


def test_endless_throttling_stops_at_the_retry_budget(
    cloud: SimCloud, pair: TenantPair, resolver: SecretResolver, credentials: CredentialCache,
    source_tenant: Tenant, recorder: Recorder,
) -> None:
    add_users(source_tenant, 1)
    source = GraphSource(credentials.for_source(pair, resolver), graph_endpoint=cloud.endpoints["graph"],
                         retry=RetryPolicy(max_retries=3, max_wait_seconds=100), sleep=recorder.sleep)
    cloud.faults.inject("graph", "throttle", times=50, retry_after="2")
    with pytest.raises(SourceThrottled, match="gave up after 3 retries") as caught:
        source.read_round(None, SELECT)
    assert caught.value.retry_after == 2.0
    assert recorder.sleeps == [2.0, 2.0, 2.0]
    assert cloud.counts["graph"] == 4


def test_budget_is_per_round_in_seconds(
    cloud: SimCloud, pair: TenantPair, resolver: SecretResolver, credentials: CredentialCache,
    source_tenant: Tenant, recorder: Recorder,
) -> None:
    add_users(source_tenant, 1)
    source = GraphSource(credentials.for_source(pair, resolver), graph_endpoint=cloud.endpoints["graph"],
                         retry=RetryPolicy(max_retries=10, max_wait_seconds=25), sleep=recorder.sleep)
    cloud.faults.inject("graph", "throttle", times=3, retry_after="10")
    with pytest.raises(SourceThrottled):
        source.read_round(None, SELECT)
    assert recorder.sleeps == [10.0, 10.0]  # a third wait would pass 25 s


def test_sync_sleep_is_accepted(
    cloud: SimCloud, pair: TenantPair, resolver: SecretResolver, credentials: CredentialCache, source_tenant: Tenant
) -> None:
    waits: list[float] = []
    source = GraphSource(credentials.for_source(pair, resolver), graph_endpoint=cloud.endpoints["graph"],
                         sleep=waits.append)
    cloud.faults.inject("graph", "throttle", retry_after="0.01")
    source.read_round(None, SELECT)
    assert waits == [0.01]


# --- authentication ----------------------------------------------------------------------------------------------

def test_missing_permission_is_a_source_error(
    cloud: SimCloud, source_tenant: Tenant, target_tenant: Tenant, resolver: SecretResolver,
    credentials: CredentialCache, make_pair: Callable[..., TenantPair],
) -> None:
    client = new_guid()
    source_tenant.register_app(client, secret=SECRET, roles=[])
    pair = make_pair(source_tenant, target_tenant, source_client=client, target_client=new_guid())
    source = GraphSource(credentials.for_source(pair, resolver), graph_endpoint=cloud.endpoints["graph"])
    with pytest.raises(SourceError, match=r"HTTP 403.*User\.Read\.All") as caught:
        source.read_round(None, SELECT)
    assert not isinstance(caught.value, (SourceThrottled, DeltaTokenExpired))


def test_bad_secret_is_a_source_error_without_the_secret(
    cloud: SimCloud, source_tenant: Tenant, target_tenant: Tenant, credentials: CredentialCache,
    make_pair: Callable[..., TenantPair],
) -> None:
    client = new_guid()
    source_tenant.register_app(client, secret="the-real-one")
    pair = make_pair(source_tenant, target_tenant, source_client=client, target_client=new_guid())
    source = GraphSource(credentials.for_source(pair, SecretResolver(environ={"CTCS_SECRET_EDGE": SECRET})),
                         graph_endpoint=cloud.endpoints["graph"])
    with pytest.raises(SourceError, match="no Graph token") as caught:
        source.read_round(None, SELECT)
    assert SECRET not in str(caught.value)


def test_token_endpoint_outage_is_a_source_error(
    source: GraphSource, source_tenant: Tenant, cloud: SimCloud
) -> None:
    cloud.faults.inject("token", "token_failure", times=10)
    with pytest.raises(SourceError):
        source.read_round(None, SELECT)


def test_read_round_from_async_code(source: GraphSource, source_tenant: Tenant) -> None:
    add_users(source_tenant, 2)

    async def handler() -> int:
        return len(source.read_round(None, SELECT).users)

    assert asyncio.run(handler()) == 2


def test_unreachable_graph_is_retried_then_a_source_error(recorder: Recorder) -> None:
    class FixedToken:  # a token is to be had; the Graph host is not
        def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
            return AccessToken("token", int(time.time()) + 3600)

    source = GraphSource(FixedToken(), graph_endpoint="https://127.0.0.1:9", sleep=recorder.sleep,
                         retry=RetryPolicy(max_retries=2, max_wait_seconds=60, base_delay=1))
    with pytest.raises(SourceError, match="unreachable") as caught:
        source.read_round(None, SELECT)
    assert not isinstance(caught.value, SourceThrottled)
    assert recorder.sleeps == [1.0, 2.0]
