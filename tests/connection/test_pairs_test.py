"""`pairs test` against the simulated tenants: a healthy pair passes every check; each failure the simulator can
produce (consent refused, Exchange.ManageAsApp missing, the Exchange role dropped, a certificate not on the app,
clock skew, a wrong secret, a recreated managed identity, a certificate missing from Key Vault, the wrong
organisation, another tool in the anchor attribute, a scope group that does not exist) is named with its cause and
fix, and the CLI exits 2."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from azure.core.exceptions import ResourceNotFoundError

from sim import make_client_certificate
from sim.tenant import RegisteredCertificate
from sync.app.admin.connection_test import ConnectionReport, check_connection
from sync.app.wiring.probe import ConnectionProbe
from sync.cli import main as cli
from sync.contract.pairs import parse_pair
from sync.identity.credentials import CredentialCache
from sync.identity.secrets import SecretResolver
from tests.support.sim_pairs import SimPair, trust_sim_federation

from .conftest import SECRET, SECRET_ENV, Setup


def failure(report: ConnectionReport) -> tuple[str, str, str, str]:
    """(side, check, cause, fix) of the one failed check."""
    [check] = report.failures
    return check.side, check.name, check.cause, check.fix


def target_app(made: SimPair) -> Any:
    return made.target.apps[made.pair.target.client_id.lower()]


def test_a_healthy_pair_passes_every_check(setup: Setup, capsys: pytest.CaptureFixture[str]) -> None:
    made = setup.pair()
    setup.add_users(made, 2)
    setup.cloud.reset_counts()
    report = check_connection(setup.rt, made.pair.id)
    assert report.ok, report.summary()
    names = [(check.side, check.name) for check in report.checks]
    assert names == [("source", "sign-in"), ("source", "permission"), ("source", "read users"),
                     ("target", "sign-in"), ("target", "permission"), ("target", "Exchange"),
                     ("target", "organisation"), ("target", "anchor attribute"), ("target", "write scope")]
    assert setup.cloud.counts["token"] == 2, "one token per side"
    assert setup.cloud.counts[("graph", "users")] == 1
    assert setup.cloud.counts[("exchange", "Get-Recipient")] == 2  # one recipient, then the anchor look-up

    assert cli.main(["pairs", "test", made.pair.id], runtime=lambda: setup.rt) == cli.EXIT_OK
    assert "all checks passed" in capsys.readouterr().out
    assert cli.main(["pairs", "test", made.pair.id, "--json"], runtime=lambda: setup.rt) == cli.EXIT_OK
    assert json.loads(capsys.readouterr().out)["ok"] is True


def test_refused_admin_consent(setup: Setup, capsys: pytest.CaptureFixture[str]) -> None:
    made = setup.pair()
    target_app(made).consented = False
    report = check_connection(setup.rt, made.pair.id)
    side, name, cause, fix = failure(report)
    assert (side, name, cause) == ("target", "sign-in", "missing admin consent")
    assert f"adminconsent?client_id={made.pair.target.client_id}" in fix and made.pair.target.tenant_id in fix
    assert report.failures[0].code == "AADSTS700016"
    assert [check.name for check in report.checks if check.side == "target"] == ["sign-in"], "no call after a failed sign-in"
    assert cli.main(["pairs", "test", made.pair.id], runtime=lambda: setup.rt) == cli.EXIT_USAGE
    out = capsys.readouterr().out
    assert "target sign-in: missing admin consent (AADSTS700016)" in out and "1 check(s) failed" in out


def test_missing_exchange_manage_as_app(setup: Setup) -> None:
    made = setup.pair()
    target_app(made).roles = ("User.Read.All",)
    side, name, cause, fix = failure(check_connection(setup.rt, made.pair.id))
    assert (side, name, cause) == ("target", "permission", "missing admin consent for Exchange.ManageAsApp")
    assert "carries no Exchange.ManageAsApp" in fix and "scripts/register-apps.sh grant target" in fix


def test_missing_graph_permission(setup: Setup) -> None:
    made = setup.pair()
    made.source.apps[made.pair.source.client_id.lower()].roles = ("Exchange.ManageAsApp",)
    side, name, cause, fix = failure(check_connection(setup.rt, made.pair.id))
    assert (side, name, cause) == ("source", "permission", "missing admin consent for User.Read.All")
    assert "scripts/register-apps.sh grant source" in fix


def test_the_exchange_role_dropped(setup: Setup) -> None:
    made = setup.pair()
    target_app(made).directory_roles = ()
    report = check_connection(setup.rt, made.pair.id)
    side, name, cause, fix = failure(report)
    assert (side, name, cause) == ("target", "call", "missing Exchange role")
    assert "Exchange Recipient Administrator" in fix and made.pair.target.client_id in fix
    assert report.failures[0].code == "HTTP 401"


def test_a_least_privilege_role_group_is_enough(setup: Setup) -> None:
    made = setup.pair()
    app = target_app(made)
    app.directory_roles = ()
    app.role_groups = (frozenset({"Mail Recipient Creation", "Mail Recipients"}),)
    assert check_connection(setup.rt, made.pair.id).ok


def test_a_certificate_not_registered_on_the_app(setup: Setup) -> None:
    made = setup.pair()
    app = target_app(made)
    app.certificates = []
    setup.cloud.reset_counts()
    report = check_connection(setup.rt, made.pair.id)
    side, name, cause, fix = failure(report)
    assert (side, name, cause) == ("target", "sign-in", "certificate not registered on the app")
    assert "az ad app credential reset" in fix and report.failures[0].code == "AADSTS700027"
    assert setup.cloud.counts[("token", "rejected")] == 1


def test_clock_skew(setup: Setup) -> None:
    made = setup.pair()
    setup.cloud.clock_skew = 20 * 60  # the authority's clock runs 20 minutes ahead of ours
    side, name, cause, fix = failure(check_connection(setup.rt, made.pair.id))
    assert (side, name, cause) == ("target", "sign-in", "expired or skewed client assertion")
    assert "NTP" in fix and "federated" in fix
    setup.cloud.clock_skew = 4 * 60  # within the five minutes Entra allows
    assert check_connection(setup.rt, made.pair.id).ok


def test_a_wrong_client_secret(setup: Setup, monkeypatch: pytest.MonkeyPatch) -> None:
    made = setup.pair()
    monkeypatch.setenv("CTCS_SECRET_CONNECTION_TEST", "not-the-secret")
    report = check_connection(setup.rt, made.pair.id)
    side, name, cause, fix = failure(report)
    assert "Certificates & secrets" in fix
    assert (side, name, cause) == ("source", "sign-in", "wrong or expired client secret")
    assert "not-the-secret" not in json.dumps(report.as_json()) and SECRET not in json.dumps(report.as_json())


def test_a_recreated_managed_identity(monkeypatch: pytest.MonkeyPatch, setup: Setup) -> None:
    trust_sim_federation(setup.cloud, monkeypatch)
    identity = setup.cloud.add_managed_identity()
    made = setup.pair(target={"credential": {"type": "managed_identity_federation",
                                             "managed_identity_client_id": identity.client_id}})
    target_app(made).rotate_subjects(identity.object_id)
    assert check_connection(setup.rt, made.pair.id).ok
    target_app(made).rotate_subjects(str(uuid.uuid4()))  # azd down + azd up: a new principal id is trusted instead
    side, name, cause, fix = failure(check_connection(setup.rt, made.pair.id))
    assert (side, name, cause) == ("target", "sign-in", "federated credential does not match the managed identity")
    assert "scripts/register-apps.sh create" in fix


def test_a_certificate_missing_from_key_vault(setup: Setup) -> None:
    made = setup.pair(target={"credential": {"type": "certificate", "certificate": "kv:fabrikam-exo-cert"}})

    class EmptyVault:
        def get_secret(self, name: str) -> Any:
            raise ResourceNotFoundError(f"(SecretNotFound) A secret with (name/id) {name} was not found in this key vault.")

    rt = setup.rt
    rt.open_probe = lambda pair: ConnectionProbe(pair, credentials=CredentialCache(), resolver=SecretResolver(
        environ={"CTCS_KEY_VAULT_URI": "https://ctcs-test.vault.azure.net", SECRET_ENV: SECRET}, secret_client_factory=lambda uri: EmptyVault()))
    side, name, cause, fix = failure(check_connection(rt, made.pair.id))
    assert (side, name, cause) == ("target", "sign-in", "certificate not found in Key Vault")
    assert "fabrikam-exo-cert" in fix and "az keyvault certificate import" in fix


def test_the_wrong_organisation(setup: Setup) -> None:
    made = setup.pair(target={"organization": "fabrikam.com"})
    made.target.exchange.add_recipient("UserMailbox", "admin", f"admin@{made.target.domain}")
    report = check_connection(setup.rt, made.pair.id)
    side, name, cause, fix = failure(report)
    assert (side, name, cause) == ("target", "organisation", "wrong organisation")
    assert made.target.domain in fix and "initial .onmicrosoft.com domain" in fix
    assert report.credentials_ok, "a definition mistake never holds a credentials quarantine"


def test_another_tool_in_the_anchor_attribute(setup: Setup) -> None:
    made = setup.pair()
    org = made.target.exchange
    for n in range(3):
        org.add_recipient("MailContact", f"legacy{n}", f"legacy{n}@partner.example", CustomAttribute15=f"galsync:{n}")
    org.add_recipient("MailContact", "other-pair", "x@partner.example", CustomAttribute15="ctcs|another-tenant|x")
    side, name, cause, fix = failure(check_connection(setup.rt, made.pair.id))
    assert (side, name, cause) == ("target", "anchor attribute", "anchor attribute used by another tool")
    assert fix.startswith("3 mail contacts hold a value in CustomAttribute15")


def test_a_scope_group_that_does_not_exist(setup: Setup) -> None:
    missing = str(uuid.uuid4())
    made = setup.pair(scope={"include_groups": [missing]})
    side, name, cause, fix = failure(check_connection(setup.rt, made.pair.id))
    assert (side, name, cause) == ("source", "scope group", "scope group not found")
    assert missing in fix


def test_pairs_add_tests_first_and_stores_only_what_passes(setup: Setup, tmp_path: Any,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    made = setup.pair(store=False)
    target_app(made).certificates = []
    path = tmp_path / "pair.json"
    path.write_text(json.dumps(made.definition))
    assert cli.main(["pairs", "add", str(path)], runtime=lambda: setup.rt) == cli.EXIT_USAGE
    assert "not stored" in capsys.readouterr().err
    assert setup.rt.stores.pairs.list() == []
    assert cli.main(["pairs", "add", str(path), "--no-test"], runtime=lambda: setup.rt) == cli.EXIT_OK
    assert [pair.id for pair in setup.rt.stores.pairs.list()] == [made.pair.id]
    target_app(made).certificates.append(RegisteredCertificate.from_pem(setup.certificate.cert_pem))
    assert cli.main(["pairs", "add", str(path), "--replace"], runtime=lambda: setup.rt) == cli.EXIT_OK


def test_the_http_route(setup: Setup) -> None:
    made = setup.pair()
    reply = setup.host.call_http("POST", f"/api/pairs/{made.pair.id}/test")
    assert reply.status == 200 and reply.json["ok"] is True
    target_app(made).consented = False
    reply = setup.host.call_http("POST", f"/api/pairs/{made.pair.id}/test")
    assert reply.status == 424 and reply.json["ok"] is False
    [failed] = [check for check in reply.json["checks"] if not check["ok"]]
    assert failed["cause"] == "missing admin consent"
    assert setup.host.call_http("POST", "/api/pairs/no-such-pair/test").status == 404


def test_a_new_certificate_is_read_fresh(setup: Setup) -> None:
    """The test never reuses the process's cached credentials: a certificate replaced on disk is what it signs with."""
    made = setup.pair()
    setup.rt.target(made.pair).find_recipients(anchor_attribute="CustomAttribute15", anchor="x", address="", name="")
    other = make_client_certificate(None, common_name="replacement")
    setup.key_file.write_bytes(other.pem_bytes)
    assert failure(check_connection(setup.rt, made.pair.id))[2] == "certificate not registered on the app"


def test_group_scoping_needs_group_member_read_all(setup: Setup) -> None:
    made = setup.pair(store=False)
    group = made.source.directory.add_group("Sales")
    pair = parse_pair({**made.definition, "scope": {"include_groups": [group]}})
    setup.rt.stores.pairs.add(pair)
    app = made.source.apps[pair.source.client_id.lower()]
    app.roles = ("User.Read.All", "Exchange.ManageAsApp")
    side, name, cause, fix = failure(check_connection(setup.rt, pair.id))
    assert (side, name, cause) == ("source", "permission", "missing admin consent for GroupMember.Read.All")
    assert "GroupMember.Read.All" in fix
    app.roles = ("User.Read.All", "GroupMember.Read.All", "Exchange.ManageAsApp")
    report = check_connection(setup.rt, pair.id)
    assert report.ok, report.summary()
    assert [check.detail for check in report.checks if check.name == "read group"] == ["group Sales"]


def test_the_sources_own_exchange_when_granted(setup: Setup) -> None:
    made, pair = setup.pair_with_source_exchange()
    report = check_connection(setup.rt, pair.id)
    assert [(c.side, c.name, c.ok) for c in report.checks if c.side == "source.exchange"] == [
        ("source.exchange", "sign-in", True), ("source.exchange", "permission", True), ("source.exchange", "Exchange", True)]
    made.source.apps[pair.source.client_id.lower()].directory_roles = ()
    side, name, cause, fix = failure(check_connection(setup.rt, pair.id))
    assert (side, name, cause) == ("source.exchange", "call", "missing Exchange role")
    assert "Global Reader" in fix


def test_the_write_scope_of_the_role_group_is_reported_as_not_checked(setup: Setup) -> None:
    """ctcs's roles cannot read role assignments: the test says the scope was not checked and how an admin checks
    it, rather than claiming a scope it never saw."""
    made = setup.pair()
    app = target_app(made)
    app.directory_roles = ()
    app.role_groups = (frozenset({"Mail Recipient Creation", "Mail Recipients"}),)
    report = check_connection(setup.rt, made.pair.id)
    [scope] = [check for check in report.checks if check.name == "write scope"]
    assert scope.side == "target" and scope.ok and not scope.credentials
    assert scope.detail.startswith("not checked") and "Get-ManagementRoleAssignment" in scope.detail
