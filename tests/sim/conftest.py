"""Fixtures for the simulator's own tests: one SimCloud per test module, trusted through the environment."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import httpx
import pytest

from sim import SimCloud, Tenant


@pytest.fixture(scope="module")
def cloud() -> Iterator[SimCloud]:
    with SimCloud.trusted() as sim_cloud:
        yield sim_cloud


@pytest.fixture(scope="module")
def tenant(cloud: SimCloud) -> Tenant:
    return cloud.add_tenant(tenant_id=str(uuid.uuid4()), domain=f"t{uuid.uuid4().hex[:8]}.onmicrosoft.com", name="Test")


@pytest.fixture(scope="module")
def http(cloud: SimCloud) -> Iterator[httpx.Client]:
    # Created after apply_client_env: httpx reads SSL_CERT_FILE when the client is built.
    with httpx.Client(timeout=10) as client:
        yield client
