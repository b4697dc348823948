"""Source GAL visibility end to end: Graph's showInAddressList, or the source's own Exchange when the pair grants it.
Real msgraph-sdk, azure-identity and httpx against the simulated tenants; Azurite for state."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from sim import SimCloud, Tenant
from sync.app.admin.drain import drain
from sync.app.planner.run import run_pair
from sync.app.wiring.connectors import open_source, open_source_visibility, open_target
from sync.app.wiring.runtime import Runtime
from sync.contract.pairs import TenantPair, parse_pair
from sync.contract.vocabulary import RunTrigger
from sync.identity.credentials import CredentialCache
from sync.identity.secrets import SecretResolver
from sync.state.stores import Stores
from tests.support.sim_pairs import sim_definition, sim_tenants

SECRET = "visibility-test-secret"


@pytest.fixture(scope="module")
def cloud() -> Iterator[SimCloud]:
    with SimCloud.trusted() as sim_cloud:
        yield sim_cloud


def make_pair(cloud: SimCloud, source: Tenant, target: Tenant, app: str, *, source_exchange: bool) -> TenantPair:
    exchange = {"source": {"exchange": {"organization": source.domain,
                                        "credential": {"type": "client_secret", "secret": "env:CTCS_SECRET_VIS"}}}}
    return parse_pair(sim_definition(
        cloud, source, target, pair_id="visibility-pair", secret_env="CTCS_SECRET_VIS", source_client=app,
        **(exchange if source_exchange else {}),
    ))


@pytest.fixture
def tenants(cloud: SimCloud) -> tuple[Tenant, Tenant, str]:
    made = sim_tenants(cloud, secret=SECRET)
    return made.source, made.target, made.client_id


def add_person(source: Tenant, n: int, *, graph_hidden: bool | None, exchange_hidden: bool) -> str:
    address = f"person{n}@contoso.com"
    uid = source.directory.add_user({
        "displayName": f"Person {n}", "mail": address, "userPrincipalName": address, "userType": "Member",
        "accountEnabled": True, "showInAddressList": graph_hidden is not True if graph_hidden is not None else None,
    })
    source.exchange.add_recipient("UserMailbox", f"person{n}", address, ExternalDirectoryObjectId=uid,
                                  HiddenFromAddressListsEnabled=exchange_hidden)
    return uid


def runtime(stores: Stores, pair: TenantPair) -> Runtime:
    resolver = SecretResolver(environ={"CTCS_SECRET_VIS": SECRET})
    credentials = CredentialCache()
    stores.pairs.add(pair)
    return Runtime(
        stores,
        lambda p: open_source(p, resolver, credentials=credentials),
        lambda p: open_target(p, resolver, credentials=credentials),
        lambda p: open_source_visibility(p, resolver, credentials=credentials),
    )


def synced_names(target: Tenant) -> set[str]:
    return {c["DisplayName"] for c in target.exchange.contacts()}


def test_graph_show_in_address_list_decides_without_source_exchange(
    cloud: SimCloud, stores: Stores, tenants: tuple[Tenant, Tenant, str]
) -> None:
    source, target, app = tenants
    add_person(source, 1, graph_hidden=None, exchange_hidden=False)
    add_person(source, 2, graph_hidden=True, exchange_hidden=False)
    add_person(source, 3, graph_hidden=False, exchange_hidden=True)  # Graph cannot see Exchange's flag
    rt = runtime(stores, make_pair(cloud, source, target, app, source_exchange=False))
    run_pair(rt, "visibility-pair", trigger=RunTrigger.CLI)
    drain(rt)
    assert synced_names(target) == {"Person 1", "Person 3"}


def test_source_exchange_decides_when_granted_and_hiding_later_removes(
    cloud: SimCloud, stores: Stores, tenants: tuple[Tenant, Tenant, str]
) -> None:
    source, target, app = tenants
    add_person(source, 1, graph_hidden=None, exchange_hidden=False)
    add_person(source, 2, graph_hidden=True, exchange_hidden=False)  # Graph's flag is not authoritative
    add_person(source, 3, graph_hidden=False, exchange_hidden=True)
    rt = runtime(stores, make_pair(cloud, source, target, app, source_exchange=True))
    run_pair(rt, "visibility-pair", trigger=RunTrigger.CLI)
    drain(rt)
    assert synced_names(target) == {"Person 1", "Person 2"}

    # An admin hides person 1 in the source's Exchange: no Graph change, yet the contact goes.
    mailbox = next(r for r in source.exchange.recipients() if r["Name"] == "person1")
    source.exchange.set_recipient(mailbox["Guid"], HiddenFromAddressListsEnabled=True)
    cloud.reset_counts()
    result = run_pair(rt, "visibility-pair", trigger=RunTrigger.CLI)
    drain(rt)
    assert synced_names(target) == {"Person 2"}
    assert result.plan is not None and [op.reason for op in result.plan.ops] == ["left_scope:hidden_from_gal"]
    # One listing of the hidden recipients per run (source), one ownership check before the delete (target).
    assert cloud.counts[("exchange", "Get-Recipient")] == 2
