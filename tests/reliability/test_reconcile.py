"""Reconcile rounds (issue 13): what happens in the target behind ctcs's back is repaired, through the real
clients against the simulated tenants and Azurite. Each scenario ends with the target equal to the desired contacts
and every contact ctcs does not own exactly as it was."""

from __future__ import annotations

import time
import uuid
from typing import Any

from sync.app.planner.reconcile import preview_reconcile, reconcile_pair
from sync.contract.vocabulary import RunOutcome, RunTrigger

from .conftest import SyncPair, exchange_counts


def _plant_unowned(sync: SyncPair) -> dict[str, dict[str, Any]]:
    """Contacts ctcs must never change: one without an anchor, one with another pair's anchor, one with another
    tool's value in the anchor attribute."""
    attribute = sync.pair.contact.anchor_attribute
    exchange = sync.target.exchange
    exchange.add_recipient("MailContact", "partner-contact", "someone@partner.example", Title="Partner")
    exchange.add_recipient("MailContact", "other-pair", "other@partner.example",
                           **{attribute: f"ctcs|{uuid.uuid4()}|{uuid.uuid4()}"})
    exchange.add_recipient("MailContact", "other-tool", "tool@partner.example", **{attribute: "galsync:1234"})
    return sync.unowned()


def _guid(sync: SyncPair, user: str) -> str:
    (contact,) = sync.contacts_of(user)
    return str(contact["Guid"])


def _reconcile(sync: SyncPair, **options: Any) -> Any:
    result, findings = reconcile_pair(sync.rt, sync.pair.id, **options)
    sync.drain()
    return result, findings


def test_drift_visibility_and_hand_deletions_are_repaired_with_only_the_differing_parameters(sync: SyncPair) -> None:
    users = sync.add_users(6, mobilePhone="+1 555 0100")
    sync.sync()
    before = _plant_unowned(sync)
    exchange = sync.target.exchange
    exchange.set_recipient(_guid(sync, users[0]), Title="Hacked", DisplayName="Someone Else")  # edited by hand
    exchange.set_recipient(_guid(sync, users[1]), HiddenFromAddressListsEnabled=True)  # hidden by hand
    exchange.run("Remove-MailContact", {"Identity": _guid(sync, users[2])})  # deleted by hand
    # A parameter the listing does not return, changed by hand: Exchange's WhenChanged tells the reconcile to read it.
    later = time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(time.time() + 600))
    exchange.set_recipient(_guid(sync, users[3]), MobilePhone="+1 555 9999", WhenChanged=later)
    assert len(sync.mismatches()) >= 4

    preview = preview_reconcile(sync.rt, sync.pair.id)
    assert sorted(preview.comparison.drifted) == sorted([*users[0:2], users[3]])
    assert preview.deleted_by_hand == [users[2]]
    assert len(sync.mismatches()) >= 4, "the dry run writes nothing"

    sync.record_cmdlets()
    result, _ = _reconcile(sync)

    sync.assert_in_step()
    sync.assert_untouched(before)
    run = result.run
    assert run.trigger is RunTrigger.RECONCILE and run.full
    assert (run.counts["drift_repaired"], run.counts["recreated"], run.counts["orphans_removed"]) == (3, 1, 0)
    sets = [(cmdlet, sorted(set(params) - {"Identity"})) for cmdlet, params, _ in sync.calls if cmdlet.startswith("Set-")]
    assert ("Set-MailContact", ["DisplayName"]) in sets and ("Set-Contact", ["Title"]) in sets
    assert ("Set-MailContact", ["HiddenFromAddressListsEnabled"]) in sets and ("Set-Contact", ["MobilePhone"]) in sets
    assert [c for c, _, _ in sync.calls].count("New-MailContact") == 1, "only the contact deleted by hand"
    rows = sync.rows()
    assert "changed by hand (DisplayName, Title)" in rows[users[0]].repair and rows[users[0]].repaired_at
    assert rows[users[2]].repair == "deleted by hand; created again"


def test_an_idle_reconcile_lists_the_target_and_writes_nothing(sync: SyncPair) -> None:
    sync.add_users(25)
    sync.sync()
    sync.target.exchange.page_size = 10
    sync.cloud.reset_counts()

    result, findings = _reconcile(sync)

    assert result.outcome is RunOutcome.NO_CHANGES and findings.comparison.changes == 0
    assert exchange_counts(sync.cloud) == {"Get-Recipient": 3}, "25 contacts, 10 a page, no other call"
    assert all(result.run.counts[kind] == 0 for kind in ("drift_repaired", "recreated", "rows_rebuilt"))
    status = sync.rt.stores.pair_state.get(sync.pair.id)
    assert status.reconcile_run_id == result.run.run_id and status.reconcile_due_at > status.reconcile_at


def test_lost_state_orphans_and_a_duplicate_are_repaired_without_creating_anything(sync: SyncPair) -> None:
    users = sync.add_users(30)
    sync.sync()
    before = _plant_unowned(sync)
    leavers = users[:2]
    for user in leavers:  # their contacts become orphans: the state that would have removed them is lost below
        sync.source.directory.delete_user(user)
    attribute = sync.pair.contact.anchor_attribute
    duplicate = sync.target.exchange.add_recipient(
        "MailContact", "ctcs-copy", "copy@contoso.example", **{attribute: sync.pair.anchor(users[5])})
    assert sync.rt.stores.contacts.forget_pair(sync.pair.id) == 30  # the storage account is lost
    sync.rt.stores.pair_state.forget(sync.pair.id)
    sync.record_cmdlets()

    result, _ = _reconcile(sync)

    sync.assert_in_step()
    sync.assert_untouched(before)
    assert sync.target.exchange.get(duplicate) is None
    cmdlets = [c for c, _, _ in sync.calls]
    assert cmdlets.count("New-MailContact") == 0
    assert cmdlets.count("Remove-MailContact") == 3, "two orphans and the duplicate"
    counts = result.run.counts
    assert (counts["rows_rebuilt"], counts["orphans_removed"], counts["duplicates_removed"]) == (30, 2, 1)
    assert not [c for c in cmdlets if c.startswith("Set-")], "rebuilt rows hold what the contacts hold: nothing to set"


def test_an_orphan_sweep_beyond_the_safety_gate_quarantines_the_pair(make_sync: Any) -> None:
    sync: SyncPair = make_sync(deletion={"max_deletes": 5})
    sync.add_users(4)
    sync.sync()
    attribute = sync.pair.contact.anchor_attribute
    for n in range(8):  # contacts of users this source never had (or lost with the state)
        sync.target.exchange.add_recipient("MailContact", f"ctcs-ghost-{n}", f"ghost{n}@contoso.example",
                                           **{attribute: sync.pair.anchor(str(uuid.uuid4()))})
    ours_before = len(sync.ours())

    result, _ = _reconcile(sync)

    assert result.outcome is RunOutcome.QUARANTINED and "max_deletes" in result.quarantine_reason
    assert len(sync.ours()) == ours_before, "nothing removed"
    assert sync.rt.stores.pair_state.get(sync.pair.id).gate_quarantined



def test_a_contact_whose_anchor_was_cleared_or_overwritten_is_released_and_never_written_again(sync: SyncPair) -> None:
    users = sync.add_users(6)
    sync.sync()
    attribute = sync.pair.contact.anchor_attribute
    exchange, directory = sync.target.exchange, sync.source.directory
    cleared, overwritten = _guid(sync, users[0]), _guid(sync, users[1])
    exchange.set_recipient(cleared, **{attribute: ""})  # an admin takes the contact over
    exchange.set_recipient(overwritten, **{attribute: "galsync:42"})  # another tool claims it
    taken = {guid: exchange.get(guid) for guid in (cleared, overwritten)}
    directory.update_user(users[0], jobTitle="Director")
    directory.update_user(users[1], department="Legal")
    directory.update_user(users[2], jobTitle="Lead")  # an ordinary update beside them
    sync.cloud.reset_counts()

    sync.sync()  # the worker checks ownership before it writes: one shared look-up, not one per op

    rows = sync.rows()
    assert rows[users[0]].status == "released" and "was cleared" in rows[users[0]].last_error
    assert rows[users[1]].status == "released" and "another value" in rows[users[1]].last_error
    assert {guid: exchange.get(guid) for guid in taken} == taken, "never written"
    counts = exchange_counts(sync.cloud)
    assert counts.get("Get-Recipient", 0) <= 2 and counts.get("Set-Contact") == 1, counts
    problems = sync.host.call_http("GET", f"/api/pairs/{sync.pair.id}").json["status"]["problems"]
    assert {(p["source_id"], p["status"]) for p in problems} == {(users[0], "released"), (users[1], "released")}

    for user in users[:2]:  # the users leave: their released contacts stay
        directory.delete_user(user)
    sync.sync()
    result, _ = _reconcile(sync)
    assert {guid: exchange.get(guid) for guid in taken} == taken
    assert result.run.counts["orphans_removed"] == 0 and sync.rows()[users[0]].status == "released"
    sync.assert_in_step(check_state=False)


def test_swapped_addresses_and_a_chain_of_moves_complete_in_the_run_that_sees_them(sync: SyncPair) -> None:
    users = sync.add_users(6)
    sync.sync()
    before = _plant_unowned(sync)
    directory = sync.source.directory
    mail = {user: str(directory.get_user(user)["mail"]) for user in users}  # type: ignore[index]
    # A swap, with another change riding along, and a chain: users[2] takes users[3]'s address, users[3] takes
    # users[4]'s, users[4] gets a new one.
    directory.update_user(users[0], mail=mail[users[1]], jobTitle="Swapped")
    directory.update_user(users[1], mail=mail[users[0]])
    directory.update_user(users[2], mail=mail[users[3]])
    directory.update_user(users[3], mail=mail[users[4]])
    directory.update_user(users[4], mail=f"fresh.{mail[users[4]]}")

    sync.sync()

    sync.assert_in_step()
    sync.assert_untouched(before)
    assert sync.contacts_of(users[0])[0]["Title"] == "Swapped"
    assert {row.status for row in sync.rows().values()} == {"ok"}


def test_a_new_hire_takes_the_address_a_hidden_leaver_still_holds(make_sync: Any) -> None:
    sync: SyncPair = make_sync(deletion={"mode": "hide"})
    users = sync.add_users(3)
    sync.sync()
    leaver_mail = str(sync.source.directory.get_user(users[0])["mail"])  # type: ignore[index]
    sync.source.directory.delete_user(users[0])
    sync.sync()
    assert sync.rows()[users[0]].status == "hidden"
    hire = sync.add_user("New Hire", mail=leaver_mail, userPrincipalName=f"new.hire@{sync.source.domain}")

    sync.sync()

    assert sync.rows()[hire].status == "ok" and sync.contacts_of(hire)[0]["PrimarySmtpAddress"] == leaver_mail
    [hidden] = sync.contacts_of(users[0])
    assert hidden["HiddenFromAddressListsEnabled"] is True and hidden["PrimarySmtpAddress"] != leaver_mail


def test_a_hidden_leaver_shown_again_by_hand_is_hidden_again(make_sync: Any) -> None:
    sync: SyncPair = make_sync(deletion={"mode": "hide"})
    users = sync.add_users(12)
    sync.sync()
    sync.source.directory.delete_user(users[0])
    sync.sync()
    [hidden] = sync.contacts_of(users[0])
    assert hidden["HiddenFromAddressListsEnabled"] is True
    sync.target.exchange.set_recipient(str(hidden["Guid"]), HiddenFromAddressListsEnabled=False)  # shown by hand

    result, _ = _reconcile(sync)

    [again] = sync.contacts_of(users[0])
    assert again["HiddenFromAddressListsEnabled"] is True and sync.rows()[users[0]].status == "hidden"
    assert result.run.counts["drift_repaired"] == 1
    leaver = sync.pair.anchor(users[0])
    assert [p for p in sync.mismatches() if not p.startswith(leaver)] == [], "the others are as they were"
