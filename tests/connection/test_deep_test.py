"""`pairs test ID --deep` against the simulated tenants (issue 23): every assumption ctcs makes holds against the
default (strict) simulator; a simulator switched to another behaviour (the Rate-Limit-Reset header in seconds, a
property Get-Recipient does not return) is named by its row and the CLI exits 2; `--record` writes a record with no
value of either tenant in it, and the simulator loaded with that record (`CTCS_SIM_PROFILE`) gives the same result.
The HTTP route takes `deep=true`. No probe writes to a tenant."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sim import SimCloud
from sim.profile import SimProfile
from sync.cli import main as cli
from tests.support.sim_pairs import SimPair

from .conftest import Setup

WRITES = ("New-MailContact", "Set-MailContact", "Set-Contact", "Remove-MailContact")


def with_contacts(setup: Setup, made: SimPair, n: int = 3) -> list[str]:
    """Users in the source and mail contacts in the target (one of ours, others another tool's), as after a sync."""
    ids = setup.add_users(made, n)
    for i, object_id in enumerate(ids):
        made.target.exchange.add_recipient("MailContact", f"Contact {i}", f"contact{i}@elsewhere.example",
                                           CustomAttribute15=made.pair.anchor(object_id) if i == 0 else "")
    return ids


def rows(out: str) -> dict[str, tuple[str, str]]:
    """The deep table's rows by assumption: (seen, ok) from `pairs test --deep --json`."""
    return {row["name"]: (row["seen"], row["status"]) for row in json.loads(out)["assumptions"]}


def deep_json(setup: Setup, made: SimPair, capsys: pytest.CaptureFixture[str], *extra: str) -> tuple[int, str]:
    code = cli.main(["pairs", "test", made.pair.id, "--deep", "--json", *extra], runtime=lambda: setup.rt)
    return code, capsys.readouterr().out


def test_every_assumption_holds_against_the_default_simulator(setup: Setup,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    made = setup.pair()
    with_contacts(setup, made)
    setup.cloud.reset_counts()
    code, out = deep_json(setup, made, capsys)
    found = rows(out)
    assert code == cli.EXIT_OK, [name for name, (_, status) in found.items() if status == "FAILED"]
    assert {status for _, status in found.values()} <= {"ok", "unverified"}
    for name in ("Get-Recipient properties", "Get-Contact properties", "Get-MailContact properties",
                 "filter: anchor prefix", "filter: by address", "filter: by Guid", "filter: by name",
                 "filter: combined look-up", "paging", "Rate-Limit-Reset", "Rate-Limit-Remaining",
                 "X-Concurrencycount", "users/delta page", "subscription headroom"):
        assert found[name][1] == "ok", (name, found[name])
    assert found["Rate-Limit-Reset"][0] == "iso-8601"
    assert found["filter: by address"][0] == "found the contact"
    assert not any(setup.cloud.counts[("exchange", cmdlet)] for cmdlet in WRITES), "a probe wrote to the target"

    assert cli.main(["pairs", "test", made.pair.id, "--deep"], runtime=lambda: setup.rt) == cli.EXIT_OK
    table = capsys.readouterr().out
    assert "every assumption holds" in table
    deep_part = table[table.index("target: assumptions"):]
    assert max(len(line) for line in deep_part.splitlines()) <= 80, "the deep table fits 80 columns"


def test_the_reset_header_in_seconds_is_named(setup: Setup, capsys: pytest.CaptureFixture[str]) -> None:
    made = setup.pair()
    with_contacts(setup, made)
    made.target.exchange.limits.configure(rate_limit_reset_format="seconds")
    code, out = deep_json(setup, made, capsys)
    assert code == cli.EXIT_USAGE
    failed = {name: seen for name, (seen, status) in rows(out).items() if status == "FAILED"}
    assert failed == {"Rate-Limit-Reset": "seconds"}

    assert cli.main(["pairs", "test", made.pair.id, "--deep"], runtime=lambda: setup.rt) == cli.EXIT_USAGE
    text = capsys.readouterr().out
    assert "target Rate-Limit-Reset: assumed iso-8601, seen seconds" in text and "1 assumption(s) failed" in text


@pytest.fixture
def restore_properties() -> Iterator[None]:
    from sim import exchange_org
    saved = dict(exchange_org.CMDLET_PROPERTIES)
    yield
    exchange_org.CMDLET_PROPERTIES.clear()
    exchange_org.CMDLET_PROPERTIES.update(saved)


def test_a_property_missing_from_get_recipient_is_named(setup: Setup, capsys: pytest.CaptureFixture[str],
                                                        restore_properties: None) -> None:
    from sim import exchange_org
    made = setup.pair()
    with_contacts(setup, made)
    exchange_org.CMDLET_PROPERTIES["Get-Recipient"] -= {"PrimarySmtpAddress"}
    code, out = deep_json(setup, made, capsys)
    assert code == cli.EXIT_USAGE
    failed = {name: seen for name, (seen, status) in rows(out).items() if status == "FAILED"}
    assert failed.get("Get-Recipient properties") == "missing PrimarySmtpAddress"


def tenant_values(made: SimPair) -> set[str]:
    """Every name, address and id either tenant holds, and the pair's own."""
    values = {made.pair.id, made.pair.source.tenant_id, made.pair.target.tenant_id, made.pair.source.client_id,
              made.pair.target.client_id, made.source.domain, made.target.domain}
    for user in made.source.directory.users:
        values |= {str(user.get(key)) for key in ("id", "displayName", "mail", "userPrincipalName") if user.get(key)}
    for recipient in made.target.exchange.recipients():
        values |= {str(recipient[key]) for key in ("Guid", "Name", "DisplayName", "PrimarySmtpAddress", "Alias")}
        values |= {str(value) for key, value in recipient.items() if key.startswith("CustomAttribute") and value}
    return {value.lower() for value in values if value and value != "None"}


def test_a_record_holds_no_tenant_value_and_replays_as_a_simulator_profile(
        setup: Setup, capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        restore_properties: None) -> None:
    made = setup.pair()
    ids = with_contacts(setup, made)
    record_file = tmp_path / "record.json"
    code, out = deep_json(setup, made, capsys, "--record", str(record_file))
    assert code == cli.EXIT_OK
    before = {name: status for name, (_, status) in rows(out).items()}
    text = record_file.read_text(encoding="utf-8").lower()
    leaked = sorted(value for value in tenant_values(made) | {i.lower() for i in ids} if value in text)
    assert leaked == [], f"the record holds tenant values: {leaked}"
    record: dict[str, Any] = json.loads(record_file.read_text(encoding="utf-8"))
    assert record["exchange"]["headers"]["Rate-Limit-Reset"] == "iso-8601"
    assert record["ctcs_deep_record"] == 1

    # The same record as the simulator's profile: the same result.
    monkeypatch.setenv("CTCS_SIM_PROFILE", str(record_file))
    assert SimProfile.from_environment().missing_properties == {}
    again = _replay(setup, capsys, monkeypatch)
    assert again[0] == cli.EXIT_OK and again[1] == before

    # A record of a tenant that sends seconds and leaves PrimarySmtpAddress out of Get-Recipient: both rows named.
    changed = json.loads(record_file.read_text())
    changed["exchange"]["headers"]["Rate-Limit-Reset"] = "seconds"
    changed["exchange"]["cmdlets"]["Get-Recipient"]["properties"].remove("PrimarySmtpAddress")
    record_file.write_text(json.dumps(changed))
    code, statuses = _replay(setup, capsys, monkeypatch)
    assert code == cli.EXIT_USAGE
    assert {name for name, status in statuses.items() if status == "FAILED"} == {"Rate-Limit-Reset",
                                                                                 "Get-Recipient properties"}


def _replay(setup: Setup, capsys: pytest.CaptureFixture[str],
            monkeypatch: pytest.MonkeyPatch) -> tuple[int, dict[str, str]]:
    """A fresh simulated cloud (which reads CTCS_SIM_PROFILE), a pair on it, its deep test."""
    with SimCloud.trusted() as other:
        replay = Setup(other, setup.certificate, setup.key_file, setup.host)
        made = replay.pair(f"replayed-{uuid.uuid4().hex[:8]}")
        with_contacts(replay, made)
        code, out = deep_json(replay, made, capsys)
    return code, {name: status for name, (_, status) in rows(out).items()}


def test_the_http_route_takes_deep(setup: Setup) -> None:
    made = setup.pair()
    with_contacts(setup, made)
    reply = setup.host.call_http("POST", f"/api/pairs/{made.pair.id}/test", {"deep": "true"})
    assert reply.status == 200, reply.body
    body = json.loads(reply.body)
    assert body["ok"] is True and any(row["name"] == "Rate-Limit-Reset" for row in body["assumptions"])
    made.target.exchange.limits.configure(rate_limit_reset_format="seconds")
    reply = setup.host.call_http("POST", f"/api/pairs/{made.pair.id}/test", {"deep": "true"})
    assert reply.status == 424
    plain = json.loads(setup.host.call_http("POST", f"/api/pairs/{made.pair.id}/test").body)
    assert "assumptions" not in plain


def test_the_sources_own_exchange_is_probed_when_granted(setup: Setup, capsys: pytest.CaptureFixture[str]) -> None:
    made, pair = setup.pair_with_source_exchange()
    made.source.exchange.add_recipient("UserMailbox", "Hidden Person", f"hidden@{made.source.domain}",
                                       HiddenFromAddressListsEnabled=True, ExternalDirectoryObjectId=str(uuid.uuid4()))
    code = cli.main(["pairs", "test", pair.id, "--deep", "--json"], runtime=lambda: setup.rt)
    found = {(row["side"], row["name"]): row["status"] for row in json.loads(capsys.readouterr().out)["assumptions"]}
    assert code == cli.EXIT_OK
    assert found[("source.exchange", "filter: hidden recipients")] == "ok"
    assert found[("source.exchange", "hidden recipient properties")] == "ok"
