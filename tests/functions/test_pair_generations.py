"""A pair id reused: `pairs remove P` while its creates wait on the queue, then `pairs add` of a new P from another
source into another target. The queued ops (and planning requests, and checkpoints) belong to the old P's
generation: the worker and the planner discard them, counted, and the new target never gets the old source's people.
Through the decorated functions, the real connectors, Azurite and simulated tenants."""

from __future__ import annotations

import json

import pytest

import function_app
from sim import SimCloud
from sync.app.admin.status import pair_status
from sync.cli import main as cli
from sync.contract.pair_runs import PairRunRequest, RunKind
from sync.contract.vocabulary import RunTrigger
from sync.state.pair_state import RoundState
from tests.support.sim_pairs import sim_pair

from .conftest import PAIR_ID, SECRET, SECRET_ENV, Sync


@pytest.mark.parametrize("worker", ["a fresh worker instance", "the worker that planned them"])
def test_ops_queued_for_a_removed_pair_never_reach_a_new_pair_with_its_id(
    sync: Sync, cloud: SimCloud, capsys: pytest.CaptureFixture[str], worker: str
) -> None:
    rt = sync.rt
    sync.add_users(30)
    sync.host.fire_timer()
    assert rt.stores.ops.approximate_count() == 30  # 30 creates of source A's people, for target X
    rt.stores.pair_runs.send(PairRunRequest(PAIR_ID, RunKind.RECONCILE, RunTrigger.HTTP, allow_deletes=True,
                                            generation=rt.stores.pairs.get(PAIR_ID).generation))

    assert cli.main(["pairs", "remove", PAIR_ID], runtime=lambda: rt) == 0
    said = capsys.readouterr().out
    assert (f"31 queued message(s) of pair {PAIR_ID} are now void (30 in {rt.stores.ops.name}, 0 in "
            f"{rt.stores.parked.name}, 1 in {rt.stores.pair_runs.name})") in said

    again = sim_pair(cloud, secret=SECRET, secret_env=SECRET_ENV, pair_id=PAIR_ID)  # source B -> target Y
    rt.stores.pairs.add(again.pair)
    if worker == "a fresh worker instance":  # one that never read the old pair (another instance, or a minute on)
        function_app._runtime.clear()
        rt = sync.rt
    again.source.directory.add_user({"displayName": "B One", "mail": f"one@{again.source.domain}",
                                     "userPrincipalName": f"one@{again.source.domain}"})
    report = sync.host.drain_queue(deadline_seconds=60)
    assert report.poisoned == 0 and report.left_in_queue == 0
    sync.host.run_planner()  # the void reconcile request: discarded, never run with --allow-deletes
    assert not [c for c in again.target.exchange.contacts() if sync.source.domain in str(c.get("ExternalEmailAddress")).lower()]
    # Old main: a fresh worker put A's 30 people in Y; the worker that planned them, in X after the remove, their
    # rows in the new pair's state.
    assert again.target.exchange.contacts() == []
    assert sync.target.exchange.contacts() == []
    assert pair_status(rt, PAIR_ID)["discarded_pair_replaced"] == {"ops": 30, "requests": 1}
    assert rt.stores.contacts.status_counts(PAIR_ID) == {}

    # The new pair plans and syncs its own source, from a fresh start.
    sync.host.fire_timer()
    sync.host.drain_queue(deadline_seconds=60)
    anchors = {str(c.get("CustomAttribute15")) for c in again.target.exchange.contacts()}
    assert anchors == {f"ctcs|{again.source.tenant_id}|{user['id']}" for user in again.source.directory.users}
    assert cli.main(["status", "--json"], runtime=lambda: rt) == 0
    [shown] = json.loads(capsys.readouterr().out)["pairs"]
    assert shown["discarded_pair_replaced"] == {"ops": 30, "requests": 1} and shown["overlap"] is None


def test_a_checkpoint_of_another_generation_is_a_fresh_start(sync: Sync) -> None:
    rt = sync.rt
    sync.add_users(3)
    # What a planner of the removed pair could have left behind: a round in progress, half way, and a deltaLink.
    rt.stores.pair_state.acquire_lease(PAIR_ID, "old-run", 60)
    rt.stores.pair_state.save_round(PAIR_ID, "old-run", RoundState("old-round", full=False, link="https://stale/next",
                                                                    version=1, page=4), lease_seconds=60,
                                    generation="0ld0generation")
    rt.stores.pair_state.release_lease(PAIR_ID, "old-run")
    sync.host.fire_timer()
    assert sync.host.drain_queue(deadline_seconds=30).completed == 3
    assert sync.anchors() == sync.expected_anchors()
    state = rt.stores.pair_state.get(PAIR_ID)
    assert state.generation == rt.stores.pairs.get(PAIR_ID).generation and state.round is None
    [run] = rt.stores.runs.recent(PAIR_ID)
    assert run.full and run.round_id != "old-round"
