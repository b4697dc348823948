"""Fixtures of the connection-test, quarantine and provisioning tests: one simulated cloud for the package, fresh
tables and queues per test, and a pair whose target signs in with a certificate from `file:` (as in production, a
certificate or federation: Exchange takes no secret), its source with a client secret from `env:`.

`setup.pair(...)` builds a pair between two fresh tenants and stores it; `setup.rt` is the Runtime the Functions app
would make from these settings (real connectors and connection probe).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import function_app
from sim import SimCloud, make_client_certificate
from sim.certs import ClientCertificate
from sim.host import LocalHost
from sync.app.wiring.runtime import Runtime
from sync.contract.pairs import TenantPair, parse_pair
from tests.support.sim_pairs import CertificateLogin, SimPair, clean_cloud, sim_pair

SECRET_ENV = "CTCS_SECRET_CONNECTION_TEST"
SECRET = "connection-test-secret-value"


@pytest.fixture(scope="package")
def cloud() -> Iterator[SimCloud]:
    with SimCloud.trusted() as sim_cloud:
        yield sim_cloud


@pytest.fixture(autouse=True)
def _clean_cloud(request: pytest.FixtureRequest) -> Iterator[None]:
    yield from clean_cloud(request, seed=0)
    if "cloud" in request.fixturenames:
        request.getfixturevalue("cloud").clock_skew = 0.0


@pytest.fixture(scope="package")
def certificate() -> ClientCertificate:
    return make_client_certificate(None, common_name="ctcs connection tests")


@dataclass
class Setup:
    cloud: SimCloud
    certificate: ClientCertificate
    key_file: Path
    host: LocalHost

    @property
    def rt(self) -> Runtime:
        return function_app.runtime()

    def pair(self, pair_id: str = "contoso-to-fabrikam", *, store: bool = True, **overrides: Any) -> SimPair:
        made = sim_pair(self.cloud, secret=SECRET, secret_env=SECRET_ENV, pair_id=pair_id,
                        certificate=CertificateLogin(self.certificate.cert_pem, f"file:{self.key_file}"), **overrides)
        if store:
            self.rt.stores.pairs.add(made.pair)
        return made

    def pair_with_source_exchange(self) -> tuple[SimPair, TenantPair]:
        """A stored pair granted the source's own Exchange (its organisation is the source tenant's domain)."""
        grant = {"organization": "placeholder.onmicrosoft.com",
                 "credential": {"type": "client_secret", "secret": f"env:{SECRET_ENV}"}}
        made = self.pair(store=False, source={"exchange": grant})
        definition = {**made.definition, "source": {**made.definition["source"],
                                                    "exchange": {**grant, "organization": made.source.domain}}}
        pair = parse_pair(definition)
        self.rt.stores.pairs.add(pair)
        return made, pair

    def add_users(self, made: SimPair, n: int, *, start: int = 0) -> list[str]:
        domain = made.source.domain
        return [made.source.directory.add_user({
            "displayName": f"User {i}", "givenName": "User", "surname": str(i), "mail": f"user{i}@{domain}",
            "userPrincipalName": f"user{i}@{domain}", "department": "Sales",
        }) for i in range(start, start + n)]


@pytest.fixture
def setup(cloud: SimCloud, certificate: ClientCertificate, storage_env: dict[str, str], tmp_path: Path,
          monkeypatch: pytest.MonkeyPatch) -> Iterator[Setup]:
    monkeypatch.setenv(SECRET_ENV, SECRET)
    key_file = tmp_path / f"exo-{uuid.uuid4().hex[:6]}.pem"
    key_file.write_bytes(certificate.pem_bytes)
    function_app._runtime.clear()
    yield Setup(cloud, certificate, key_file, LocalHost(visibility_timeout=0))
    function_app._runtime.clear()
