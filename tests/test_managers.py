"""Manager links: the planner's rules (set, changed, cleared, report before manager, fix-ups), the partial op on the
queue, and the worker's merge of a partial op (on Azurite state and an in-memory Exchange)."""

from __future__ import annotations

import itertools
import json
from typing import Any

import pytest

from sync.app.worker.apply import Outcome, apply_op
from sync.contract.ops import ContactOp, OpKind, decode_op
from sync.contract.summaries import StateSummary
from sync.core.managers import reported_manager
from sync.core.mapping import ContactMapper, contact_hash, contact_name
from sync.core.plan import Baseline, Plan, PlanOptions, plan_pair
from sync.core.source import DeltaRound
from sync.errors import BadOpMessage, ManagerNotFound, PairValidationError
from sync.state.stores import Stores
from tests.support.factories import make_pair, make_user
from tests.support.memory_target import MemoryTarget

PAIR = make_pair()
BOSS, REPORT, OTHER = make_user(1), make_user(2), make_user(3)
B, R, X = (str(u["id"]) for u in (BOSS, REPORT, OTHER))
versions = itertools.count(1_000)


def managed_by(user: dict[str, Any], manager_id: str | None, *, removed: bool = False) -> dict[str, Any]:
    entry: dict[str, Any] = {"@odata.type": "#microsoft.graph.user", "id": manager_id}
    if removed:
        entry["@removed"] = {"reason": "deleted"}
    return {**user, "manager@delta": [entry]}


def round_of(*users: dict[str, Any], removed: dict[str, str] | None = None, full: bool = False) -> DeltaRound:
    round_ = DeltaRound(full=full)
    round_.add_page(list(users))
    for user_id, reason in (removed or {}).items():
        round_.add_removal(user_id, reason)
    return round_


def row(user: dict[str, Any], status: str = "ok", *, manager_id: str = "", linked: bool = False) -> StateSummary:
    """The state row of a user whose contact was applied with Manager linked (or not) to `manager_id`."""
    manager = contact_name(manager_id) if linked else ""
    mapped = ContactMapper(PAIR).map(user, str(user["mail"]), manager=manager)
    return StateSummary(status, mapped.hash, 1, "guid-" + str(user["id"]), None, manager_id, linked)


def plan(round_: DeltaRound, state: dict[str, StateSummary], pair: Any = PAIR) -> Plan:
    return plan_pair(pair, round_, Baseline(state), PlanOptions(100, "run-1"))


def ops_by_user(result: Plan) -> dict[str, ContactOp]:
    return {op.source_id: op for op in result.ops}


# --- reading manager@delta ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("annotation", "expected"),
    [
        ([{"@odata.type": "#microsoft.graph.user", "id": "m1"}], "m1"),
        ([{"id": "m1", "@removed": {"reason": "deleted"}}], ""),
        ([{"id": "m1", "@removed": {"reason": "deleted"}}, {"id": "m2"}], "m2"),
        ([], ""),
        ("garbage", None),
    ],
)
def test_manager_delta_annotation(annotation: object, expected: str | None) -> None:
    assert reported_manager({"id": "u", "manager@delta": annotation}) == expected
    assert reported_manager({"id": "u"}) is None


def test_a_later_occurrence_without_the_annotation_keeps_it() -> None:
    round_ = round_of(managed_by(REPORT, B), {**REPORT, "jobTitle": "Lead"})
    assert reported_manager(round_.users[R]) == B and round_.users[R]["jobTitle"] == "Lead"


# --- planning ---------------------------------------------------------------------------------------------------------


def test_manager_is_set_when_the_managers_contact_exists() -> None:
    result = plan(round_of(managed_by(REPORT, B)), {B: row(BOSS)})
    [op] = result.ops
    assert op.kind is OpKind.CREATE and op.manager_id == B and not op.partial
    assert op.contact is not None and op.contact["Manager"] == contact_name(B)


def test_report_before_manager_links_on_the_next_run() -> None:
    first = ops_by_user(plan(round_of(BOSS, managed_by(REPORT, B)), {}))
    report = first[R].contact
    assert report is not None and report["Manager"] == "" and first[R].manager_id == B
    # Both applied: the manager ok, the report ok without a link. An empty incremental round links it.
    state = {B: row(BOSS), R: row(REPORT, manager_id=B)}
    [op] = plan(round_of(), state).ops
    assert (op.kind, op.source_id, op.reason, op.partial) == (OpKind.UPDATE, R, "manager_linked", True)
    assert op.contact == {"Manager": contact_name(B)} and op.manager_id == B and op.hash == ""
    # Once linked, nothing more.
    assert plan(round_of(), {B: row(BOSS), R: row(REPORT, manager_id=B, linked=True)}).ops == []


def test_a_changed_manager_updates_the_full_contact() -> None:
    state = {B: row(BOSS), X: row(OTHER), R: row(REPORT, manager_id=B, linked=True)}
    [op] = plan(round_of(managed_by(REPORT, X)), state).ops
    assert op.kind is OpKind.UPDATE and not op.partial and op.manager_id == X
    assert op.contact is not None and op.contact["Manager"] == contact_name(X)


def test_a_removed_manager_relationship_clears_it() -> None:
    state = {B: row(BOSS), R: row(REPORT, manager_id=B, linked=True)}
    [op] = plan(round_of(managed_by(REPORT, B, removed=True)), state).ops
    assert op.contact is not None and op.contact["Manager"] == "" and op.manager_id == ""


def test_other_changes_keep_the_known_manager() -> None:
    state = {B: row(BOSS), R: row(REPORT, manager_id=B, linked=True)}
    [op] = plan(round_of({**REPORT, "jobTitle": "Lead"}), state).ops
    assert op.contact is not None and op.contact["Manager"] == contact_name(B) and op.manager_id == B


def test_a_full_round_without_the_annotation_means_no_manager() -> None:
    state = {B: row(BOSS), R: row(REPORT, manager_id=B, linked=True)}
    [op] = plan(round_of(BOSS, REPORT, full=True), state).ops
    assert op.source_id == R and op.contact is not None and op.contact["Manager"] == "" and op.manager_id == ""


def test_unchanged_users_with_their_manager_linked_make_no_op() -> None:
    state = {B: row(BOSS), R: row(REPORT, manager_id=B, linked=True)}
    result = plan(round_of(BOSS, managed_by(REPORT, B), full=True), state)
    assert result.ops == [] and result.unchanged == 2


def test_a_new_manager_that_is_not_synced_is_still_recorded() -> None:
    # The contact does not change (no Manager either way), but the row must learn whom to follow.
    state = {R: row(REPORT)}
    [op] = plan(round_of(managed_by(REPORT, "not-synced")), state).ops
    assert op.kind is OpKind.UPDATE and op.manager_id == "not-synced"
    assert op.contact is not None and op.contact["Manager"] == "" and op.hash == state[R].hash


@pytest.mark.parametrize(
    ("round_", "boss_status", "boss_op"),
    [
        (round_of(removed={B: "deleted"}), "ok", "delete"),
        (round_of({**BOSS, "accountEnabled": False}), "ok", "delete"),
        (round_of(), "conflict", None),
        (round_of(), "failed", None),
        (round_of(), "hidden", None),
    ],
    ids=["deleted", "out_of_scope", "conflict", "failed", "hidden"],
)
def test_manager_leaving_clears_the_link(round_: DeltaRound, boss_status: str, boss_op: str | None) -> None:
    state = {B: row(BOSS, boss_status), R: row(REPORT, manager_id=B, linked=True)}
    ops = ops_by_user(plan(round_, state))
    assert (ops[B].kind.value if B in ops else None) == boss_op
    assert ops[R].partial and ops[R].contact == {"Manager": ""} and ops[R].reason == "manager_unlinked"


def test_manager_hidden_by_a_staged_delete_clears_the_link() -> None:
    pair = make_pair(deletion={"mode": "hide"})
    state = {B: row(BOSS), R: row(REPORT, manager_id=B, linked=True)}
    ops = ops_by_user(plan(round_of(removed={B: "changed"}), state, pair))
    assert ops[B].kind is OpKind.HIDE and ops[R].contact == {"Manager": ""}


def test_a_manager_leaving_in_the_same_round_as_the_report_changes() -> None:
    state = {B: row(BOSS), R: row(REPORT, manager_id=B, linked=True)}
    ops = ops_by_user(plan(round_of({**REPORT, "jobTitle": "Lead"}, removed={B: "deleted"}), state))
    report = ops[R].contact
    assert not ops[R].partial and report is not None and report["Manager"] == ""


def test_no_fixups_for_contacts_that_are_not_ok() -> None:
    state = {B: row(BOSS), R: row(REPORT, "conflict", manager_id=B)}
    assert plan(round_of(), state).ops == []


def test_manager_links_can_be_turned_off() -> None:
    pair = make_pair(contact={"attributes": {"Manager": ""}})
    [op] = plan(round_of(managed_by(REPORT, B)), {B: row(BOSS)}, pair).ops
    assert op.contact is not None and "Manager" not in op.contact and op.manager_id == ""
    assert plan(round_of(), {B: row(BOSS), R: StateSummary("ok", "h", 1, "g", None, B, False)}, pair).ops == []


def test_manager_is_not_a_template() -> None:
    with pytest.raises(PairValidationError) as refused:
        make_pair(contact={"attributes": {"Manager": "{department}"}})
    assert refused.value.problems[0].startswith("contact.attributes.Manager: ")


# --- the partial op on the queue ----------------------------------------------------------------------------------------


def test_partial_op_round_trips_and_defaults_stay_out_of_the_message() -> None:
    op = ContactOp(PAIR.id, "run", OpKind.UPDATE, R, 5, "manager_linked", {"Manager": "ctcs-x"}, partial=True,
                   manager_id=B)
    assert decode_op(op.to_json()) == op
    full = ContactOp(PAIR.id, "run", OpKind.CREATE, R, 5, "new", {"Name": "x"}, "h")
    assert "partial" not in full.to_json() and "manager_id" not in full.to_json()
    assert decode_op(full.to_json()) == full


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"kind": "create"}, "cannot be partial"),
        ({"contact": {"Manager": "x", "ExternalEmailAddress": "a@b.c"}}, "may only carry Manager"),
        ({"partial": "yes"}, "'partial' must be a bool"),
        ({"manager_id": "bad id!"}, "'manager_id'"),
    ],
)
def test_bad_partial_ops_are_refused(changes: dict[str, Any], message: str) -> None:
    body = json.loads(ContactOp(PAIR.id, "run", OpKind.UPDATE, R, 5, "manager_linked", {"Manager": "x"},
                                partial=True).to_json())
    with pytest.raises(BadOpMessage, match=message):
        decode_op(json.dumps({**body, **changes}))


# --- the worker -------------------------------------------------------------------------------------------------------


def full_op(user: dict[str, Any], kind: OpKind, *, manager: str = "", manager_id: str = "",
            version: int | None = None) -> ContactOp:
    mapped = ContactMapper(PAIR).map(user, str(user["mail"]), manager=manager)
    return ContactOp(PAIR.id, "run", kind, str(user["id"]), version or next(versions), "new", mapped.contact,
                     mapped.hash, manager_id=manager_id)


def link_op(user: dict[str, Any], manager: str, manager_id: str, version: int | None = None) -> ContactOp:
    return ContactOp(PAIR.id, "run", OpKind.UPDATE, str(user["id"]), version or next(versions), "manager_linked",
                     {"Manager": manager}, partial=True, manager_id=manager_id)


def apply(op: ContactOp, target: MemoryTarget, stores: Stores) -> Outcome:
    return apply_op(op, pair=PAIR, target=target, contacts=stores.contacts).outcome


def test_partial_op_is_merged_and_the_next_plan_sees_the_contact_unchanged(
    stores: Stores, target: MemoryTarget
) -> None:
    apply(full_op(BOSS, OpKind.CREATE), target, stores)
    apply(full_op(REPORT, OpKind.CREATE, manager_id=B), target, stores)
    before = stores.contacts.get(PAIR.id, R)
    target.calls.clear()
    assert apply(link_op(REPORT, contact_name(B), B), target, stores) is Outcome.UPDATED
    assert dict(target.calls) == {"Get-Recipient": 1, "Set-Contact": 1}  # ownership checked before the write
    after = stores.contacts.get(PAIR.id, R)
    assert after.applied["Manager"] == contact_name(B) and after.applied["Title"] == "Rep"
    assert (after.manager_id, after.manager_set, after.version) == (B, True, before.version)
    assert after.hash == contact_hash(after.applied) != before.hash
    # The summaries carry the link, and a full round maps the same contact: nothing to do.
    state = stores.contacts.summaries(PAIR.id)
    assert (state[R].manager_id, state[R].manager_set) == (B, True)
    result = plan(round_of(BOSS, managed_by(REPORT, B), full=True), state)
    assert result.ops == [] and result.unchanged == 2
    # Delivered again: nothing is sent.
    target.calls.clear()
    assert apply(link_op(REPORT, contact_name(B), B), target, stores) is Outcome.UNCHANGED
    assert sum(target.calls.values()) == 0


def test_a_partial_op_never_makes_an_older_full_op_stale(stores: Stores, target: MemoryTarget) -> None:
    apply(full_op(REPORT, OpKind.CREATE, manager_id=B, version=10), target, stores)
    apply(link_op(REPORT, "ctcs-boss", B, version=30), target, stores)
    assert apply(full_op({**REPORT, "jobTitle": "Lead"}, OpKind.UPDATE, manager_id=B, version=20), target, stores) \
        is Outcome.UPDATED
    assert stores.contacts.get(PAIR.id, R).applied["Title"] == "Lead"


def test_a_partial_op_for_a_contact_not_in_place_changes_nothing(stores: Stores, target: MemoryTarget) -> None:
    assert apply(link_op(REPORT, "ctcs-boss", B), target, stores) is Outcome.STALE
    assert target.contacts() == [] and not stores.contacts.get(PAIR.id, R).status


def test_a_manager_exchange_cannot_find_yet_is_retried(stores: Stores, target: MemoryTarget) -> None:
    apply(full_op(REPORT, OpKind.CREATE), target, stores)
    target.fail_next(ManagerNotFound("Set-Contact failed: object 'ctcs-boss' couldn't be found", manager="ctcs-boss"))
    link = link_op(REPORT, "ctcs-boss", B)
    with pytest.raises(ManagerNotFound):  # transient: the queue delivers the op again later
        apply(link, target, stores)
    assert not stores.contacts.get(PAIR.id, R).manager_set
    assert apply(link, target, stores) is Outcome.UPDATED
    assert stores.contacts.get(PAIR.id, R).manager_set


def test_contacts_applied_before_manager_links_need_no_call_to_clear_it(stores: Stores, target: MemoryTarget) -> None:
    old = full_op(REPORT, OpKind.CREATE)
    assert old.contact is not None
    legacy = dict(old.contact)
    del legacy["Manager"]  # applied by a release without manager links
    apply(ContactOp(PAIR.id, "run", OpKind.CREATE, R, next(versions), "new", legacy, contact_hash(legacy)), target, stores)
    target.calls.clear()
    assert apply(full_op(REPORT, OpKind.UPDATE), target, stores) is Outcome.UNCHANGED
    assert sum(target.calls.values()) == 0 and stores.contacts.get(PAIR.id, R).applied["Manager"] == ""
