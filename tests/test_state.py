"""The tables on Azurite: pairs, pair state (lease, quarantine, deltaLink), contact rows with claims, runs."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from sync.contract.ops import ContactOp, OpKind
from sync.contract.vocabulary import ContactStatus
from sync.errors import ConfigError, LeaseHeld, PairNotFound, PairValidationError
from sync.settings import load_local_settings
from sync.state.contacts import ClaimLost, RowUpdate
from sync.state.runs import RunRecord
from sync.state.stores import Stores
from tests.support.factories import make_pair, pair_definition


def test_pairs_add_get_list_enable_remove(stores: Stores) -> None:
    pair = make_pair()
    assert stores.pairs.add(pair) is False
    assert stores.pairs.get(pair.id).to_json() == pair.to_json() and stores.pairs.get(pair.id).generation
    assert [p.id for p in stores.pairs.list()] == [pair.id]
    assert stores.pairs.set_enabled(pair.id, False).enabled is False
    assert stores.pairs.get(pair.id).enabled is False
    stores.pairs.remove(pair.id)
    with pytest.raises(PairNotFound):
        stores.pairs.get(pair.id)


def test_the_table_holds_references_never_values(stores: Stores) -> None:
    stores.pairs.add(make_pair())
    [row] = stores.pairs.table.query_entities("PartitionKey eq 'pair'")  # beside it, only the tenants' claim
    assert "env:CTCS_SECRET_CONTOSO_GRAPH" in row["definition"] and "kv:fabrikam-exo-cert" in row["definition"]


def test_same_id_needs_replace(stores: Stores) -> None:
    stores.pairs.add(make_pair())
    with pytest.raises(PairValidationError, match="already exists"):
        stores.pairs.add(make_pair())
    assert stores.pairs.add(make_pair(enabled=False), replace=True) is True


def test_two_pairs_for_the_same_tenants_are_refused(stores: Stores) -> None:
    stores.pairs.add(make_pair("first-pair"))
    with pytest.raises(PairValidationError, match="already syncs this source tenant into this target tenant"):
        stores.pairs.add(make_pair("second-pair"))
    other_target = pair_definition("third-pair")
    other_target["target"]["tenant_id"] = "99999999-9999-9999-9999-999999999999"
    from sync.contract.pairs import parse_pair

    stores.pairs.add(parse_pair(other_target))


def test_lease_is_exclusive_until_released_or_expired(stores: Stores) -> None:
    state = stores.pair_state
    state.acquire_lease("p1", "run-a", 600)
    with pytest.raises(LeaseHeld):
        state.acquire_lease("p1", "run-b", 600)
    state.release_lease("p1", "run-a")
    state.acquire_lease("p1", "run-b", 600)
    later = datetime.now(UTC) + timedelta(seconds=601)
    state.acquire_lease("p1", "run-c", 600, now=later)  # run-b crashed: its lease ran out
    assert state.get("p1").lease_owner == "run-c"


def test_quarantine_and_delta_link(stores: Stores) -> None:
    state = stores.pair_state
    state.record_run("p1", run_id="r1", outcome="planned", delta_link="https://graph/delta?$deltatoken=abc")
    state.quarantine("p1", "plan deletes 60 of 100 contacts")
    status = state.get("p1")
    assert status.quarantined and status.delta_link.endswith("abc")
    state.record_run("p1", run_id="r2", outcome="quarantined", delta_link=None)
    assert state.get("p1").delta_link.endswith("abc")  # a stopped run keeps the old link
    state.release_quarantine("p1")
    state.request_full_round("p1")
    status = state.get("p1")
    assert not status.quarantined and status.delta_link == "" and status.force_full


def test_contact_claims_are_etag_guarded(stores: Stores) -> None:
    contacts = stores.contacts
    row = contacts.get("p1", "u1")
    assert row.etag is None
    claimed = contacts.claim(row, version=5, seconds=60)
    stale_copy = contacts.get("p1", "u1")
    contacts.commit(claimed, RowUpdate(ContactStatus.OK, 5, "h", "g", {"A": 1}), op="create", run_id="r")
    with pytest.raises(ClaimLost):
        contacts.claim(contacts.get("p1", "u1").__class__("p1", "u1"), version=6, seconds=60)  # create over existing
    with pytest.raises(ClaimLost):
        contacts.commit(stale_copy, RowUpdate(ContactStatus.OK, 4, "x", "g", None), op="update", run_id="r")
    row = contacts.get("p1", "u1")
    assert (row.status, row.version, row.hash, row.applied, row.claim_version) == ("ok", 5, "h", {"A": 1}, 0)
    assert contacts.summaries("p1")["u1"].version == 5


def test_runs_are_listed_newest_first(stores: Stores) -> None:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    for minute in range(3):
        stores.runs.save(RunRecord("p1", f"r{minute}", "timer", start + timedelta(minutes=minute), outcome="planned",
                                   counts={"create": minute}))
    assert [run.run_id for run in stores.runs.recent("p1", limit=2)] == ["r2", "r1"]
    assert stores.runs.recent("p1")[0].counts == {"create": 2}


def test_local_settings_fill_only_unset_variables(tmp_path: Path) -> None:
    path = tmp_path / "local.settings.json"
    path.write_text(json.dumps({"IsEncrypted": False, "Values": {"A_SET": "file", "B_UNSET": "file", "N": 3}}))
    environ = {"A_SET": "env"}
    assert load_local_settings(path, environ) == ["B_UNSET"]
    assert environ == {"A_SET": "env", "B_UNSET": "file"}
    assert load_local_settings(tmp_path / "missing.json", environ) == []
    path.write_text("{oops")
    with pytest.raises(ConfigError, match=r"not a valid local\.settings\.json"):
        load_local_settings(path, environ)


def test_ops_never_expire_on_the_queue(stores: Stores) -> None:
    """A queue's default time-to-live is 7 days: an op sent with it would vanish if the app were stopped longer."""
    stores.ops.send_text('{"schema": 1}')
    stores.failed.send_text('{"schema": 1}')
    for queue in (stores.ops, stores.failed):
        [message] = list(queue.peek_all())
        assert message.expires_on is not None and message.expires_on.year == 9999


def test_a_delivery_note_never_breaks_the_claim_of_the_op_being_applied(stores: Stores) -> None:
    """Another delivery that fails (RowBusy, say) notes its cause while the holder applies; the holder still commits."""
    contacts = stores.contacts
    claimed = contacts.claim(contacts.get("p1", "u1"), version=7, seconds=60)
    contacts.note_delivery_error("p1", "u1", 8, "RowBusy: another op (version 7) is applying to this user")
    contacts.commit(claimed, RowUpdate(ContactStatus.OK, 7, "h", "g", {"A": 1}), op="create", run_id="r")
    assert contacts.get("p1", "u1").status == "ok"
    assert contacts.delivery_error("p1", "u1", 8).startswith("RowBusy")
    assert contacts.delivery_error("p1", "u1", 7) == "", "a note speaks only for the op version that wrote it"
    assert contacts.status_counts("p1") == {"ok": 1}, "notes are not rows"
    assert contacts.forget_pair("p1") == 1 and contacts.delivery_error("p1", "u1", 8) == ""


def test_the_removal_window_follows_the_tenants_not_the_pair_id(stores: Stores) -> None:
    """A pair added again for the same tenants (any id) inherits the gate's window; an id reused for other tenants
    starts with an empty one (its quarantine must not come from the old pair's removals)."""
    pair = make_pair("wave-pair")
    hides = [ContactOp(pair.id, "run-1", OpKind.HIDE, f"00000000-0000-0000-0000-{n:012d}", 1, "left scope")
             for n in range(7)]
    assert stores.removals.record(pair, hides) == 7
    renamed = make_pair("wave-pair-again")  # same source and target tenants, another id
    assert stores.removals.window(renamed, 24).removed == 7
    other_tenants = make_pair("wave-pair", target={"tenant_id": "99999999-9999-9999-9999-999999999999"})
    assert stores.removals.window(other_tenants, 24).removed == 0
    stores.removals.forget(renamed)
    assert stores.removals.window(pair, 24).removed == 0
