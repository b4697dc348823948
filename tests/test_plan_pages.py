"""Planning a round page by page (pure): the same ops as planning it at once; later pages win; held-back removals
come at the last page; the send ledger decides which queued creates go out again."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from sync.contract.ops import OpKind
from sync.contract.pairs import TenantPair
from sync.contract.summaries import StateSummary
from sync.core.mapping import ContactMapper
from sync.core.plan import Baseline, EarlierPages, Plan, PlanOptions, SendLedger, plan_page, plan_pair
from sync.core.source import DeltaRound
from tests.support.factories import make_pair, make_user

PAIR = make_pair(deletion={"max_deletes": 1000, "max_delete_percent": 100})
STAGED = make_pair(deletion={"mode": "hide_then_delete", "grace_days": 30, "max_deletes": 1000, "max_delete_percent": 100})
NOW = datetime(2026, 11, 26, tzinfo=UTC)


def row(user: dict[str, object], status: str = "ok", **fields: object) -> StateSummary:
    mapped = ContactMapper(PAIR).map(user, str(user["mail"]))
    return StateSummary(status, mapped.hash, 1, "guid-" + str(user["id"]), **fields)  # type: ignore[arg-type]


def paged(objects: list[dict[str, object]], size: int, *, full: bool) -> list[DeltaRound]:
    pages = []
    for start in range(0, len(objects), size):
        page = DeltaRound(full=full)
        page.add_page(objects[start : start + size])
        pages.append(page)
    return pages


def plan_in_pages(pair: TenantPair, pages: list[DeltaRound], state: dict[str, StateSummary], *,
                  now: datetime | None = None) -> list[Plan]:
    """What sync.app.planner.rounds does, without the I/O: each page but the last holds its removals back."""
    seen: set[str] = set()
    leaving: dict[str, str] = {}
    placed: set[str] = set()
    plans = []
    for index, page in enumerate(pages):
        last = index == len(pages) - 1
        plan = plan_page(pair, page, Baseline(state), PlanOptions(100 + index, "r", retry_kept=page.full, now=now),
                         last=last, earlier=EarlierPages(seen, dict(leaving), placed))
        if not last:
            here = set(page.users) | set(page.removed)
            for source_id in here:
                leaving.pop(source_id, None)
            leaving.update({op.source_id: op.reason for op in plan.ops if op.kind.removes})
            plan.ops = [op for op in plan.ops if not op.kind.removes]
            placed |= {op.source_id for op in plan.ops}
            seen |= here
        plans.append(plan)
    return plans


def summary(plans: list[Plan]) -> list[tuple[str, str, str]]:
    return sorted((op.kind.value, op.source_id, op.reason) for plan in plans for op in plan.ops)


@pytest.mark.parametrize("full", [False, True])
def test_a_round_planned_page_by_page_makes_the_ops_of_the_whole_round(full: bool) -> None:
    users = [make_user(n) for n in range(12)]
    state = {str(u["id"]): row(u) for u in users[:8]}
    state[str(make_user(50)["id"])] = row(make_user(50))  # gone without a trace: only a full round sees it
    objects: list[dict[str, object]] = [
        {**users[0], "jobTitle": "Boss"},  # update
        {**users[1], "accountEnabled": False},  # leaves scope
        {"id": str(users[2]["id"]), "@removed": {"reason": "deleted"}},  # removed
        *users[3:8],  # unchanged
        *users[8:],  # new
    ]
    whole = DeltaRound(full=full)
    whole.add_page(objects)
    at_once = plan_pair(PAIR, whole, Baseline(state), PlanOptions(100, "r", retry_kept=full))
    pages = plan_in_pages(PAIR, paged(objects, 3, full=full), state)
    assert summary(pages) == summary([at_once])
    assert all(not op.kind.removes for plan in pages[:-1] for op in plan.ops), "removals wait for the last page"
    swept = ("delete", str(make_user(50)["id"]), "not_in_source")
    assert (swept in summary(pages)) is full


def test_a_later_page_wins_over_an_earlier_removal() -> None:
    user = make_user(1)
    state = {str(user["id"]): row(user)}
    first = {"id": str(user["id"]), "@removed": {"reason": "changed"}}  # soft-deleted, then restored in the round
    pages = plan_in_pages(PAIR, paged([first, make_user(2), user], 2, full=False), state)
    assert summary(pages) == [("create", str(make_user(2)["id"]), "new")]


def test_held_back_removals_are_planned_at_the_last_page() -> None:
    users = [make_user(n) for n in range(4)]
    state = {str(u["id"]): row(u) for u in users}
    removed = [{"id": str(u["id"]), "@removed": {"reason": "deleted"}} for u in users[:3]]
    pages = plan_in_pages(PAIR, paged([*removed, users[3]], 1, full=False), state)
    assert [len(plan.ops) for plan in pages] == [0, 0, 0, 3]
    assert {op.reason for op in pages[-1].ops} == {"removed:deleted"}


def test_a_hidden_user_restored_on_an_earlier_page_is_not_purged() -> None:
    user, other = make_user(1), make_user(2)
    expired = NOW - timedelta(days=40)
    state = {str(user["id"]): row(user, "hidden", hidden_at=expired), str(other["id"]): row(other, "hidden", hidden_at=expired)}
    pages = plan_in_pages(STAGED, paged([user, make_user(3)], 1, full=False), state, now=NOW)
    assert summary(pages) == [
        ("create", str(make_user(3)["id"]), "new"),
        ("delete", str(other["id"]), "grace_expired:30d"),
        ("restore", str(user["id"]), "returned"),
    ]


def queued(user: dict[str, object], round_id: str, page: int) -> StateSummary:
    return row(user, "queued", queued_round=round_id, queued_page=page)


@pytest.mark.parametrize(
    ("marked", "ledger", "full", "expected"),
    [
        (("R", 3), SendLedger("R", 3), False, None),  # marked by the page being planned again: maybe unsent
        (("R", 3), SendLedger("R", 3), True, None),
        (("R", 1), SendLedger("R", 3), True, "kept"),  # an earlier page of this round sent it
        (("R", 1), SendLedger("R", 3), False, "kept"),
        (("OLD", 5), SendLedger("R", 0, {"OLD": 5}), False, None),  # an abandoned round stopped at that page
        (("OLD", 4), SendLedger("R", 0, {"OLD": 5}), True, "kept"),
        (("DONE", 9), SendLedger("R", 0), True, "requeued"),  # a completed round's: a full round checks again
        (("DONE", 9), SendLedger("R", 0), False, "kept"),
        (("", 0), SendLedger("R", 0), True, "requeued"),
    ],
)
def test_the_send_ledger_decides_which_queued_creates_go_out_again(
    marked: tuple[str, int], ledger: SendLedger, full: bool, expected: str | None
) -> None:
    user = make_user(1)
    page = DeltaRound(full=full)
    page.add_page([user])
    plan = plan_page(PAIR, page, Baseline({str(user["id"]): queued(user, *marked)}),
                     PlanOptions(7, "r", retry_kept=full, ledger=ledger), last=False)
    if expected == "kept":
        assert plan.ops == [] and plan.kept["queued"] == 1
    else:
        [op] = plan.ops
        assert op.kind is OpKind.CREATE and op.reason == (expected or "resent") and op.version == 7
