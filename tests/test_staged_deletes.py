"""Staged deletes: `hide` never deletes; `hide_then_delete` hides, restores a returning user, purges after grace."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from sync.app.admin.drain import drain
from sync.app.planner.run import run_pair
from sync.app.wiring.runtime import Runtime
from sync.contract.ops import OpKind
from sync.contract.summaries import StateSummary
from sync.contract.vocabulary import RunTrigger
from sync.core.plan import Baseline, PlanOptions, plan_pair, unsafe_reason
from sync.core.source import DeltaRound
from tests.support.factories import make_pair, make_user
from tests.support.memory_source import MemorySource
from tests.support.memory_target import MemoryTarget

NOW = datetime(2026, 11, 22, tzinfo=UTC)


def planned(mode: str, round_: DeltaRound, state: dict[str, StateSummary], **deletion: object) -> list[tuple[str, str]]:
    pair = make_pair(deletion={"mode": mode, **deletion})
    plan = plan_pair(pair, round_, Baseline(state), PlanOptions(9, "r", now=NOW))
    return [(op.kind.value, op.reason) for op in plan.ops]


def removal_round(user_id: str) -> DeltaRound:
    round_ = DeltaRound()
    round_.add_removal(user_id, "deleted")
    return round_


@pytest.mark.parametrize(("mode", "kind"), [("delete", "delete"), ("hide", "hide"), ("hide_then_delete", "hide")])
def test_removal_deletes_or_hides_by_mode(mode: str, kind: str) -> None:
    state = {"u1": StateSummary("ok", "h", 1, "g")}
    assert planned(mode, removal_round("u1"), state) == [(kind, "removed:deleted")]


def test_a_hidden_contact_is_not_hidden_again() -> None:
    state = {"u1": StateSummary("hidden", "h", 1, "g", NOW)}
    assert planned("hide", removal_round("u1"), state) == []


def test_a_returning_user_is_restored_not_recreated() -> None:
    user = make_user(1)
    round_ = DeltaRound()
    round_.add_user(user)
    state = {str(user["id"]): StateSummary("hidden", "h", 1, "g", NOW - timedelta(days=3))}
    assert planned("hide_then_delete", round_, state) == [("restore", "returned")]


def test_purge_after_the_grace_period_only() -> None:
    state = {
        "old": StateSummary("hidden", "h", 1, "g", NOW - timedelta(days=31)),
        "young": StateSummary("hidden", "h", 1, "g", NOW - timedelta(days=29)),
    }
    assert planned("hide_then_delete", DeltaRound(), state, grace_days=30) == [("delete", "grace_expired:30d")]
    assert planned("hide", DeltaRound(), state, grace_days=30) == []  # hide never deletes


def test_hides_count_against_the_safety_gate() -> None:
    pair = make_pair(deletion={"mode": "hide", "max_deletes": 2})
    state = {f"u{n}": StateSummary("ok", "h", 1, "g") for n in range(3)}
    round_ = DeltaRound()
    for n in range(3):
        round_.add_removal(f"u{n}", "deleted")
    plan = plan_pair(pair, round_, Baseline(state), PlanOptions(1, "r"))
    assert plan.count(OpKind.HIDE) == 3
    assert "removes (hides or deletes) 3 contacts" in (unsafe_reason(plan, pair) or "")


@pytest.fixture
def staged(memory_runtime: Runtime, source: MemorySource) -> Runtime:
    memory_runtime.stores.pairs.add(
        make_pair(deletion={"mode": "hide_then_delete", "grace_days": 30, "max_delete_percent": 50})
    )
    for n in range(12):
        source.add(make_user(n))
    return memory_runtime


def sync(rt: Runtime) -> None:
    run_pair(rt, "contoso-to-fabrikam", trigger=RunTrigger.CLI)
    drain(rt, concurrency=2)


def test_hide_restore_and_purge_end_to_end(staged: Runtime, source: MemorySource, target: MemoryTarget) -> None:
    sync(staged)
    leaver, returner = str(make_user(1)["id"]), str(make_user(2)["id"])
    source.update(leaver, accountEnabled=False)
    source.update(returner, accountEnabled=False)
    sync(staged)
    hidden = {c.params["Name"]: c.params["HiddenFromAddressListsEnabled"] for c in target.contacts()}
    assert len(hidden) == 12 and sum(hidden.values()) == 2
    assert staged.stores.contacts.status_counts("contoso-to-fabrikam") == {"ok": 10, "hidden": 2}

    source.update(returner, accountEnabled=True, jobTitle="Back again")
    target.calls.clear()
    sync(staged)
    back = next(c for c in target.contacts() if c.params["CustomAttribute15"].endswith(returner))
    assert back.params["HiddenFromAddressListsEnabled"] is False and back.params["Title"] == "Back again"
    assert "New-MailContact" not in target.calls  # restored, not re-created

    # Thirty-one days later the leaver's contact is purged; the restored one stays.
    row = staged.stores.contacts.get("contoso-to-fabrikam", leaver)
    staged.stores.contacts.table.update_entity(
        {"PartitionKey": row.pair_id, "RowKey": row.source_id,
         "hidden_at": (datetime.now(UTC) - timedelta(days=31)).isoformat(timespec="seconds")}
    )
    sync(staged)
    assert len(target.contacts()) == 11
    assert staged.stores.contacts.get("contoso-to-fabrikam", leaver).status == "deleted"
