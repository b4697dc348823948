"""open_source / open_target: a pair definition in, working edges out (federation on the source, PFX on the target)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from sim import SimCloud, Tenant, make_client_certificate
from sync.app.wiring.connectors import open_source, open_target
from sync.contract.pairs import TenantPair
from sync.contract.userattrs import BASE_SELECT
from sync.exchange.contacts import ExchangeTarget
from sync.graph.users import GraphSource
from sync.identity.credentials import CredentialCache, shared_credentials
from sync.identity.secrets import SecretResolver
from tests.support.sim_pairs import trust_sim_federation

from .conftest import new_guid


def test_a_pair_reads_its_source_and_writes_its_target(
    monkeypatch: pytest.MonkeyPatch, cloud: SimCloud, source_tenant: Tenant, target_tenant: Tenant, tmp_path: Path,
    make_pair: Callable[..., TenantPair],
) -> None:
    trust_sim_federation(cloud, monkeypatch)
    identity = cloud.add_managed_identity()
    graph_app, exo_app = new_guid(), new_guid()
    source_tenant.register_app(graph_app, federated_subject=identity.object_id, roles=["User.Read.All"])
    cert = make_client_certificate("pfx-pw")
    target_tenant.register_app(exo_app, certificate_pem=cert.cert_pem, roles=["Exchange.ManageAsApp"])
    (tmp_path / "exo.pfx").write_bytes(cert.pfx_bytes)
    pair = make_pair(
        source_tenant, target_tenant, source_client=graph_app, target_client=exo_app,
        source_credential={"type": "managed_identity_federation", "managed_identity_client_id": identity.client_id},
        target_credential={"type": "certificate", "certificate": "file:exo.pfx", "password": "env:CTCS_SECRET_EXO_PFX_PASSWORD"},
    )
    resolver = SecretResolver(environ={"CTCS_SECRET_EXO_PFX_PASSWORD": "pfx-pw", "CTCS_SECRET_FILE_DIR": str(tmp_path)},
                              base_dir=tmp_path)
    ids = [source_tenant.directory.add_user({"displayName": f"U{n}", "mail": f"u{n}@contoso.com"}) for n in range(3)]
    credentials = CredentialCache()

    source = open_source(pair, resolver, credentials=credentials)
    assert isinstance(source, GraphSource)
    delta = source.read_round(None, BASE_SELECT)
    assert set(delta.users) == set(ids)

    with open_target(pair, resolver, credentials=credentials) as target:
        assert isinstance(target, ExchangeTarget)
        for oid, user in delta.users.items():
            target.create({"Name": f"ctcs-{oid}", "ExternalEmailAddress": user["mail"],
                           "DisplayName": user["displayName"], "CustomAttribute15": pair.anchor(oid)})
        owned = list(target.list_owned("CustomAttribute15", pair.anchor_prefix))
    assert {r.anchor("CustomAttribute15") for r in owned} == {pair.anchor(oid) for oid in ids}
    assert len(credentials) == 2
    assert cloud.counts["exchange"] == 3 * 2 + 1


def test_connectors_share_the_process_wide_credentials(
    source_tenant: Tenant, target_tenant: Tenant, resolver: SecretResolver, make_pair: Callable[..., TenantPair],
) -> None:
    pair = make_pair(source_tenant, target_tenant, source_client=new_guid(), target_client=new_guid())
    before = len(shared_credentials)
    open_source(pair, resolver)
    open_source(pair, resolver)
    open_target(pair, resolver).close()
    assert len(shared_credentials) == before + 2
