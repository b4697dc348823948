"""Fixtures for the group-scoping tests: one simulated cloud for the package, Azurite state, and the REAL connectors
(msgraph-sdk for users and groups, the Exchange admin API client) driven through `run_pair` and the in-process drain.

`GroupSync` is a pair between two fresh simulated tenants whose scope names groups of the source tenant.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest

from sim import SimCloud, Tenant
from sync.app.admin.drain import drain
from sync.app.planner.run import RunResult, run_pair
from sync.app.wiring.runtime import Runtime
from sync.contract.pairs import TenantPair, parse_pair
from sync.contract.vocabulary import RunTrigger
from tests.support.sim_pairs import sim_definition, sim_tenants

SECRET_ENV = "CTCS_SECRET_GROUPS_TEST"
SECRET = "groups-test-secret-value"
PAIR_ID = "groups-pair"


@pytest.fixture(scope="package")
def cloud() -> Iterator[SimCloud]:
    with SimCloud.trusted() as sim_cloud:
        yield sim_cloud


@dataclass
class GroupSync:
    cloud: SimCloud
    source: Tenant
    target: Tenant
    client_id: str
    rt: Runtime
    pair: TenantPair | None = None
    users: list[str] = field(default_factory=list)

    def add_users(self, n: int, *, start: int | None = None) -> list[str]:
        first = len(self.users) if start is None else start
        ids = [
            self.source.directory.add_user({
                "displayName": f"User {i}", "givenName": "User", "surname": str(i),
                "mail": f"user{i}@{self.source.domain}", "userPrincipalName": f"user{i}@{self.source.domain}",
                "department": "Sales",
            })
            for i in range(first, first + n)
        ]
        self.users += ids
        return ids

    def group(self, name: str, members: Sequence[str] = ()) -> str:
        group_id = self.source.directory.add_group(name)
        for member in members:
            self.source.directory.add_member(group_id, member)
        return group_id

    def use_pair(self, *, include: Sequence[str] = (), exclude: Sequence[str] = (), **scope: Any) -> TenantPair:
        self.pair = parse_pair(sim_definition(
            self.cloud, self.source, self.target, pair_id=PAIR_ID, secret_env=SECRET_ENV, source_client=self.client_id,
            scope={"include_groups": list(include), "exclude_groups": list(exclude), **scope},
            deletion={"max_deletes": 5000, "max_delete_percent": 100},
        ))
        self.rt.stores.pairs.add(self.pair, replace=True)
        self.rt._pairs.clear()
        return self.pair

    def run(self, **kwargs: Any) -> RunResult:
        """Plan (and queue) one run, then apply its ops in-process."""
        result = run_pair(self.rt, PAIR_ID, trigger=RunTrigger.CLI, **kwargs)
        drain(self.rt, concurrency=8)
        return result

    def synced(self) -> set[str]:
        """Source user ids that have a contact in the target (read from the anchors)."""
        return {str(c.get("CustomAttribute15")).rsplit("|", 1)[-1] for c in self.target.exchange.contacts()}

    def counts(self) -> dict[str, int]:
        snapshot = self.cloud.counts.snapshot()
        return {"graph": snapshot.get("graph", 0), "exchange": snapshot.get("exchange", 0),
                **{f"{k[0]}:{k[1]}": v for k, v in snapshot.items() if isinstance(k, tuple) and k[0] == "graph"}}


@pytest.fixture
def groups_env(storage_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    env = {**storage_env, "CTCS_GROUPS_TABLE": f"groups{uuid.uuid4().hex[:10]}", SECRET_ENV: SECRET}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return env


@pytest.fixture
def gs(cloud: SimCloud, groups_env: dict[str, str]) -> Iterator[GroupSync]:
    cloud.faults.clear()
    source, target, client_id, _ = sim_tenants(cloud, secret=SECRET)
    yield GroupSync(cloud, source, target, client_id, Runtime.from_settings())
    cloud.faults.clear()


@pytest.fixture
def measure(cloud: SimCloud) -> Callable[[], None]:
    """Zero the cloud's request counters (call right before the run you measure)."""
    return cloud.reset_counts
