"""Fixtures for the edge tests: one simulated cloud for the whole package, trusted through the environment.

The real azure-identity, msgraph-sdk and httpx talk to it over loopback HTTPS; only Key Vault is faked (there is no
emulator). Faults and request counters are cloud-wide, so each test starts with none and zero.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from sim import SimCloud, Tenant
from sync.credentials import CredentialCache
from sync.pairs import TenantPair, parse_pair
from sync.secrets import SecretResolver

SECRET = "edge-test-secret-value"


@pytest.fixture(scope="package")
def cloud() -> Iterator[SimCloud]:
    # Package scope: the environment it sets is restored before tests outside tests/edges run.
    with SimCloud.trusted() as sim_cloud:
        yield sim_cloud


@pytest.fixture(autouse=True)
def _clean_cloud(request: pytest.FixtureRequest) -> Iterator[None]:
    if "cloud" not in request.fixturenames:
        yield
        return
    sim_cloud: SimCloud = request.getfixturevalue("cloud")
    sim_cloud.faults.clear()
    sim_cloud.reset_counts()
    yield
    sim_cloud.faults.clear()


def new_guid() -> str:
    return str(uuid.uuid4())


@pytest.fixture
def source_tenant(cloud: SimCloud) -> Tenant:
    return cloud.add_tenant(domain=f"src{uuid.uuid4().hex[:8]}.onmicrosoft.com", name="Contoso")


@pytest.fixture
def target_tenant(cloud: SimCloud) -> Tenant:
    return cloud.add_tenant(domain=f"tgt{uuid.uuid4().hex[:8]}.onmicrosoft.com", name="Fabrikam")


@pytest.fixture
def resolver(tmp_path: Path) -> SecretResolver:
    return SecretResolver(environ={"EDGE_SECRET": SECRET}, base_dir=tmp_path)


@pytest.fixture
def credentials() -> CredentialCache:
    """A cache of its own per test, so one test's credentials never serve another."""
    return CredentialCache()


@pytest.fixture
def make_pair(cloud: SimCloud) -> Callable[..., TenantPair]:
    """A validated pair between two simulated tenants; credentials default to env:EDGE_SECRET on both sides."""

    def build(source: Tenant, target: Tenant, *, source_client: str, target_client: str,
              source_credential: dict[str, Any] | None = None,
              target_credential: dict[str, Any] | None = None) -> TenantPair:
        secret = {"type": "client_secret", "secret": "env:EDGE_SECRET"}
        return parse_pair({
            "id": "edge-pair",
            "source": {"tenant_id": source.tenant_id, "client_id": source_client, "name": "Contoso",
                       "credential": source_credential or secret, "cloud": dict(cloud.endpoints)},
            "target": {"tenant_id": target.tenant_id, "organization": target.domain, "client_id": target_client,
                       "credential": target_credential or secret, "cloud": dict(cloud.endpoints)},
        })

    return build
