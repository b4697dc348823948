"""Fan-out through the Functions entry points: the timer only asks (one pair-runs message per due pair), each pair is
planned by an invocation of its own, and one pair's failure stops no other (invariant 7)."""

from __future__ import annotations

import logging

import pytest
from azure.functions.timer import TimerRequest

import function_app
from sync.contract.pair_runs import PairRunRequest, RunKind
from sync.contract.vocabulary import RunTrigger
from tests.support.sim_pairs import SimPair, sim_pair

from .conftest import PAIR_ID, SECRET, SECRET_ENV, Sync


def add_pair(sync: Sync, pair_id: str, users: int, *, secret_env: str = SECRET_ENV) -> SimPair:
    made = sim_pair(sync.cloud, secret=SECRET, secret_env=secret_env, pair_id=pair_id)
    for n in range(users):
        made.source.directory.add_user({"displayName": f"Person {n}", "mail": f"person{n}@{made.source.domain}",
                                        "userPrincipalName": f"person{n}@{made.source.domain}"})
    sync.rt.stores.pairs.add(made.pair)
    return made


def anchors(made: SimPair) -> set[str]:
    return {str(c.get("CustomAttribute15")) for c in made.target.exchange.contacts()}


def expected(made: SimPair) -> set[str]:
    return {f"ctcs|{made.source.tenant_id}|{u['id']}" for u in made.source.directory.users}


def test_each_pair_is_planned_by_its_own_invocation_and_a_failing_pair_stops_no_other(
    sync: Sync, caplog: pytest.LogCaptureFixture
) -> None:
    sync.add_users(4)
    second, third = add_pair(sync, "second-pair", 5), add_pair(sync, "third-pair", 6)
    add_pair(sync, "broken-pair", 3, secret_env="CTCS_SECRET_FUNCTIONS_TEST_NOT_SET")  # its secret cannot be read
    with caplog.at_level(logging.INFO, logger="ctcs"):
        function_app.sync_timer(TimerRequest())
        assert sync.rt.stores.pair_runs.approximate_count() == 4, "the timer only asks: one request per pair"
        assert sync.rt.stores.ops.approximate_count() == 0
        planned = sync.host.run_planner()
    assert planned.invocations["plan_pair_run"] == 4 and planned.planner_runs == 4
    runs = {pair_id: sync.rt.stores.runs.recent(pair_id)[0] for pair_id in (PAIR_ID, "second-pair", "third-pair",
                                                                            "broken-pair")}
    assert {pair_id: run.outcome for pair_id, run in runs.items()} == {
        PAIR_ID: "planned", "second-pair": "planned", "third-pair": "planned",
        "broken-pair": "quarantined"}, "an unreadable secret quarantines its pair (credentials), and only that one"
    assert len({run.run_id for run in runs.values()}) == 4, "four invocations, four runs"
    assert "CTCS_SECRET_FUNCTIONS_TEST_NOT_SET" in runs["broken-pair"].error
    logged = [r for r in caplog.records if r.name == "ctcs.http" and getattr(r, "run_id", None)]
    assert {r.pair_id: r.trigger for r in logged} == {  # type: ignore[attr-defined]
        PAIR_ID: "timer", "second-pair": "timer", "third-pair": "timer", "broken-pair": "timer"}
    sync.host.drain_queue(deadline_seconds=60)
    assert sync.anchors() == sync.expected_anchors()
    assert anchors(second) == expected(second) and anchors(third) == expected(third)


def test_the_timer_asks_only_for_due_pairs(sync: Sync) -> None:
    add_pair(sync, "paused-pair", 2)
    sync.rt.stores.pairs.set_enabled("paused-pair", False)
    add_pair(sync, "stopped-pair", 2)
    sync.rt.stores.pair_state.quarantine("stopped-pair", "plan deletes 60 contacts, more than deletion.max_deletes (50)")
    add_pair(sync, "busy-pair", 2)
    sync.rt.stores.pair_state.acquire_lease("busy-pair", "another-run", 600)
    sync.host.fire_timer(run_planner=False)
    [request] = [m.content for m in sync.rt.stores.pair_runs.client.peek_messages(max_messages=32)]
    assert PairRunRequest(PAIR_ID).to_json().split('"requested_at"')[0] in request


def test_a_continue_request_for_a_round_that_has_ended_does_nothing(sync: Sync) -> None:
    sync.add_users(2)
    sync.host.fire_timer()
    sync.host.drain_queue(deadline_seconds=30)
    sync.cloud.reset_counts()
    sync.rt.stores.pair_runs.send(PairRunRequest(PAIR_ID, RunKind.CONTINUE, RunTrigger.TIMER, round_id="gone-round"))
    report = sync.host.run_planner()
    assert report.planner_runs == 1 and sync.cloud.counts["graph"] == 0
    assert len(sync.rt.stores.runs.recent(PAIR_ID)) == 1, "no run recorded"


def test_a_message_that_is_not_a_request_is_dropped_once(sync: Sync) -> None:
    sync.rt.stores.pair_runs.client.send_message("not a request")
    report = sync.host.run_planner()
    assert report.planner_runs == 1 and report.planner_failed == 0 and report.left_in_queue == 0
