"""Who owns a contact, beyond ContactState (issue 22): a contact an admin took over stays released through a lost
ContactState table and a pair's remove and add, until the admin hands it back; existing target contacts are taken
over only by `python -m sync adopt`, which lists them first; an adopted contact's leaver is hidden, not deleted.
Through the CLI and the function app, against the simulated tenants and Azurite."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sync.app.planner.reconcile import reconcile_pair

from .conftest import SyncPair, run_cli


def _guid(sync: SyncPair, user: str) -> str:
    (contact,) = sync.contacts_of(user)
    return str(contact["Guid"])


def _lose_contact_state(sync: SyncPair) -> None:
    table = sync.rt.stores.contacts.table
    for entity in list(table.list_entities(select=["PartitionKey", "RowKey"])):
        table.delete_entity(entity["PartitionKey"], entity["RowKey"])


def _remove_and_add(sync: SyncPair, tmp_path: Path) -> None:
    removed = run_cli("pairs", "remove", sync.pair.id)
    assert removed.returncode == 0, removed.stderr
    pair_file = tmp_path / "pair.json"
    pair_file.write_text(json.dumps(sync.definition))
    added = run_cli("pairs", "add", str(pair_file), "--no-test")
    assert added.returncode == 0, added.stderr
    sync.rt._pairs.clear()


def test_a_released_contact_stays_released_after_lost_state_and_a_readded_pair_until_handed_back(
    sync: SyncPair, tmp_path: Path
) -> None:
    users = sync.add_users(5)
    sync.sync()
    attribute = sync.pair.contact.anchor_attribute
    exchange = sync.target.exchange
    taken_guid = _guid(sync, users[0])
    exchange.set_recipient(taken_guid, **{attribute: "", "Title": "Partner desk (kept by hand)"})  # the admin's own now
    taken = exchange.get(taken_guid)
    reconcile_pair(sync.rt, sync.pair.id)  # ctcs learns it was taken over
    sync.drain()
    assert sync.rows()[users[0]].status == "released"

    _lose_contact_state(sync)
    sync.sync()
    reconcile_pair(sync.rt, sync.pair.id)
    sync.drain()
    assert exchange.get(taken_guid) == taken, "not adopted again after ContactState was lost"

    _remove_and_add(sync, tmp_path)
    sync.sync()
    reconcile_pair(sync.rt, sync.pair.id)
    sync.drain()
    assert exchange.get(taken_guid) == taken, "not adopted again after the pair was removed and added"
    sync.assert_in_step(absent={users[0]}, check_state=False)

    explained = run_cli("status", "--pair", sync.pair.id, "--json")
    assert explained.returncode == 0, explained.stderr
    [shown] = json.loads(explained.stdout)["pairs"]
    assert [c["source_id"] for c in shown["released_contacts"]] == [users[0]]
    assert "released contacts" in run_cli("status", "--pair", sync.pair.id).stdout

    why = run_cli("explain", "--pair", sync.pair.id, users[0])
    assert why.returncode == 0 and "not managed by ctcs any more" in why.stdout and "handback" in why.stdout
    address = str(sync.rt.stores.ownership.get(sync.pair, users[0]).address)  # type: ignore[union-attr]
    handed = run_cli("handback", "--pair", sync.pair.id, address)
    assert handed.returncode == 0, handed.stderr
    assert users[0] in handed.stdout
    sync.sync()
    assert _guid(sync, users[0]) == taken_guid, "the same contact, managed again"
    sync.assert_in_step()
    again = run_cli("handback", "--pair", sync.pair.id, users[0])
    assert again.returncode == 2 and "no contact is released" in again.stderr


def _plant(sync: SyncPair, name: str, address: str, **attrs: Any) -> str:
    return sync.target.exchange.add_recipient("MailContact", name, address, **attrs)


def test_adopt_lists_then_takes_exactly_the_listed_contacts_and_an_adopted_leaver_is_hidden(
    sync: SyncPair, tmp_path: Path
) -> None:
    users = sync.add_users(5)
    attribute = sync.pair.contact.anchor_attribute
    mail = {user: str((sync.source.directory.get_user(user) or {})["mail"]) for user in users}
    imported = _plant(sync, "Old import 0", mail[users[0]], Title="Imported")  # the one to adopt
    other_tool = _plant(sync, "Old import 1", mail[users[1]], **{attribute: "galsync:1"})
    sync.target.exchange.add_recipient("UserMailbox", "Mailbox 2", mail[users[2]])
    own = _plant(sync, "Partner desk", "desk@partner.example")  # the admin's own: no source user
    before = sync.unowned()

    listed = run_cli("adopt", "--pair", sync.pair.id, "--dry-run", "--json")
    assert listed.returncode == 0, listed.stderr
    report = json.loads(listed.stdout)
    actions = {c["source_id"]: (c["guid"], c["action"]) for c in report["contacts"]}
    assert actions[users[0]] == (imported, "adopt")
    assert actions[users[1]] == (other_tool, "skip") and users[2] in actions and actions[users[2]][1] == "skip"
    assert set(actions) == set(users[:3]) and report["adopted"] == 0
    sync.assert_untouched(before)  # a dry run writes nothing

    taken = run_cli("adopt", "--pair", sync.pair.id)
    assert taken.returncode == 0, taken.stderr
    assert "adopted 1 contact(s)" in taken.stdout
    sync.sync()
    assert _guid(sync, users[0]) == imported, "the existing contact, not a new one"
    problems = sync.mismatches(absent={users[1], users[2]})
    assert [p for p in problems if "Name is 'Old import 0'" not in p] == [], "its Name stays; every value is set"
    untouched = {guid: r for guid, r in before.items() if guid != imported}
    sync.assert_untouched(untouched)
    assert own in sync.unowned()

    _lose_contact_state(sync)  # the adoption is recorded apart from ContactState
    sync.sync()
    for user in (users[0], users[3]):
        sync.source.directory.delete_user(user)
    sync.sync()
    adopted = sync.target.exchange.get(imported)
    assert adopted is not None and adopted["HiddenFromAddressListsEnabled"] is True, "hidden, not deleted"
    assert sync.contacts_of(users[3]) == [], "a contact ctcs made follows deletion.mode"
    sync.assert_untouched(untouched)


def test_a_new_pair_file_with_adopt_contacts_is_refused_and_a_stored_one_reads_as_skip(
    sync: SyncPair, tmp_path: Path
) -> None:
    pair_file = tmp_path / "pair.json"
    pair_file.write_text(json.dumps({**sync.definition, "id": "adopting-pair", "conflicts": "adopt_contacts"}))
    refused = run_cli("pairs", "add", str(pair_file), "--no-test")
    assert refused.returncode == 2 and 'conflicts: "adopt_contacts" is retired' in refused.stderr
    assert "python -m sync adopt" in refused.stderr

    sync.replace_pair(conflicts="adopt_contacts")  # stored before the option was retired
    user = sync.add_user("Adele Vance")
    holder = _plant(sync, "Adele (old import)", str((sync.source.directory.get_user(user) or {})["mail"]))
    before = sync.unowned()
    sync.sync()
    assert sync.rows()[user].status == "conflict" and holder in sync.unowned()
    sync.assert_untouched(before)
    shown = run_cli("status", "--pair", sync.pair.id, "--json")
    [status] = json.loads(shown.stdout)["pairs"]
    assert "python -m sync adopt" in status["conflicts_note"]
