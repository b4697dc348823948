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
from sync.contract.pairs import TenantPair, parse_pair
from sync.identity.credentials import CredentialCache
from sync.identity.secrets import SecretResolver
from tests.support.sim_pairs import add_source, add_target, clean_cloud, sim_definition

SECRET = "edge-test-secret-value"


@pytest.fixture(scope="package")
def cloud() -> Iterator[SimCloud]:
    # Package scope: the environment it sets is restored before tests outside tests/edges run.
    with SimCloud.trusted() as sim_cloud:
        yield sim_cloud


@pytest.fixture(autouse=True)
def _clean_cloud(request: pytest.FixtureRequest) -> Iterator[None]:
    yield from clean_cloud(request)


def new_guid() -> str:
    return str(uuid.uuid4())


@pytest.fixture
def source_tenant(cloud: SimCloud) -> Tenant:
    return add_source(cloud)


@pytest.fixture
def target_tenant(cloud: SimCloud) -> Tenant:
    return add_target(cloud)


@pytest.fixture
def resolver(tmp_path: Path) -> SecretResolver:
    return SecretResolver(environ={"CTCS_SECRET_EDGE": SECRET, "CTCS_SECRET_FILE_DIR": str(tmp_path)}, base_dir=tmp_path)


@pytest.fixture
def credentials() -> CredentialCache:
    """A cache of its own per test, so one test's credentials never serve another."""
    return CredentialCache()


@pytest.fixture
def make_pair(cloud: SimCloud) -> Callable[..., TenantPair]:
    """A validated pair between two simulated tenants; credentials default to env:CTCS_SECRET_EDGE on both sides."""

    def build(source: Tenant, target: Tenant, *, source_client: str, target_client: str,
              source_credential: dict[str, Any] | None = None,
              target_credential: dict[str, Any] | None = None) -> TenantPair:
        return parse_pair(sim_definition(
            cloud, source, target, pair_id="edge-pair", secret_env="CTCS_SECRET_EDGE", source_client=source_client,
            target_client=target_client, source_credential=source_credential, target_credential=target_credential,
        ))

    return build
