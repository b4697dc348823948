"""Fixtures for the Functions app tests: the decorated functions of `function_app`, called with real
azure.functions request objects by the local host driver (`sim.host.LocalHost`) against Azurite and a simulated
cloud, through the REAL connectors (Graph, Exchange admin API, token authority over loopback TLS).

One simulated cloud serves the whole package; each test gets fresh tables and queues (`storage_env`), fresh source
and target tenants, a fresh worker `Runtime` (function_app makes one lazily from the environment) and no faults.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

import function_app
from sim import SimCloud, Tenant
from sim.host import LocalHost
from sync.app.wiring.runtime import Runtime
from sync.contract.pairs import TenantPair
from tests.support.sim_pairs import sim_pair

SECRET_ENV = "CTCS_SECRET_FUNCTIONS_TEST"
SECRET = "functions-test-secret-value"
PAIR_ID = "contoso-to-fabrikam"


@pytest.fixture(scope="session")
def cloud() -> Iterator[SimCloud]:
    with SimCloud.start() as sim_cloud:
        yield sim_cloud


@pytest.fixture(scope="session")
def bindings() -> dict[str, dict[str, Any]]:
    """function name → its function.json, read ONCE: `app.get_functions()` raises when called a second time."""
    return {str(f.get_function_name()): json.loads(f.get_function_json()) for f in function_app.app.get_functions()}


@dataclass
class Sync:
    """A pair between two fresh simulated tenants, and the host driving the app for it."""

    cloud: SimCloud
    source: Tenant
    target: Tenant
    pair: TenantPair
    host: LocalHost

    @property
    def rt(self) -> Runtime:
        return function_app.runtime()

    def add_users(self, n: int, *, start: int = 0) -> list[str]:
        return [
            self.source.directory.add_user({
                "displayName": f"User {i}", "givenName": "User", "surname": str(i), "mail": f"user{i}@{self.source.domain}",
                "userPrincipalName": f"user{i}@{self.source.domain}", "department": "Sales", "jobTitle": "Rep",
            })
            for i in range(start, start + n)
        ]

    def anchors(self) -> set[str]:
        """The anchors of the contacts in the target (ours carry `ctcs|<source tenant>|<user id>`)."""
        return {str(c.get("CustomAttribute15")) for c in self.target.exchange.contacts()}

    def expected_anchors(self) -> set[str]:
        return {f"ctcs|{self.source.tenant_id}|{user['id']}" for user in self.source.directory.users}


@pytest.fixture
def sync(cloud: SimCloud, storage_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Iterator[Sync]:
    for name, value in {**cloud.client_env(), SECRET_ENV: SECRET}.items():
        monkeypatch.setenv(name, value)
    cloud.faults.clear()
    cloud.reset_counts()
    made = sim_pair(cloud, secret=SECRET, secret_env=SECRET_ENV, pair_id=PAIR_ID)
    function_app._runtime.clear()  # the worker's Runtime is made from this test's settings on first use
    function_app.runtime().stores.pairs.add(made.pair)
    yield Sync(cloud, made.source, made.target, made.pair, LocalHost(visibility_timeout=0))
    cloud.faults.clear()
    function_app._runtime.clear()


@pytest.fixture
def quick_backoff(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Pauses of seconds instead of 15 minutes, 1 hour and 4 hours; the worker's Runtime is made again with it."""
    monkeypatch.setenv("CTCS_QUOTA_BACKOFF_SECONDS", "2,4")
    function_app._runtime.clear()
    yield
    function_app._runtime.clear()
