"""Bad input never crashes in a loop, never widens a filter and never loses a good op: malformed or hostile pair
files and settings, malformed or oversized queue messages, and hostile source data each end in a clear error or a
clean skip with a reason."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from azure.storage.queue import QueueClient

import function_app
from sim.opath import compile_filter
from sync.cli import main as cli
from sync.errors import ConfigError

from .conftest import SyncPair, run_cli

KV_REFERENCE = "@Microsoft.KeyVault(SecretUri=https://ctcs-kv.vault.azure.net/secrets/graph-secret/)"
LITERAL_SECRET = "Zq8~literal.client.secret-value-pasted-by-mistake"


def _hostile_pair_files(sync: SyncPair) -> dict[str, tuple[str | bytes, list[str]]]:
    """name → (file content, what the error must name)."""
    good = sync.definition

    def variant(**changes: Any) -> str:
        data = json.loads(json.dumps(good))
        for path, value in changes.items():
            node = data
            *parents, leaf = path.split("__")
            for part in parents:
                node = node.setdefault(part, {})
            node[leaf] = value
        return json.dumps(data)

    return {
        "unknown keys": (variant(sourse={"x": 1}, scope__include_domain=["contoso.com"]),
                         ["sourse: unknown key", "scope.include_domain: unknown key"]),
        "wrong guids": (variant(source__tenant_id="not-a-guid", target__client_id="11111111-1111-1111-1111-11111111111Z"),
                        ["source.tenant_id: must be a GUID", "target.client_id: must be a GUID"]),
        "huge values": (variant(id="a" * 10_000, contact__display_name="{displayName}" * 100_000,
                                source__name="n" * 1_000_000), ["id:", "contact.display_name:", "source.name:"]),
        "literal secret": (variant(source__credential={"type": "client_secret", "secret": LITERAL_SECRET}),
                           ["source.credential.secret: must be a secret reference"]),
        "key vault reference as secret": (variant(source__credential={"type": "client_secret", "secret": KV_REFERENCE}),
                                          ["source.credential.secret: must be a secret reference"]),
        "not json": ("{'id': 'x',}", ["not valid JSON at line 1"]),
        "array": ("[]", ["(top level): must be a JSON object"]),
        "deeply nested": ("[" * 100_000 + "]" * 100_000, ["nested too deeply"]),
        "not utf-8": (b"\xff\xfe{\x00", ["not UTF-8 text"]),
    }


def test_malformed_and_hostile_pair_files_are_refused_with_every_problem_named(
    sync: SyncPair, tmp_path: Path, capsys: pytest.CaptureFixture[str], record: Callable[..., None]
) -> None:
    refused = 0
    for name, (content, expected) in _hostile_pair_files(sync).items():
        path = tmp_path / f"{name.replace(' ', '-')}.json"
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
        code = cli.main(["pairs", "add", str(path), "--replace"], runtime=lambda: sync.rt)
        out, err = capsys.readouterr()
        assert code == cli.EXIT_USAGE, (name, out, err)
        assert err.startswith("error: ") and "Traceback" not in err, (name, err)
        for text in expected:
            assert text in err, (name, text, err)
        assert LITERAL_SECRET not in err and "ctcs-kv.vault" not in err, "a refused secret is never echoed"
        assert len(err) < 2_000, f"{name}: the error quotes the huge value back ({len(err)} characters)"
        refused += 1
    assert [pair.to_json() for pair in sync.rt.stores.pairs.list()] == [sync.pair.to_json()], "nothing was stored"
    record(files=refused, refused=refused, exit_code=cli.EXIT_USAGE)


def test_an_unresolved_key_vault_reference_in_a_setting_stops_with_a_clear_error(
    sync: SyncPair, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CTCS_OPS_QUEUE", KV_REFERENCE)
    result = run_cli("status")
    assert result.returncode == cli.EXIT_USAGE and "Traceback" not in result.stderr
    assert "app setting CTCS_OPS_QUEUE still holds an unresolved Key Vault reference" in result.stderr
    function_app._runtime.clear()
    with pytest.raises(ConfigError, match="unresolved Key Vault reference"):
        function_app.runtime()
    function_app._runtime.clear()


def test_a_pair_whose_secret_is_an_unresolved_key_vault_reference_fails_alone_and_visibly(
    make_sync: Callable[..., SyncPair], monkeypatch: pytest.MonkeyPatch, record: Callable[..., None]
) -> None:
    good = make_sync()
    bad = make_sync("broken-secret", source={"credential": {"type": "client_secret", "secret": "env:CTCS_SECRET_BROKEN"}})
    monkeypatch.setenv("CTCS_SECRET_BROKEN", KV_REFERENCE)
    good.add_users(3)
    bad.add_users(3)

    for _ in range(3):  # timer after timer: the bad pair is quarantined once (credentials), the good one carries on
        good.sync()
    runs = good.rt.stores.runs.recent("broken-secret")
    assert [run.outcome for run in runs] == ["quarantined"], "quarantined by the first run, not read again"
    state = good.rt.stores.pair_state.get("broken-secret")
    assert state.credentials_quarantined and state.quarantine_reason.startswith("source: secret not available")
    assert "unresolved Key Vault reference" in runs[0].error and "env:CTCS_SECRET_BROKEN" in runs[0].error
    assert KV_REFERENCE not in runs[0].error and KV_REFERENCE not in state.quarantine_reason
    assert state.delta_link == ""
    assert bad.ours() == [] and good.rt.stores.ops.approximate_count() == 0
    good.assert_in_step()
    record(bad_pair_runs=[run.outcome.value for run in runs], good_pair_contacts=len(good.ours()))


def test_malformed_and_oversized_queue_messages_are_set_aside_once_and_good_ops_still_apply(
    sync: SyncPair, record: Callable[..., None]
) -> None:
    sync.add_users(2)
    sync.plan()
    good = sync.take_queued()
    op = json.loads(good[0])
    bad = [
        "not json at all",
        "[]",
        '{"schema": 2}',
        json.dumps({**op, "extra": 1}),
        json.dumps({**op, "source_id": "x' -or Name -like '*"}),
        json.dumps({**op, "pair_id": "../../other-pair"}),
        json.dumps({**op, "version": -1}),
        json.dumps({**op, "kind": "explode"}),
        json.dumps({**{k: v for k, v in op.items() if k != "contact"}}),
        json.dumps({**op, "contact": {**op["contact"], "Notes": "n" * 48_000}}),  # oversized
        "[" * 20_000 + "]" * 20_000,  # nests deeper than json can read
    ]
    sync.send(bad + good)
    raw = QueueClient.from_connection_string(sync.storage_env["AzureWebJobsStorage"], sync.rt.stores.ops.name)
    raw.send_message("%%% not base64 %%%")  # the host cannot even decode it

    report = sync.drain(deadline_seconds=60)

    kept = [m.content for m in sync.rt.stores.failed.peek_all()]
    assert sorted(kept) == sorted(bad), "every bad op message is kept once, as it came, never retried"
    assert report.completed == len(bad) + len(good) and report.poison_handled == len(bad)
    # The one the host cannot decode never reaches ctcs: the host retries it maxDequeueCount times on each queue
    # and parks it in <queue>-poison-poison. Bounded, and nothing else is held up by it.
    assert report.failed_attempts == 5 and report.poisoned == 2 and report.poison_failed == 5
    parked = QueueClient.from_connection_string(sync.storage_env["AzureWebJobsStorage"],
                                                f"{sync.rt.stores.ops.name}-poison-poison")
    assert [m.content for m in parked.peek_messages()] == ["%%% not base64 %%%"]
    assert sync.rt.stores.poison.approximate_count() == 0 and sync.rt.stores.ops.approximate_count() == 0
    sync.assert_in_step()
    record(bad_messages=len(bad) + 1, set_aside_at_first_delivery=len(bad), kept_for_replay=len(kept),
           undecodable="host: 5 + 5 attempts, then -poison-poison", good_ops_applied=len(good))


HOSTILE_USERS: list[dict[str, Any]] = [
    {"displayName": "Seán O'Brien \"The Boss\"", "surname": "O'Brien", "mail": "sean.o'brien@{domain}"},
    {"displayName": "x' -or Name -like '*", "mail": "x'-or-name-like'*@{domain}",
     "companyName": "Contoso' -or CustomAttribute15 -like '*"},
    {"displayName": "Long " + "L" * 10_000, "jobTitle": "T" * 10_000, "department": "D" * 500, "mail": "long@{domain}"},
    {"displayName": "Tab\tNew\nLine\x00Null\x1b[31mRed", "department": "R&D\r\n", "mail": "control@{domain}"},
    {"displayName": "山田 太郎", "givenName": "太郎", "surname": "山田", "city": "東京", "mail": "yamada@{domain}"},
    {"displayName": "Иван Петров", "mail": "ivan@{domain}", "country": "Narnia"},
    {"displayName": "محمد العلي", "mail": "mohammed@{domain}", "country": "DEU"},
    {"displayName": "Proxy Only", "mail": None, "proxyAddresses": ["smtp:alias@{domain}", "SMTP:proxy.only@{domain}"]},
    {"displayName": "No Mail", "mail": None},
    {"displayName": "Star *", "mail": "star*@{domain}", "officeLocation": "*"},
]


def test_hostile_source_data_syncs_exactly_and_never_widens_a_filter(sync: SyncPair, record: Callable[..., None]) -> None:
    domain = sync.source.domain
    for user in HOSTILE_USERS:
        filled = {k: (v.replace("{domain}", domain) if isinstance(v, str) else v) for k, v in user.items()}
        if "proxyAddresses" in filled:
            filled["proxyAddresses"] = [a.replace("{domain}", domain) for a in filled["proxyAddresses"]]
        sync.add_user("Hostile User", **filled)
    for n, name in enumerate(["*", "x", "O'Brien", "ctcs", "Name"]):  # recipients a widened filter would match
        sync.target.exchange.add_recipient("MailContact", name, f"decoy{n}@partner.example", DisplayName=name,
                                           Company="Contoso' -or CustomAttribute15 -like '*")
    sync.target.exchange.add_recipient("UserMailbox", "someone", f"someone@{sync.target.domain}")
    before = sync.unowned()
    sync.record_cmdlets()

    report = sync.sync()

    assert report.failed_attempts == 0 and report.poisoned == 0
    run = sync.last_run()
    assert run.counts["create"] == 9 and run.counts["skipped_no_mail"] == 1
    compared = sync.assert_in_step()
    long = next(c for c in sync.ours() if c["DisplayName"].startswith("Long "))
    assert len(long["DisplayName"]) == 256 and len(long["Title"]) == 128
    assert {c["CountryOrRegion"] for c in sync.ours() if c["DisplayName"] in ("Иван Петров", "محمد العلي")} == {None, "Germany"}
    sync.assert_untouched(before)

    everyone = sync.target.exchange.recipients(include_soft_deleted=True)
    ours = {c["Guid"] for c in sync.ours()}
    # The planner's check for contacts of a lost state (the pair's state is empty on its first run) lists by anchor
    # prefix: read now it finds exactly ctcs's own contacts.
    prefix = f"CustomAttribute15 -like '{sync.pair.anchor_prefix}*'"
    probes = [params for cmdlet, params, _ in sync.calls if params.get("Filter") == prefix]
    assert len(probes) == 1 and {r["Guid"] for r in everyone if compile_filter(prefix)(r)} == ours
    filters = [(cmdlet, params["Filter"]) for cmdlet, params, _ in sync.calls if "Filter" in params
               and params["Filter"] != prefix]
    assert 1 <= len(filters) <= 9, "the creates' look-ups may share a filter"
    matched: set[str] = set()
    for cmdlet, text in filters:
        matches = [r for r in everyone if compile_filter(text)(r)]
        # Read now, each filter finds only contacts whose own name is in it: no decoy, no widened clause.
        assert matches and all(r["Guid"] in ours and r["Name"] in text for r in matches), (
            cmdlet, text, [m["Name"] for m in matches])
        matched |= {r["Guid"] for r in matches}
    assert matched == ours and len(ours) == 9
    assert all(answered == 0 for cmdlet, _, answered in sync.calls if cmdlet == "Get-Recipient")
    record(users=len(HOSTILE_USERS), contacts=compared, skipped={"no_mail": 1}, filters_checked=len(filters),
           filter_matches="only the users' own contacts", truncated="DisplayName 256, Title 128")
