"""Pairs between two fresh simulated tenants, as the end-to-end test packages build them.

    made = sim_pair(cloud, secret=SECRET, secret_env=SECRET_ENV)        # source "Contoso", target "Fabrikam"
    made.source, made.target, made.client_id, made.pair, made.definition

The two tenants get random `src…/tgt….onmicrosoft.com` domains, so tests never see each other's directories. By
default one app is registered in both with the client secret, and both sides sign in with it from `env:<secret_env>`;
with `certificate=` the target gets an app of its own that signs in with that certificate instead. Anything else
of the definition (`scope`, `deletion`, `contact`, …) comes as keyword overrides, merged as `pair_definition` does.
The pieces (`add_source`, `add_target`, `sim_tenants`, `sim_definition`) serve packages that build the pair later.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, NamedTuple
from urllib.parse import urlparse

import pytest

from sim import SimCloud, Tenant
from sync.contract.pairs import TenantPair, parse_pair
from sync.identity import rooms
from tests.support.factories import merged

PAIR_ID = "contoso-to-fabrikam"


@dataclass(frozen=True)
class CertificateLogin:
    """The target signs in with a certificate: `cert_pem` is registered on its app, `reference` (`file:…`,
    `kv:…`) is what the pair's credential names."""

    cert_pem: bytes
    reference: str


class SimTenants(NamedTuple):
    source: Tenant
    target: Tenant
    client_id: str  # the app registered in the source (and in the target, unless it has an app of its own)
    target_client_id: str


class SimPair(NamedTuple):
    source: Tenant
    target: Tenant
    client_id: str
    pair: TenantPair
    definition: dict[str, Any]  # what `pair` was parsed from


def add_source(cloud: SimCloud) -> Tenant:
    return cloud.add_tenant(domain=f"src{uuid.uuid4().hex[:8]}.onmicrosoft.com", name="Contoso")


def add_target(cloud: SimCloud) -> Tenant:
    return cloud.add_tenant(domain=f"tgt{uuid.uuid4().hex[:8]}.onmicrosoft.com", name="Fabrikam")


def sim_tenants(cloud: SimCloud, *, secret: str, certificate: CertificateLogin | None = None) -> SimTenants:
    """Two fresh tenants and the app(s) the pair signs in with."""
    source, target = add_source(cloud), add_target(cloud)
    client_id = str(uuid.uuid4())
    source.register_app(client_id, secret=secret)
    if certificate is None:
        target.register_app(client_id, secret=secret)
        return SimTenants(source, target, client_id, client_id)
    target_client_id = str(uuid.uuid4())
    target.register_app(target_client_id, certificate_pem=certificate.cert_pem)
    return SimTenants(source, target, client_id, target_client_id)


def sim_definition(
    cloud: SimCloud, source: Tenant, target: Tenant, /, *, pair_id: str, secret_env: str, source_client: str,
    target_client: str | None = None, source_credential: dict[str, Any] | None = None,
    target_credential: dict[str, Any] | None = None, **overrides: Any,
) -> dict[str, Any]:
    """The definition of a pair from `source` to `target` through the cloud's endpoints, `overrides` merged in.

    The target signs in with the source's app unless `target_client` names another; a side without a credential
    signs in with the client secret from `env:<secret_env>`. The tenants are positional-only, so `source=` and
    `target=` overrides reach the definition."""
    secret = {"type": "client_secret", "secret": f"env:{secret_env}"}
    return merged({
        "id": pair_id,
        "source": {"tenant_id": source.tenant_id, "client_id": source_client, "name": "Contoso",
                   "credential": source_credential or secret, "cloud": dict(cloud.endpoints)},
        "target": {"tenant_id": target.tenant_id, "organization": target.domain,
                   "client_id": target_client or source_client, "credential": target_credential or secret,
                   "cloud": dict(cloud.endpoints)},
    }, overrides)


def sim_pair(
    cloud: SimCloud, *, secret: str, secret_env: str, pair_id: str = PAIR_ID,
    certificate: CertificateLogin | None = None, **overrides: Any,
) -> SimPair:
    """Two fresh tenants, their app(s), and the pair between them (parsed, not stored)."""
    tenants = sim_tenants(cloud, secret=secret, certificate=certificate)
    login = None if certificate is None else {"type": "certificate", "certificate": certificate.reference}
    definition = sim_definition(
        cloud, tenants.source, tenants.target, pair_id=pair_id, secret_env=secret_env,
        source_client=tenants.client_id, target_client=tenants.target_client_id,
        target_credential=login, **overrides,
    )
    return SimPair(tenants.source, tenants.target, tenants.client_id, parse_pair(definition), definition)


def trust_sim_federation(cloud: SimCloud, monkeypatch: pytest.MonkeyPatch) -> None:
    """Let managed identity federation sign in at the simulated authority: ctcs posts the managed identity's
    assertion only to the Microsoft clouds' authorities (`sync.identity.rooms.FEDERATION_AUTHORITY_HOSTS`), so a
    federation test against the simulator adds this one authority, in code, as a deployment never can."""
    authority = urlparse(cloud.endpoints["authority"]).netloc.lower()
    monkeypatch.setattr(rooms, "FEDERATION_AUTHORITY_HOSTS", rooms.FEDERATION_AUTHORITY_HOSTS | {authority})


def clean_cloud(request: pytest.FixtureRequest, *, seed: int | None = None) -> Iterator[None]:
    """Body of an autouse fixture: faults and counters are cloud-wide, so a test that uses `cloud` starts with
    none and zero (and the fault dice seeded, with `seed`) and leaves no faults behind."""
    if "cloud" not in request.fixturenames:
        yield
        return
    sim_cloud: SimCloud = request.getfixturevalue("cloud")
    sim_cloud.faults.clear()
    if seed is not None:
        sim_cloud.faults.seed(seed)
    sim_cloud.reset_counts()
    yield
    sim_cloud.faults.clear()
