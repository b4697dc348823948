"""Fixtures for groups-as-contacts: one simulated cloud for the package, Azurite state, and the REAL connectors
(msgraph-sdk for groups/delta and $batch, the Exchange admin API client) driven through `run_pair` and the drain.

`GroupContacts` is a pair between two fresh simulated tenants whose `objects` include groups; the source app holds
Group.Read.All (what reading group mail properties needs) beside the default roles.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from sim import SimCloud, Tenant
from sync.app.admin.drain import drain
from sync.app.planner.run import RunResult, run_pair
from sync.app.wiring.runtime import Runtime
from sync.contract.pairs import TenantPair, parse_pair
from sync.contract.vocabulary import RunTrigger
from tests.support.sim_pairs import sim_definition, sim_tenants

SECRET_ENV = "CTCS_SECRET_GROUP_CONTACTS"
SECRET = "group-contacts-test-secret"
PAIR_ID = "group-contacts"
ROLES = ("User.Read.All", "Group.Read.All", "Exchange.ManageAsApp")


@pytest.fixture(scope="package")
def cloud() -> Iterator[SimCloud]:
    with SimCloud.trusted() as sim_cloud:
        yield sim_cloud


@dataclass
class GroupContacts:
    cloud: SimCloud
    source: Tenant
    target: Tenant
    client_id: str
    rt: Runtime

    def unified(self, name: str, mail: str, **more: Any) -> str:
        return self.source.directory.add_group(
            name, mail=mail, mailEnabled=True, securityEnabled=False, groupTypes=["Unified"],
            proxyAddresses=[f"SMTP:{mail}"], mailNickname=mail.split("@")[0], visibility="Private", **more)

    def distribution(self, name: str, mail: str, **more: Any) -> str:
        return self.source.directory.add_group(name, mail=mail, mailEnabled=True, securityEnabled=False,
                                               proxyAddresses=[f"SMTP:{mail}"], **more)

    def mail_security(self, name: str, mail: str, **more: Any) -> str:
        return self.source.directory.add_group(name, mail=mail, mailEnabled=True, securityEnabled=True, **more)

    def user(self, name: str) -> str:
        return self.source.directory.add_user({"displayName": name.title(), "mail": f"{name}@{self.source.domain}",
                                               "userPrincipalName": f"{name}@{self.source.domain}"})

    def use_pair(self, *, objects: list[str], groups: dict[str, Any] | None = None, **more: Any) -> TenantPair:
        overrides: dict[str, Any] = {"objects": objects, "deletion": {"max_deletes": 500, "max_delete_percent": 100}}
        if groups is not None:
            overrides["groups"] = groups
        overrides.update(more)
        pair = parse_pair(sim_definition(self.cloud, self.source, self.target, pair_id=PAIR_ID, secret_env=SECRET_ENV,
                                         source_client=self.client_id, **overrides))
        self.rt.stores.pairs.add(pair, replace=True)
        self.rt._pairs.clear()
        return pair

    def run(self, **kwargs: Any) -> RunResult:
        result = run_pair(self.rt, PAIR_ID, trigger=RunTrigger.CLI, **kwargs)
        drain(self.rt, concurrency=8)
        return result

    def contacts(self) -> dict[str, dict[str, Any]]:
        """The target's contacts by source object id (read from the anchor)."""
        return {str(c.get("CustomAttribute15")).rsplit("|", 1)[-1]: c for c in self.target.exchange.contacts()}


@pytest.fixture
def gc(cloud: SimCloud, storage_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Iterator[GroupContacts]:
    for name, value in {**storage_env, "CTCS_GROUPS_TABLE": f"groups{uuid.uuid4().hex[:10]}", SECRET_ENV: SECRET}.items():
        monkeypatch.setenv(name, value)
    cloud.faults.clear()
    source, target, client_id, _ = sim_tenants(cloud, secret=SECRET)
    source.register_app(client_id, roles=ROLES)
    yield GroupContacts(cloud, source, target, client_id, Runtime.from_settings())
    cloud.faults.clear()
