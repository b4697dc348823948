"""The worker on Azurite state and an in-memory Exchange: idempotence, ordering, adoption, ownership, conflicts."""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from sync.app.worker.apply import Applied, Outcome, apply_op
from sync.contract.ops import ContactOp, OpKind
from sync.contract.pairs import TenantPair
from sync.core.mapping import ContactMapper
from sync.errors import RowBusy, TargetTransient
from sync.state.stores import Stores
from tests.support.factories import make_pair, make_user
from tests.support.memory_target import MemoryTarget

PAIR = make_pair()
versions = itertools.count(1_000)


def op_for(
    user: dict[str, Any], kind: OpKind = OpKind.CREATE, version: int | None = None, pair: TenantPair = PAIR
) -> ContactOp:
    if kind is OpKind.DELETE:
        return ContactOp(pair.id, "run", kind, str(user["id"]), version or next(versions), "removed:deleted")
    mapped = ContactMapper(pair).map(user, str(user["mail"]))
    return ContactOp(pair.id, "run", kind, str(user["id"]), version or next(versions), "new", mapped.contact, mapped.hash)


def apply(op: ContactOp, target: MemoryTarget, stores: Stores, pair: TenantPair = PAIR) -> Applied:
    return apply_op(op, pair=pair, target=target, contacts=stores.contacts)


def test_create_then_update_sends_only_changed_cmdlets(stores: Stores, target: MemoryTarget) -> None:
    user = make_user(1)
    assert apply(op_for(user), target, stores).outcome is Outcome.CREATED
    assert dict(target.calls) == {"Get-Recipient": 1, "New-MailContact": 1, "Set-MailContact": 1, "Set-Contact": 1}
    target.calls.clear()
    result = apply(op_for({**user, "jobTitle": "Lead"}, OpKind.UPDATE), target, stores)
    assert result.outcome is Outcome.UPDATED
    assert dict(target.calls) == {"Get-Recipient": 1, "Set-Contact": 1}  # ownership checked before the write
    [contact] = target.contacts()
    assert contact.params["Title"] == "Lead" and contact.params["CustomAttribute15"] == PAIR.anchor(str(user["id"]))
    row = stores.contacts.get(PAIR.id, str(user["id"]))
    assert row.status == "ok" and row.guid == contact.guid and row.applied["Title"] == "Lead"


def test_cleared_value_is_cleared_in_the_target(stores: Stores, target: MemoryTarget) -> None:
    user = make_user(1)
    apply(op_for(user), target, stores)
    apply(op_for({**user, "department": None}, OpKind.UPDATE), target, stores)
    assert target.contacts()[0].params["Department"] == ""


def test_delete_removes_and_leaves_a_tombstone(stores: Stores, target: MemoryTarget) -> None:
    user = make_user(1)
    apply(op_for(user), target, stores)
    assert apply(op_for(user, OpKind.DELETE), target, stores).outcome is Outcome.DELETED
    assert target.contacts() == []
    assert stores.contacts.get(PAIR.id, str(user["id"])).status == "deleted"


def _mixed_ops(pair: TenantPair) -> list[ContactOp]:
    a, b, c = make_user(1), make_user(2), make_user(3)
    return [
        op_for(a, pair=pair, version=1), op_for(b, pair=pair, version=1), op_for(c, pair=pair, version=1),
        op_for({**a, "jobTitle": "Boss"}, OpKind.UPDATE, pair=pair, version=2),
        op_for(b, OpKind.DELETE, pair=pair, version=2),
        op_for({**c, "city": "Oslo", "mail": "c.new@contoso.com"}, OpKind.UPDATE, pair=pair, version=2),
    ]


@pytest.mark.parametrize("order", ["twice", "reversed", "reversed-twice", "interleaved"])
def test_any_delivery_order_ends_in_the_newest_state(stores: Stores, order: str) -> None:
    in_order = make_pair("in-order")
    expected_target = MemoryTarget()
    for op in _mixed_ops(in_order):
        apply(op, expected_target, stores, in_order)

    pair = make_pair(f"order-{order}")
    ops = _mixed_ops(pair)
    delivered = {
        "twice": ops + ops, "reversed": ops[::-1], "reversed-twice": ops[::-1] * 2,
        "interleaved": [ops[3], ops[0], ops[4], ops[1], ops[1], ops[5], ops[2], ops[3]],
    }[order]
    target = MemoryTarget()
    for op in delivered:
        apply(op, target, stores, pair)

    def comparable(snapshot: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        return {name: {k: v for k, v in params.items() if k != "CustomAttribute15"} for name, params in snapshot.items()}

    assert comparable(target.snapshot()) == comparable(expected_target.snapshot())
    assert sorted(c.params["Title"] for c in target.contacts()) == ["Boss", "Rep"]
    assert {c.params["City"] for c in target.contacts()} == {"Seattle", "Oslo"}


def test_an_older_op_after_a_newer_one_is_stale(stores: Stores, target: MemoryTarget) -> None:
    user = make_user(1)
    old, new = op_for({**user, "jobTitle": "Old"}, version=10), op_for({**user, "jobTitle": "New"}, version=20)
    apply(new, target, stores)
    assert apply(old, target, stores).outcome is Outcome.STALE
    assert target.contacts()[0].params["Title"] == "New"


def test_create_after_crash_adopts_its_own_contact(stores: Stores, target: MemoryTarget) -> None:
    user = make_user(1)
    op = op_for(user)
    target.create(op.contact or {})  # the first attempt reached Exchange, then the worker died before the state write
    target.calls.clear()
    assert apply(op, target, stores).outcome is Outcome.ADOPTED
    assert len(target.contacts()) == 1
    assert stores.contacts.get(PAIR.id, str(user["id"])).guid == target.contacts()[0].guid


def test_half_made_contact_without_anchor_is_adopted_by_its_derived_name(stores: Stores, target: MemoryTarget) -> None:
    user = make_user(1)
    op = op_for(user)
    assert op.contact is not None
    target.add_recipient("MailContact", str(op.contact["Name"]), str(op.contact["ExternalEmailAddress"]))
    assert apply(op, target, stores).outcome is Outcome.ADOPTED
    assert target.contacts()[0].params["CustomAttribute15"] == PAIR.anchor(str(user["id"]))


@pytest.mark.parametrize("kind", ["UserMailbox", "GuestMailUser", "MailContact"])
def test_address_held_by_someone_else_is_a_conflict_and_they_are_untouched(
    stores: Stores, target: MemoryTarget, kind: str
) -> None:
    user = make_user(1)
    guid = target.add_recipient(kind, "Adele Vance", str(user["mail"]), Title="Original")
    before = target.snapshot()
    result = apply(op_for(user), target, stores)
    assert result.outcome is Outcome.CONFLICT and "Adele Vance" in result.detail and kind in result.detail
    assert target.snapshot() == before and target.recipients[guid].params["Title"] == "Original"
    row = stores.contacts.get(PAIR.id, str(user["id"]))
    assert row.status == "conflict" and "Adele Vance" in row.last_error


def test_a_stored_adopt_contacts_pair_no_longer_takes_over_an_unowned_contact(stores: Stores, target: MemoryTarget) -> None:
    """`conflicts: adopt_contacts` is retired (python -m sync adopt takes contacts over, listed first): a stored pair
    that still says it is read as "skip"; the worker reports the holder and never writes it."""
    pair = make_pair("adopting-pair", conflicts="adopt_contacts")
    user = make_user(1)
    guid = target.add_recipient("MailContact", "Adele (old import)", str(user["mail"]))
    before = target.snapshot()
    assert apply(op_for(user, pair=pair), target, stores, pair).outcome is Outcome.CONFLICT
    assert target.snapshot() == before and not target.recipients[guid].params.get("CustomAttribute15")


def test_delete_never_touches_a_contact_without_our_anchor(stores: Stores, target: MemoryTarget) -> None:
    user = make_user(1)
    target.add_recipient("MailContact", "Lookalike", str(user["mail"]), CustomAttribute15="someone else's")
    before = target.snapshot()
    assert apply(op_for(user, OpKind.DELETE), target, stores).outcome is Outcome.ALREADY_GONE
    assert target.snapshot() == before


def test_update_of_a_contact_removed_behind_our_back_recreates_it(stores: Stores, target: MemoryTarget) -> None:
    user = make_user(1)
    apply(op_for(user), target, stores)
    target.recipients.clear()
    assert apply(op_for({**user, "city": "Oslo"}, OpKind.UPDATE), target, stores).outcome is Outcome.CREATED
    assert target.contacts()[0].params["City"] == "Oslo"


def test_transient_errors_propagate_and_the_retry_succeeds(stores: Stores, target: MemoryTarget) -> None:
    user = make_user(1)
    op = op_for(user)
    target.fail_next(TargetTransient("ServerBusyException", status=400))
    with pytest.raises(TargetTransient):
        apply(op, target, stores)
    assert apply(op, target, stores).outcome is Outcome.CREATED  # same op may take over its own claim
    assert len(target.contacts()) == 1


def test_another_ops_claim_makes_this_one_wait(stores: Stores, target: MemoryTarget) -> None:
    user = make_user(1)
    row = stores.contacts.get(PAIR.id, str(user["id"]))
    stores.contacts.claim(row, version=5, seconds=300)  # a second worker is busy with version 5
    with pytest.raises(RowBusy):
        apply(op_for(user, version=6), target, stores)
    assert target.contacts() == []


def test_a_value_exchange_refuses_is_recorded_not_retried(stores: Stores, target: MemoryTarget) -> None:
    user = make_user(1)
    op = op_for(user)
    assert op.contact is not None
    bad = ContactOp(op.pair_id, op.run_id, op.kind, op.source_id, op.version, op.reason,
                    {**op.contact, "CustomAttribute1": "x" * 2000}, op.hash)
    result = apply(bad, target, stores)
    assert result.outcome is Outcome.REJECTED
    assert stores.contacts.get(PAIR.id, str(user["id"])).status == "failed"


def test_a_create_never_adopts_a_contact_an_admin_took_over_after_its_row_was_lost(
    stores: Stores, target: MemoryTarget
) -> None:
    """The half-made-contact rule (ctcs's Name, no anchor) would adopt a released contact whose row is gone: the
    release recorded apart from ContactState (sync.state.ownership) stops it."""
    user = make_user(1)
    created = apply(op_for(user), target, stores)
    target.recipients[created.guid].params[PAIR.contact.anchor_attribute] = ""  # the admin takes it over
    target.recipients[created.guid].params["Title"] = "Kept by hand"
    stores.ownership.released(PAIR, str(user["id"]), guid=created.guid, why="released: cleared by an admin")
    stores.contacts.forget_pair(PAIR.id)  # ContactState lost
    before = target.snapshot()
    op = op_for({**user, "jobTitle": "Changed"}, version=5)
    result = apply_op(op, pair=PAIR, target=target, contacts=stores.contacts, ownership=stores.ownership)
    assert result.outcome is Outcome.RELEASED and target.snapshot() == before
    assert stores.contacts.get(PAIR.id, str(user["id"])).status == "released"
