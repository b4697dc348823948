"""Timer → queue → worker through the decorated functions: the target ends up matching the source, every run and
op leaves one structured log line, and no secret is logged."""

from __future__ import annotations

import logging

import pytest
from azure.functions.timer import TimerRequest

import function_app

from .conftest import PAIR_ID, SECRET, Sync


def test_timer_then_queue_makes_the_target_match_the_source(sync: Sync) -> None:
    sync.add_users(12)
    sync.host.fire_timer()
    assert sync.rt.stores.ops.approximate_count() == 12
    report = sync.host.drain_queue(deadline_seconds=30)
    assert report.completed == 12 and report.failed_attempts == 0 and report.poisoned == 0
    assert report.left_in_queue == 0 and report.dequeue_counts == {1: 12}
    assert sync.anchors() == sync.expected_anchors()
    assert sync.rt.stores.contacts.status_counts(PAIR_ID) == {"ok": 12}
    [run] = sync.rt.stores.runs.recent(PAIR_ID)
    assert (run.trigger, run.outcome, run.counts.get("create")) == ("timer", "planned", 12)

    # Changes since the last run: one user leaves, one is renamed, one joins.
    users = sync.source.directory.users
    sync.source.directory.update_user(users[0]["id"], displayName="Renamed")
    sync.source.directory.delete_user(users[1]["id"], permanent=False)
    sync.add_users(1, start=100)
    sync.host.fire_timer()
    report = sync.host.drain_queue(deadline_seconds=30)
    assert report.completed == 3 and report.left_in_queue == 0
    assert sync.anchors() == sync.expected_anchors()
    assert "Renamed" in {c["DisplayName"] for c in sync.target.exchange.contacts()}
    assert sync.host.report.timer_runs == 2 and sync.host.report.completed == 15


def test_a_past_due_timer_still_plans(sync: Sync) -> None:
    sync.add_users(2)
    function_app.sync_timer(TimerRequest(past_due=True))  # the timer asks; the planner function plans
    assert sync.rt.stores.pair_runs.approximate_count() == 1
    sync.host.run_planner()
    assert sync.rt.stores.runs.recent(PAIR_ID)[0].outcome == "planned"


def test_one_log_line_per_run_and_per_op_with_fields_and_no_secret(
    sync: Sync, caplog: pytest.LogCaptureFixture
) -> None:
    sync.add_users(3)
    with caplog.at_level(logging.INFO, logger="ctcs"):
        sync.host.fire_timer()
        sync.host.drain_queue(deadline_seconds=30)
    runs = [r for r in caplog.records if r.name == "ctcs.http" and getattr(r, "run_id", None)]
    [run_line] = runs
    assert (run_line.pair_id, run_line.trigger, run_line.outcome) == (PAIR_ID, "timer", "planned")  # type: ignore[attr-defined]
    assert isinstance(run_line.duration_ms, int) and run_line.counts["create"] == 3  # type: ignore[attr-defined]
    ops = [r for r in caplog.records if r.name == "ctcs.worker" and getattr(r, "op_kind", None)]
    assert len(ops) == 3
    for line in ops:
        assert line.pair_id == PAIR_ID and line.run_id == run_line.run_id  # type: ignore[attr-defined]
        assert line.op_kind == "create" and line.outcome == "created"  # type: ignore[attr-defined]
        assert line.source_id and isinstance(line.duration_ms, int)  # type: ignore[attr-defined]
    for record in caplog.records:
        assert SECRET not in record.getMessage() and SECRET not in str(record.__dict__)
