"""Fixtures for the manager-link tests end to end: one simulated cloud for the package, fresh tenants, tables and
queues per test, and a `Runtime` made from settings, so the REAL connectors (token authority, msgraph-sdk users/delta,
Exchange admin API over httpx) do the work."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from sim import SimCloud, Tenant
from sync.app.admin.drain import DrainReport, drain
from sync.app.planner.run import RunResult, run_pair
from sync.app.wiring.runtime import Runtime
from sync.contract.pairs import TenantPair
from sync.contract.vocabulary import RunTrigger
from tests.support.sim_pairs import sim_pair

SECRET_ENV = "CTCS_SECRET_MANAGERS_TEST"
SECRET = "managers-test-secret-value"
PAIR_ID = "contoso-to-fabrikam"


@pytest.fixture(scope="package")
def cloud() -> Iterator[SimCloud]:
    with SimCloud.start() as sim_cloud:
        yield sim_cloud


@dataclass
class Linked:
    """A pair between two fresh simulated tenants and the runtime that syncs it."""

    cloud: SimCloud
    source: Tenant
    target: Tenant
    pair: TenantPair
    rt: Runtime

    def add_user(self, name: str, **fields: Any) -> str:
        mail = f"{name}@{self.source.domain}"
        return self.source.directory.add_user(
            {"displayName": name.title(), "mail": mail, "userPrincipalName": mail, **fields}
        )

    def run(self) -> tuple[RunResult, DrainReport]:
        """One timer run: plan (reading Graph), then apply every queued op (writing Exchange)."""
        result = run_pair(self.rt, self.pair.id, trigger=RunTrigger.CLI)
        return result, drain(self.rt, concurrency=2, backoff=lambda attempt: 0)

    def contact(self, user_id: str) -> dict[str, Any]:
        anchor = self.pair.anchor(user_id)
        [found] = [c for c in self.target.exchange.contacts() if c.get("CustomAttribute15") == anchor]
        return found


@pytest.fixture
def linked(cloud: SimCloud, storage_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Linked:
    env = {**storage_env, **cloud.client_env(), SECRET_ENV: SECRET}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    cloud.faults.clear()
    made = sim_pair(cloud, secret=SECRET, secret_env=SECRET_ENV, pair_id=PAIR_ID)
    rt = Runtime.from_settings(env)
    rt.stores.pairs.add(made.pair)
    return Linked(cloud, made.source, made.target, made.pair, rt)
