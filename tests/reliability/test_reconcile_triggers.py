"""When reconcile rounds run (issue 13, item 5) and a planning run killed between marking creates and sending them
(item 4): through the Functions entry points (sim.host.LocalHost), the real clients, the simulator and Azurite."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import timedelta

from sync.contract.vocabulary import ContactStatus, RunTrigger
from sync.state.entities import iso, now_utc

from .conftest import REPO, SyncPair, exchange_counts, run_cli


def test_the_timer_asks_for_a_reconcile_when_it_is_due_and_spreads_new_pairs(sync: SyncPair) -> None:
    users = sync.add_users(5)
    sync.sync()
    state = sync.rt.stores.pair_state
    due = state.get(sync.pair.id).reconcile_due_at
    assert due, "the first timer run schedules the pair's first reconcile"
    assert now_utc() <= now_utc().fromisoformat(due) <= now_utc() + timedelta(hours=sync.pair.reconcile_hours)
    sync.target.exchange.set_recipient(str(sync.contacts_of(users[0])[0]["Guid"]), Title="Edited by hand")
    sync.sync()
    assert sync.mismatches(), "an ordinary run does not see the edit"

    state.schedule_reconcile(sync.pair.id, iso(now_utc() - timedelta(minutes=1)))
    sync.sync()

    sync.assert_in_step()
    run = sync.last_run()
    assert run.trigger is RunTrigger.RECONCILE and run.counts["drift_repaired"] == 1
    after = state.get(sync.pair.id)
    assert after.reconcile_run_id == run.run_id
    assert now_utc().fromisoformat(after.reconcile_due_at) > now_utc() + timedelta(hours=sync.pair.reconcile_hours - 1)


def test_post_reconcile_asks_the_planner_and_status_shows_it(sync: SyncPair) -> None:
    users = sync.add_users(4)
    sync.sync()
    sync.target.exchange.run("Remove-MailContact", {"Identity": str(sync.contacts_of(users[1])[0]["Guid"])})

    answer = sync.host.call_http("POST", f"/api/pairs/{sync.pair.id}/reconcile")
    assert answer.status == 202 and answer.json["requested"] == "reconcile"
    sync.drain()  # the pair-runs queue first, then the ops

    sync.assert_in_step()
    status = sync.host.call_http("GET", f"/api/pairs/{sync.pair.id}").json["status"]
    assert status["last_reconcile"]["repaired"]["recreated"] == 1
    assert status["recent_runs"][0]["trigger"] == "reconcile"
    assert sync.host.call_http("POST", "/api/pairs/no-such-pair/reconcile").status == 404


def test_a_pair_removed_and_added_again_reconciles_first_and_creates_nothing(sync: SyncPair) -> None:
    sync.add_users(40)
    sync.sync()
    contacts = {c["Guid"] for c in sync.ours()}
    rt = sync.rt
    rt.stores.contacts.forget_pair(sync.pair.id)  # what `pairs remove` drops
    rt.stores.pair_state.forget(sync.pair.id)
    sync.cloud.reset_counts()

    sync.sync()  # the next ordinary timer run

    counts = exchange_counts(sync.cloud)
    assert counts.get("New-MailContact", 0) == 0 and not any(c.startswith("Set-") for c in counts), counts
    assert {c["Guid"] for c in sync.ours()} == contacts
    sync.assert_in_step()
    run = sync.last_run()
    assert run.trigger is RunTrigger.RECONCILE and run.counts["rows_rebuilt"] == 40


_KILLED_PLANNER = """
import os, signal, sys
from sync.app.planner.run import run_pair
from sync.app.wiring.runtime import Runtime
from sync.contract.vocabulary import RunTrigger
from sync.state.queues import OpQueue

send_texts = OpQueue.send_texts

def send_one_then_die(self, bodies):
    send_texts(self, list(bodies)[:1])  # one message reaches the queue, then the process is killed
    os.kill(os.getpid(), signal.SIGKILL)

OpQueue.send_texts = send_one_then_die
run_pair(Runtime.from_settings(), sys.argv[1], trigger=RunTrigger.CLI)
"""


def test_a_planning_run_killed_between_marking_and_sending_loses_no_create(sync: SyncPair) -> None:
    users = sync.add_users(300)
    env = {**os.environ, "CTCS_LEASE_SECONDS": "3"}  # the killed run's lease runs out quickly
    killed = subprocess.run([sys.executable, "-c", _KILLED_PLANNER, sync.pair.id], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=120, check=False)
    assert killed.returncode == -9, killed.stderr[-2000:]
    counts = sync.rt.stores.contacts.status_counts(sync.pair.id)
    sent = sync.rt.stores.ops.approximate_count()
    assert counts[ContactStatus.QUEUED] >= 100 and sent == 1, (counts, sent)
    status = sync.host.call_http("GET", f"/api/pairs/{sync.pair.id}").json["status"]
    assert status["waiting"]["creates_queued"] == counts[ContactStatus.QUEUED], "status counts the waiting rows"
    time.sleep(3.5)

    sync.sync()  # the next ordinary run

    sync.assert_in_step()
    assert len(sync.ours()) == len(users)
    assert sync.rt.stores.contacts.status_counts(sync.pair.id).get(ContactStatus.QUEUED, 0) == 0


def test_the_reconcile_command_previews_with_dry_run_and_repairs_without(sync: SyncPair) -> None:
    users = sync.add_users(3)
    sync.sync()
    guid = str(sync.contacts_of(users[0])[0]["Guid"])
    sync.target.exchange.set_recipient(guid, Department="Edited")

    preview = run_cli("reconcile", "--pair", sync.pair.id, "--dry-run", "--json")
    assert preview.returncode == 0, preview.stderr
    found = json.loads(preview.stdout)
    assert found["dry_run"] is True and found["found"]["drifted"] == {users[0]: ["Department"]}
    assert sync.target.exchange.get(guid)["Department"] == "Edited", "the dry run writes nothing"  # type: ignore[index]

    repaired = run_cli("reconcile", "--pair", sync.pair.id)
    assert repaired.returncode == 0, repaired.stderr
    assert "drift_repaired" in repaired.stdout and "changed by hand (Department)" in repaired.stdout
    sync.assert_in_step()
    status = run_cli("status", "--pair", sync.pair.id)
    assert "last reconcile" in status.stdout and "drift_repaired 1" in status.stdout
    explained = run_cli("explain", "--pair", sync.pair.id, users[0], "--json")
    assert "changed by hand (Department); set back" in json.loads(explained.stdout)["verdict"]
