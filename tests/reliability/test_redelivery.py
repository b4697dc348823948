"""Invariant 3: an op delivered several times, or ops delivered out of order, end in the state of the newest op,
with one contact per user; and a worker that dies between Exchange and the state write leaves no duplicate."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from .conftest import SyncPair, exchange_counts

# What each kind sends to Exchange once (the change below touches Title and Department: one Set-Contact). Creates
# that run at the same moment share their Get-Recipient look-ups (sync.exchange.lookup): one serves them all.
SHARED = {"Get-Recipient"}
ONE_APPLICATION = {
    "create": {"Get-Recipient": 1, "New-MailContact": 3, "Set-MailContact": 3, "Set-Contact": 3},
    # Every write first checks ownership (Guid and anchor) in a look-up the concurrent copies may share.
    "update": {"Get-Recipient": 1, "Set-Contact": 1},
    "delete": {"Get-Recipient": 1, "Remove-MailContact": 1},
    "hide": {"Get-Recipient": 1, "Set-MailContact": 1},
    "restore": {"Get-Recipient": 1, "Set-MailContact": 1},
}


def _change(sync: SyncPair, kind: str, user: str) -> None:
    directory = sync.source.directory
    if kind == "update":
        directory.update_user(user, jobTitle="Director", department="Legal")
    elif kind in ("delete", "hide"):
        directory.delete_user(user)
    elif kind == "restore":
        directory.restore_user(user)


@pytest.mark.parametrize("kind", ["create", "update", "delete", "hide", "restore"])
def test_every_op_kind_delivered_three_times_is_applied_once(
    make_sync: Callable[..., SyncPair], kind: str, record: Callable[..., None]
) -> None:
    sync = make_sync(deletion={"mode": "hide" if kind in ("hide", "restore") else "delete", "max_delete_percent": 50})
    users = sync.add_users(3)
    user = users[0]
    for earlier in {"create": [], "update": ["create"], "delete": ["create"], "hide": ["create"],
                    "restore": ["create", "hide"]}[kind]:
        _change(sync, earlier, user)
        sync.sync()
    _change(sync, kind, user)
    sync.plan()
    bodies = sync.take_queued()
    assert sorted(json.loads(body)["kind"] for body in bodies) == [kind] * (3 if kind == "create" else 1)

    sync.cloud.reset_counts()
    sync.send(bodies * 3)  # every op three times, the copies side by side in the queue
    report = sync.drain()

    # A copy that met another copy claiming the row at that instant (RowBusy) was deferred and came back: more
    # deliveries than copies then, but none failed or poisoned.
    assert report.completed >= 3 * len(bodies) and report.failed_attempts == 0 and report.poisoned == 0
    calls = exchange_counts(sync.cloud)
    # Copies running side by side share the op's version, so two may both apply it (harmless: same values);
    # a copy that starts after the first committed makes no Exchange call at all.
    assert set(calls) == set(ONE_APPLICATION[kind])
    assert all(ONE_APPLICATION[kind][c] <= n <= 3 * (len(bodies) if c in SHARED else ONE_APPLICATION[kind][c])
               for c, n in calls.items()), calls
    rows = sync.rows()
    assert rows[user].last_op.startswith(f"{kind}:")
    assert len(sync.ours()) == (2 if kind == "delete" else 3), "one contact per user, never a duplicate"
    assert {row.status for row in rows.values()} <= {"ok", "deleted", "hidden"}
    if kind == "hide":
        [hidden] = sync.contacts_of(user)
        assert hidden["HiddenFromAddressListsEnabled"] is True and rows[user].status == "hidden"
        sync.target.exchange.run("Remove-MailContact", {"Identity": hidden["Guid"]})  # compare the others below
    sync.assert_in_step()
    record(deliveries=report.invocations["apply_contact_op"], ops=len(bodies), failed_attempts=report.failed_attempts,
           exchange=calls, contacts=len(sync.ours()) + (kind == "hide"))


@pytest.mark.parametrize("kind", ["create", "update", "delete"])
def test_a_worker_that_dies_after_exchange_and_before_the_state_write_is_retried_without_duplicate(
    make_sync: Callable[..., SyncPair], kind: str, monkeypatch: pytest.MonkeyPatch, record: Callable[..., None]
) -> None:
    sync = make_sync(deletion={"max_delete_percent": 50})
    users = sync.add_users(3)
    if kind != "create":
        sync.sync()
        _change(sync, kind, users[0])
    sync.plan()

    contacts = sync.rt.stores.contacts
    commit = contacts.commit
    crashed: list[str] = []

    def crash_once(row: Any, update: Any, **fields: Any) -> None:
        if not crashed:  # Exchange has been changed; the process dies before the row says so
            crashed.append(row.source_id)
            raise ConnectionResetError("worker lost its storage connection")
        commit(row, update, **fields)

    monkeypatch.setattr(contacts, "commit", crash_once)
    sync.cloud.reset_counts()
    report = sync.drain()

    assert crashed and report.failed_attempts == 1 and report.poisoned == 0
    calls = exchange_counts(sync.cloud)
    if kind == "create":
        assert calls["New-MailContact"] == 3, "the retry adopted its own contact instead of making another"
        assert sync.rows()[crashed[0]].last_op == "create:adopted"
    elif kind == "delete":
        # The retry's ownership look-up finds the contact gone: no second Remove, the contact is recorded as gone.
        assert calls["Remove-MailContact"] == 1 and sync.rows()[users[0]].last_op == "delete:already_gone"
    assert len(sync.ours()) == (2 if kind == "delete" else 3)
    sync.assert_in_step()
    record(crashes=1, deliveries=report.invocations["apply_contact_op"], exchange=calls, contacts=len(sync.ours()))


def test_a_contact_made_by_new_mailcontact_before_a_crash_is_adopted_by_the_retry(
    sync: SyncPair, record: Callable[..., None]
) -> None:
    """The process died right after New-MailContact, before Set-MailContact wrote the anchor."""
    [user] = sync.add_users(1)
    sync.plan()
    [body] = sync.take_queued()
    contact = json.loads(body)["contact"]
    half_made = sync.target.exchange.run("New-MailContact", {
        key: contact[key] for key in ("Name", "Alias", "ExternalEmailAddress", "DisplayName")
    })[0]

    sync.send([body])
    sync.cloud.reset_counts()
    report = sync.drain()

    assert report.completed == 1 and exchange_counts(sync.cloud).get("New-MailContact", 0) == 0
    [adopted] = sync.ours()
    assert adopted["Guid"] == half_made["Guid"] and sync.rows()[user].last_op == "create:adopted"
    assert len(sync.target.exchange.contacts()) == 1
    sync.assert_in_step()
    record(contacts=1, new_mailcontact_calls=0)


# --- out of order -----------------------------------------------------------------------------------------------------


def _planned(sync: SyncPair, change: Callable[[], None]) -> list[str]:
    change()
    sync.plan()
    return sync.take_queued()


def test_update_v2_delivered_before_v1_ends_in_v2(sync: SyncPair, record: Callable[..., None]) -> None:
    users = sync.add_users(2)
    sync.sync()
    user, directory = users[0], sync.source.directory
    v1 = _planned(sync, lambda: directory.update_user(user, jobTitle="Manager", city="Paris"))
    v2 = _planned(sync, lambda: directory.update_user(user, jobTitle="Director", department="Legal"))
    assert json.loads(v2[0])["version"] > json.loads(v1[0])["version"]

    sync.send(v2)
    sync.drain()
    sync.cloud.reset_counts()
    sync.send(v1)
    report = sync.drain()

    assert report.completed == 1 and sync.cloud.counts["exchange"] == 0, "the older op was dropped unseen"
    [contact] = sync.contacts_of(user)
    assert (contact["Title"], contact["Department"], contact["City"]) == ("Director", "Legal", "Paris")
    assert sync.rows()[user].version == json.loads(v2[0])["version"]
    sync.assert_in_step()
    record(order="v2, v1", exchange_calls_for_v1=0)


def test_delete_delivered_before_the_older_update_leaves_no_contact(sync: SyncPair) -> None:
    users = sync.add_users(3)
    sync.sync()
    user, directory = users[0], sync.source.directory
    update = _planned(sync, lambda: directory.update_user(user, jobTitle="Manager"))
    delete = _planned(sync, lambda: directory.delete_user(user, permanent=True))
    assert [json.loads(b)["kind"] for b in update + delete] == ["update", "delete"]

    sync.send(delete)
    sync.drain()
    sync.cloud.reset_counts()
    sync.send(update)
    sync.drain()

    assert sync.cloud.counts["exchange"] == 0
    assert sync.contacts_of(user) == [] and sync.rows()[user].status == "deleted"
    sync.assert_in_step()


def test_a_create_redelivered_after_the_delete_does_not_bring_the_contact_back(sync: SyncPair) -> None:
    users = sync.add_users(3)
    sync.plan()
    creates = sync.take_queued()
    sync.send(creates)
    sync.drain()
    user = users[0]
    sync.source.directory.delete_user(user)
    sync.sync()
    assert sync.contacts_of(user) == []

    sync.cloud.reset_counts()
    sync.send([body for body in creates if json.loads(body)["source_id"] == user])
    sync.drain()

    assert sync.cloud.counts["exchange"] == 0 and sync.contacts_of(user) == []
    assert sync.rows()[user].status == "deleted"
    sync.assert_in_step()


def test_a_create_still_queued_when_its_user_is_deleted_leaves_no_contact(sync: SyncPair) -> None:
    users = sync.add_users(3)
    sync.sync()
    directory = sync.source.directory
    late = _planned(sync, lambda: directory.add_user({"displayName": "Late Joiner", "mail": f"late@{sync.source.domain}"}))
    [joiner] = [json.loads(body)["source_id"] for body in late]
    directory.delete_user(joiner)
    sync.sync()  # plans the removal while the create is still waiting (throttled, deferred, or in replay)

    sync.send(late)
    sync.drain()

    assert sync.contacts_of(joiner) == [], "a contact for a user who no longer exists"
    assert len(users) == 3
