"""The planner: creates, updates, no-ops, deletes on removal and scope exit, the full-round sweep, the safety gate."""

from __future__ import annotations

import pytest

from sync.contract.ops import OpKind
from sync.contract.summaries import StateSummary
from sync.core.mapping import ContactMapper
from sync.core.plan import Baseline, Plan, PlanOptions, RemovalWindow, plan_pair, removal_key, unsafe_reason
from sync.core.source import DeltaRound
from tests.support.factories import make_pair, make_user

PAIR = make_pair()


def round_of(*users: dict[str, object], removed: dict[str, str] | None = None, full: bool = False) -> DeltaRound:
    round_ = DeltaRound(full=full)
    round_.add_page(list(users))
    for user_id, reason in (removed or {}).items():
        round_.add_removal(user_id, reason)
    return round_


def applied_row(user: dict[str, object], status: str = "ok") -> StateSummary:
    mapped = ContactMapper(PAIR).map(user, str(user["mail"]))
    return StateSummary(status, mapped.hash, 1, "guid-" + str(user["id"]))


def plan(round_: DeltaRound, state: dict[str, StateSummary] | None = None, *, retry_kept: bool = False,
         hidden_ids: frozenset[str] | None = None) -> Plan:
    return plan_pair(PAIR, round_, Baseline(state or {}, hidden_ids=hidden_ids), PlanOptions(100, "run-1", retry_kept=retry_kept))


def kinds(result) -> list[tuple[str, str, str]]:  # type: ignore[no-untyped-def]
    return [(op.kind.value, op.source_id, op.reason) for op in result.ops]


def test_new_users_are_created_with_the_full_contact_hash_and_version() -> None:
    user = make_user(1)
    result = plan(round_of(user))
    [op] = result.ops
    assert (op.kind, op.version, op.run_id, op.reason) == (OpKind.CREATE, 100, "run-1", "new")
    assert op.contact is not None and op.contact["DisplayName"] == "User 1"
    assert op.hash == ContactMapper(PAIR).map(user, "user1@contoso.com").hash


def test_unchanged_users_make_no_op() -> None:
    user = make_user(1)
    result = plan(round_of(user), {str(user["id"]): applied_row(user)})
    assert result.ops == [] and result.unchanged == 1


def test_changed_and_cleared_values_make_an_update_with_the_full_contact() -> None:
    user = make_user(1)
    state = {str(user["id"]): applied_row(user)}
    result = plan(round_of({**user, "jobTitle": None}), state)
    [op] = result.ops
    assert op.kind is OpKind.UPDATE and op.contact is not None
    assert op.contact["Title"] == "" and op.contact["Department"] == "Sales"


def test_leaving_scope_deletes_and_removal_deletes() -> None:
    disabled, gone, never = make_user(1, accountEnabled=False), make_user(2), make_user(3, userType="Guest")
    state = {str(disabled["id"]): applied_row(disabled), str(gone["id"]): applied_row(gone)}
    result = plan(round_of(disabled, never, removed={str(gone["id"]): "deleted"}), state)
    assert sorted(kinds(result)) == [
        ("delete", str(disabled["id"]), "left_scope:disabled"),
        ("delete", str(gone["id"]), "removed:deleted"),
    ]
    assert [(s.source_id, s.reason) for s in result.skips] == [(str(never["id"]), "guest")]


def test_soft_deleted_users_are_removed_like_deleted_ones() -> None:
    user = make_user(1)
    result = plan(round_of(removed={str(user["id"]): "changed"}), {str(user["id"]): applied_row(user)})
    assert kinds(result) == [("delete", str(user["id"]), "removed:changed")]


def test_removal_of_a_user_without_contact_does_nothing() -> None:
    assert plan(round_of(removed={"x": "deleted"})).ops == []


def test_a_full_round_sweeps_contacts_whose_user_is_gone() -> None:
    kept, gone = make_user(1), make_user(2)
    state = {str(kept["id"]): applied_row(kept), str(gone["id"]): applied_row(gone),
             "tomb": StateSummary("deleted", "", 1)}
    result = plan(round_of(kept, full=True), state)
    assert kinds(result) == [("delete", str(gone["id"]), "not_in_source")]
    assert plan(round_of(kept, full=False), state).ops == []


def test_a_returning_user_is_created_again() -> None:
    user = make_user(1)
    result = plan(round_of(user), {str(user["id"]): StateSummary("deleted", "", 5)})
    assert kinds(result) == [("create", str(user["id"]), "returned")]


def test_conflicts_are_kept_until_the_contact_changes_or_a_full_round() -> None:
    user = make_user(1)
    state = {str(user["id"]): applied_row(user, status="conflict")}
    assert plan(round_of(user), state).kept["conflict"] == 1
    assert kinds(plan(round_of(user), state, retry_kept=True)) == [("update", str(user["id"]), "retry_conflict")]
    assert kinds(plan(round_of({**user, "jobTitle": "New"}), state)) == [("update", str(user["id"]), "retry_conflict")]


def test_last_occurrence_in_a_round_wins() -> None:
    user = make_user(1)
    round_ = DeltaRound()
    round_.add_page([user, {"id": user["id"], "@removed": {"reason": "changed"}}])
    round_.add_page([{**user, "jobTitle": "Back"}])
    [op] = plan(round_).ops
    assert op.kind is OpKind.CREATE and op.contact is not None and op.contact["Title"] == "Back"


def test_ops_are_ordered_deletes_updates_creates() -> None:
    a, b, c = make_user(1), make_user(2), make_user(3)
    state = {str(a["id"]): applied_row(a), str(b["id"]): applied_row(b)}
    result = plan(round_of({**a, "accountEnabled": False}, {**b, "city": "Oslo"}, c), state)
    assert [op.kind.value for op in result.ops] == ["delete", "update", "create"]


def test_warnings_are_counted() -> None:
    result = plan(round_of(make_user(1, country="Narnia"), make_user(2, jobTitle="x" * 300)))
    assert result.warnings == {"country_dropped": 1, "truncated": 1}


@pytest.mark.parametrize(
    ("managed", "deletes", "limits", "unsafe"),
    [
        (100, 10, {}, False),            # 10% of 100: at the limit
        (100, 11, {}, True),             # 11% > 10%
        (1000, 50, {}, False),           # 50 = max_deletes, 5%
        (1000, 51, {}, True),            # 51 > max_deletes
        (5, 3, {}, False),               # too few contacts for the percentage rule
        (100, 30, {"max_delete_percent": 50, "max_deletes": 100}, False),
        (100, 1, {"max_deletes": 0}, True),
    ],
)
def test_safety_gate(managed: int, deletes: int, limits: dict[str, int], unsafe: bool) -> None:
    pair = make_pair(deletion=limits)
    users = [make_user(n) for n in range(managed)]
    state = {str(u["id"]): StateSummary("ok", "h", 1, "g") for u in users}
    round_ = round_of(removed={str(u["id"]): "deleted" for u in users[:deletes]})
    result = plan_pair(pair, round_, Baseline(state), PlanOptions(1, "r"))
    assert result.count(OpKind.DELETE) == deletes
    reason = unsafe_reason(result, pair)
    assert (reason is not None) is unsafe
    if unsafe:
        assert reason is not None and "deletion.max_" in reason


def test_the_gate_counts_the_window_with_the_plan_and_a_contact_removed_again_once() -> None:
    pair = make_pair(deletion={"max_deletes": 1000, "max_delete_percent": 10})
    users = [make_user(n) for n in range(100)]
    state = {str(u["id"]): StateSummary("ok", "h", 1, "g") for u in users}
    leaving = [str(u["id"]) for u in users[:6]]
    round_ = round_of(removed=dict.fromkeys(leaving, "deleted"))
    alone = plan_pair(pair, round_, Baseline(state), PlanOptions(1, "r"))
    assert unsafe_reason(alone, pair) is None  # 6 of 100: under 10 % on its own
    earlier = RemovalWindow(24, hidden=0, deleted=5, keys=frozenset(removal_key(f"gone-{n}") for n in range(5)))
    waves = plan_pair(pair, round_, Baseline(state, window=earlier), PlanOptions(1, "r"))
    assert unsafe_reason(waves, pair) == (
        "over the last 24 h (deletion.window_hours) the pair deletes 11 of 105 contacts (10.5%), more than "
        "deletion.max_delete_percent (10%): 6 in this plan, 5 more queued earlier in the window")
    again = RemovalWindow(24, hidden=5, keys=frozenset(removal_key(source_id) for source_id in leaving[:5]))
    repeated = plan_pair(pair, round_, Baseline(state, window=again), PlanOptions(1, "r"))
    assert unsafe_reason(repeated, pair) is None, "the same contacts removed again count once"
    off = make_pair(deletion={"max_deletes": 1000, "max_delete_percent": 10, "window_hours": 0})
    assert unsafe_reason(plan_pair(off, round_, Baseline(state), PlanOptions(1, "r")), off) is None


def test_an_adopted_contacts_leaver_is_hidden_unless_the_pair_follows_its_mode() -> None:
    adopted, made = make_user(1), make_user(2)
    state = {str(u["id"]): StateSummary("ok", "h", 1, "g") for u in (adopted, made)}
    round_ = round_of(removed={str(adopted["id"]): "deleted", str(made["id"]): "deleted"})
    baseline = Baseline(state, adopted=frozenset({str(adopted["id"])}))
    hiding = plan_pair(make_pair(), round_, baseline, PlanOptions(1, "r"))
    assert sorted((op.kind.value, op.source_id) for op in hiding.ops) == [
        ("delete", str(made["id"])), ("hide", str(adopted["id"]))]
    following = make_pair(deletion={"adopted": "follow_mode"})
    assert {op.kind for op in plan_pair(following, round_, baseline, PlanOptions(1, "r")).ops} == {OpKind.DELETE}


def test_counts_summarise_the_plan() -> None:
    user = make_user(1)
    result = plan(round_of(user, make_user(2, mail=None), make_user(3, accountEnabled=False)))
    assert result.counts() == {"create": 1, "update": 0, "delete": 0, "hide": 0, "restore": 0, "unchanged": 0,
                               "skipped_disabled": 1, "skipped_no_mail": 1}


def test_source_exchange_hiding_decides_when_given() -> None:
    shown, hidden, gone_hidden = make_user(1, showInAddressList=False), make_user(2), make_user(3)
    state = {str(hidden["id"]): applied_row(hidden), str(gone_hidden["id"]): applied_row(gone_hidden)}
    hidden_ids = frozenset({str(hidden["id"]), str(gone_hidden["id"])})
    result = plan(round_of(shown, hidden, full=True), state, hidden_ids=hidden_ids)
    assert sorted(kinds(result)) == [
        ("create", str(shown["id"]), "new"),  # Exchange, not Graph's showInAddressList, is authoritative
        ("delete", str(hidden["id"]), "left_scope:hidden_from_gal"),
        ("delete", str(gone_hidden["id"]), "left_scope:hidden_from_gal"),  # hidden without a Graph change: once
    ]


# --- creates still on the queue (status `queued`) -------------------------------------------------------------------


def queued_row(user: dict[str, object]) -> StateSummary:
    return StateSummary("queued", ContactMapper(PAIR).map(user, str(user["mail"])).hash, 0)


def test_a_queued_create_is_left_alone_until_the_user_changes() -> None:
    user = make_user(1)
    state = {str(user["id"]): queued_row(user)}
    waiting = plan(round_of(user), state)
    assert waiting.ops == [] and waiting.counts()["kept_queued"] == 1
    changed = plan(round_of({**user, "jobTitle": "Chief"}), state)
    assert kinds(changed) == [("create", str(user["id"]), "changed")]


def test_a_full_round_requeues_creates_that_may_have_been_lost() -> None:
    user = make_user(1)
    result = plan(round_of(user, full=True), {str(user["id"]): queued_row(user)}, retry_kept=True)
    assert kinds(result) == [("create", str(user["id"]), "requeued")]


def test_a_user_removed_while_the_create_waits_gets_a_delete() -> None:
    gone, left = make_user(1), make_user(2, accountEnabled=False)
    state = {str(gone["id"]): queued_row(gone), str(left["id"]): queued_row(left)}
    result = plan(round_of(left, removed={str(gone["id"]): "deleted"}), state)
    assert sorted(kinds(result)) == [
        ("delete", str(gone["id"]), "removed:deleted"),
        ("delete", str(left["id"]), "left_scope:disabled"),
    ]


def test_queued_creates_are_not_counted_as_managed_contacts_by_the_gate() -> None:
    users = [make_user(n) for n in range(12)]
    state = {str(u["id"]): applied_row(u) for u in users[:10]} | {str(u["id"]): queued_row(u) for u in users[10:]}
    assert plan(round_of(*users), state).managed == 10
