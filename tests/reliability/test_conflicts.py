"""Invariant 1: ctcs never modifies or deletes what it did not create. An address held by a guest, a mailbox, an
unowned contact or a soft-deleted recipient is a conflict that names the holder, reported once and not retried on
every run; contacts ctcs did not make stay exactly as they were, whatever happens to the source users."""

from __future__ import annotations

import random
from collections.abc import Callable

from .conftest import SyncPair, exchange_counts

HOLDERS = [("GuestMailUser", "guest-of-contoso"), ("UserMailbox", "fabrikam-mailbox"),
           ("MailContact", "old-import-contact"), ("SoftDeletedMailbox", "left-last-month")]


def test_an_address_held_by_another_recipient_is_a_conflict_naming_it_and_not_retried(
    sync: SyncPair, record: Callable[..., None]
) -> None:
    users = sync.add_users(8)
    mails = {u["id"]: u["mail"] for u in sync.source.directory.users}
    for (kind, name), user in zip(HOLDERS, users, strict=False):
        sync.target.exchange.add_recipient(kind, name, mails[user])
    before = sync.unowned()

    report = sync.sync()

    rows = sync.rows()
    for (kind, name), user in zip(HOLDERS, users, strict=False):
        row = rows[user]
        assert row.status == "conflict" and row.last_op == "create:conflict", (kind, row)
        assert name in row.last_error, f"the error names the holder: {row.last_error}"
        assert sync.contacts_of(user) == []
    conflicted = set(users[:4])
    # A soft-deleted mailbox is invisible to Get-Recipient, so after its refusal the worker cannot tell it from a holder
    # that just moved away (issue 13's address moves): it tries once more, then records the conflict.
    assert exchange_counts(sync.cloud)["New-MailContact"] == 4 + 2, "4 others, and the soft-deleted holder's 2 refusals"
    sync.assert_in_step(absent=conflicted)
    sync.assert_untouched(before)
    api = sync.host.call_http("GET", f"/api/pairs/{sync.pair.id}").json
    assert {p["source_id"] for p in api["status"]["problems"]} == conflicted

    # The same users show up in the next rounds (a value rewritten unchanged): no Exchange call for them.
    for _ in range(2):
        for user in conflicted:
            sync.source.directory.update_user(user, department="Sales")
        sync.cloud.reset_counts()
        sync.sync()
        assert sync.cloud.counts["exchange"] == 0
        assert sync.last_run().counts["kept_conflict"] == 4
    sync.assert_untouched(before)
    record(conflicts=4, holders=[kind for kind, _ in HOLDERS], exchange_calls_on_later_runs=0,
           created=len(sync.ours()), deliveries=report.completed)


def test_a_hundred_unowned_contacts_are_never_modified_or_deleted(sync: SyncPair, record: Callable[..., None]) -> None:
    rng = random.Random(6)
    users = sync.add_users(30)
    source = {u["id"]: u for u in sync.source.directory.users}
    exchange = sync.target.exchange
    for n in range(100):
        user = source[users[n % 30]]
        if n < 10:  # the same address as a source user: a conflict, never a takeover
            exchange.add_recipient("MailContact", f"legacy-{n}", user["mail"], DisplayName=user["displayName"])
        elif n < 40:  # the same display name, another address
            exchange.add_recipient("MailContact", f"namesake-{n}", f"namesake{n}@partner.example",
                                   DisplayName=user["displayName"], CustomAttribute15="not-ctcs")
        else:
            exchange.add_recipient("MailContact", f"partner-{n}", f"partner{n}@partner.example",
                                   DisplayName=f"Partner {n}", Company="Partner Inc")
    before = sync.unowned()
    assert len(before) == 100

    runs = 0
    sync.sync()
    runs += 1
    directory = sync.source.directory
    for round_ in range(5):  # renames to a namesake's name, moves, leavers (some holding a conflict), new hires
        for user in rng.sample(users, 6):
            if directory.get_user(user) is None:
                continue
            choice = rng.choice(["rename", "move", "leave", "disable"])
            if choice == "rename":
                directory.update_user(user, displayName=rng.choice(list(before.values()))["DisplayName"])
            elif choice == "move":
                directory.update_user(user, department=rng.choice(["Legal", "IT", "Finance"]))
            elif choice == "leave":
                directory.delete_user(user, permanent=True)
            else:
                directory.update_user(user, accountEnabled=False)
        sync.add_user(f"Hire {round_}")
        sync.sync()
        runs += 1
    sync.host.call_http("POST", f"/api/pairs/{sync.pair.id}/resync", {"full": "true", "allow_deletes": "true"})
    sync.drain()
    runs += 1

    sync.assert_untouched(before)
    conflicts = {row.source_id for row in sync.rows().values() if row.status == "conflict"}
    sync.assert_in_step(absent=conflicts & {u["id"] for u in directory.users})
    record(unowned=100, unchanged=100, runs=runs, conflicts=len(conflicts), contacts=len(sync.ours()))
