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
