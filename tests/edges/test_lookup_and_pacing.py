"""The Exchange edge at scale, against the simulated admin API with the real httpx and azure-identity: batched
look-ups (many keys, one Get-Recipient), concurrent creates sharing them, and calls paced under a tenant's
concurrency cap and request budget."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from sim import SimCloud, Tenant
from sync.contract.pairs import TenantPair
from sync.core.pacing import LocalPaceBoard, PaceRules
from sync.core.retry import RetryPolicy
from sync.exchange.client import AdminApiClient, CallBounds
from sync.exchange.contacts import ExchangeTarget
from sync.exchange.lookup import MAX_FILTER_CHARS, LookupKey, RecipientLookup
from sync.exchange.pacing import OrgPacer
from sync.identity.credentials import CredentialCache
from sync.identity.secrets import SecretResolver

from .conftest import SECRET, new_guid

ANCHOR = "CustomAttribute15"


@pytest.fixture
def pair(source_tenant: Tenant, target_tenant: Tenant, make_pair: Callable[..., TenantPair]) -> TenantPair:
    client = new_guid()
    target_tenant.register_app(client, secret=SECRET, roles=["Exchange.ManageAsApp"])
    return make_pair(source_tenant, target_tenant, source_client=new_guid(), target_client=client)


@pytest.fixture
def api(cloud: SimCloud, pair: TenantPair, resolver: SecretResolver,
        credentials: CredentialCache) -> Callable[..., AdminApiClient]:
    def build(**options: Any) -> AdminApiClient:
        return AdminApiClient(credentials.for_target(pair, resolver), exchange_endpoint=cloud.endpoints["exchange"],
                              tenant=pair.target.tenant_id, organization=pair.target.organization, **options)

    return build


def seed_contact(tenant: Tenant, pair: TenantPair, n: int) -> tuple[str, str]:
    """One of our contacts; returns its (anchor, address)."""
    oid = new_guid()
    anchor, address = pair.anchor(oid), f"user{n}@contoso.com"
    tenant.exchange.add_recipient("MailContact", f"ctcs-{oid}", address, **{ANCHOR: anchor})
    return anchor, address


def test_find_many_checks_many_keys_in_few_calls_and_matches_each_back(
    api: Callable[..., AdminApiClient], target_tenant: Tenant, pair: TenantPair, cloud: SimCloud
) -> None:
    ours = [seed_contact(target_tenant, pair, n) for n in range(18)]
    guest = target_tenant.exchange.add_recipient("GuestMailUser", "guest", "guest@fabrikam.com",
                                                 EmailAddresses=["smtp:old.alias@contoso.com"])
    decoy = target_tenant.exchange.add_recipient("MailContact", "decoy", "decoy@partner.example",
                                                 Company="x' -or Name -like '*")
    keys = [LookupKey(anchor=anchor, address=address) for anchor, address in ours]
    keys += [LookupKey(address="OLD.alias@contoso.com"), LookupKey(anchor=pair.anchor(new_guid()), address="no@x.com"),
             LookupKey(guid=decoy), LookupKey(name="x' -or Name -like '*")]
    lookup = RecipientLookup(api(), anchor_attribute=ANCHOR)
    cloud.reset_counts()
    found = lookup.find_many(keys)
    assert cloud.counts[("exchange", "Get-Recipient")] == 2, "22 keys: 16 in the first filter, 6 in the second"
    for key, (anchor, _) in zip(keys, ours, strict=False):
        [recipient] = found[key]
        assert recipient.anchor(ANCHOR) == anchor, "each key sees only its own contact"
    assert [r.guid for r in found[keys[18]]] == [guest], "any proxy address, case-insensitive"
    assert found[keys[19]] == [] and [r.guid for r in found[keys[20]]] == [decoy]
    assert found[keys[21]] == [], "a quote in a value stays a literal"
    assert all(len(chunk) <= 16 for chunk in lookup.chunks(keys))


def test_long_values_split_a_filter_before_it_grows_too_long(api: Callable[..., AdminApiClient]) -> None:
    lookup = RecipientLookup(api(), anchor_attribute=ANCHOR)
    keys = [LookupKey(anchor="a" * 900, address=f"{n}" + "b" * 200 + "@x.com") for n in range(10)]
    chunks = lookup.chunks(keys)
    assert len(chunks) > 1 and sum(len(c) for c in chunks) == 10
    for chunk in chunks:
        assert sum(len(clause) + 7 for key in chunk for clause in key.clauses(ANCHOR)) <= MAX_FILTER_CHARS


def test_concurrent_creates_share_one_look_up(
    api: Callable[..., AdminApiClient], target_tenant: Tenant, pair: TenantPair, cloud: SimCloud
) -> None:
    target = ExchangeTarget(api(), lookup_batch=16)
    ours = [seed_contact(target_tenant, pair, n) for n in range(5)]
    wanted = ours + [(pair.anchor(new_guid()), f"new{n}@contoso.com") for n in range(11)]
    barrier = threading.Barrier(len(wanted))
    results: dict[int, list[str]] = {}

    def look(n: int) -> None:
        barrier.wait()
        anchor, address = wanted[n]
        results[n] = [r.anchor(ANCHOR) for r in
                      target.find_recipients(anchor_attribute=ANCHOR, anchor=anchor, address=address, name="")]

    cloud.reset_counts()
    threads = [threading.Thread(target=look, args=(n,)) for n in range(len(wanted))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=20)
    assert cloud.counts[("exchange", "Get-Recipient")] == 1
    assert {n: found for n, found in results.items() if found} == {n: [wanted[n][0]] for n in range(5)}
    single = ExchangeTarget(api(), lookup_batch=1)
    single.find_recipients(anchor_attribute=ANCHOR, anchor=wanted[0][0], address="", name="")
    assert dict(single.requests) == {"Get-Recipient": 1}


def test_paced_calls_stay_under_the_tenants_concurrency_cap(
    api: Callable[..., AdminApiClient], target_tenant: Tenant, cloud: SimCloud
) -> None:
    target_tenant.exchange.limits.configure(concurrency_cap=4, latency={"*": 0.03})
    pacer = OrgPacer(target_tenant.domain, board=LocalPaceBoard(), instance="me", rules=PaceRules(maximum=10),
                     report_seconds=0.2)
    bounds = CallBounds(retry=RetryPolicy(max_retries=8, max_wait_seconds=60, base_delay=0.1, max_delay=1))
    client = api(pacer=pacer, bounds=bounds)

    def worker() -> None:
        for _ in range(25):
            client.invoke("Get-Recipient", {"Filter": "Name -eq 'nobody'"})

    threads = [threading.Thread(target=worker) for _ in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    calls, refused = cloud.counts["exchange"], cloud.counts[("limits", "concurrency")]
    assert calls - refused == 300, "every call answered in the end"
    assert refused <= 0.03 * calls, (refused, calls)
    assert pacer.limit in (3, 4) and target_tenant.exchange.limits.stats.peak_in_flight <= 4
    unpaced = api(bounds=bounds)
    cloud.reset_counts()

    def flood() -> None:
        for _ in range(10):
            unpaced.invoke("Get-Recipient", {"Filter": "Name -eq 'nobody'"})

    threads = [threading.Thread(target=flood) for _ in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert cloud.counts[("limits", "concurrency")] > 0.1 * cloud.counts["exchange"], "without pacing: many 429s"


def test_paced_calls_wait_for_the_budget_to_renew(
    api: Callable[..., AdminApiClient], target_tenant: Tenant, cloud: SimCloud
) -> None:
    target_tenant.exchange.limits.configure(budget=10, budget_window=1.0)
    pacer = OrgPacer(target_tenant.domain, board=LocalPaceBoard(), instance="me", report_seconds=60)
    client = api(pacer=pacer)
    started = time.monotonic()
    for _ in range(25):
        client.invoke("Get-Recipient", {"Filter": "Name -eq 'nobody'"})
    assert time.monotonic() - started >= 1.5, "25 calls at 10 per second take more than two windows"
    assert cloud.counts[("limits", "budget")] <= 2, "Rate-Limit-Remaining held the calls before a 429"
