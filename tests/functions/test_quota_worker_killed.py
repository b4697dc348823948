"""A `python -m sync run` killed (SIGKILL) while Exchange's creation quota holds creates back: the pause, the waiting
creates and status stay consistent. A dead process leaves what it held as it was (received messages, a claimed row,
maybe a probe); what it received comes back once its lease ends (seconds, renewed only while the process lives).
After the kill, a run's note blames Exchange only while status shows a pause, and a later run applies every
waiting create."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable

import pytest

from sync.app.wiring.runtime import Runtime
from sync.cli import main as cli

from .conftest import PAIR_ID, Sync

USERS = 20
QUOTA = 8


def pause_recorded(sync: Sync) -> bool:
    return sync.rt.stores.targets.quota(sync.pair.target.organization)[0].active


def refused_once(sync: Sync) -> bool:
    return sync.target.exchange.limits.stats.quota_refusals >= 1


def kill_run_when(sync: Sync, moment: Callable[[Sync], bool]) -> None:
    """Start `python -m sync run` as its own process and kill it at `moment` (a counted event, polled)."""
    run = subprocess.Popen([sys.executable, "-m", "sync", "run", "--pair", PAIR_ID], env=dict(os.environ),
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while not moment(sync) and run.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert run.poll() is None, "the run ended before the moment it was to be killed"
    run.send_signal(signal.SIGKILL)
    run.wait()


def missing(sync: Sync) -> int:
    """Creates not applied: users without a contact in the target."""
    return len(sync.expected_anchors() - sync.anchors())


@pytest.mark.parametrize("moment", [refused_once, pause_recorded], ids=["at-the-refusal", "pause-recorded"])
def test_a_run_killed_during_a_quota_pause_leaves_no_create_behind(
    sync: Sync, quick_backoff: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
    moment: Callable[[Sync], bool],
) -> None:
    sync.target.exchange.limits.configure(creation_quota=QUOTA, quota_cooldown=3.0)
    sync.add_users(USERS)
    kill_run_when(sync, moment)
    assert missing(sync) >= USERS - QUOTA, "the creates beyond the quota wait (12, or one more in flight at the kill)"

    monkeypatch.setenv("CTCS_RUN_WAIT_SECONDS", "0")  # a run right after the kill: it cannot wait
    assert cli.main(["run", "--pair", PAIR_ID], runtime=Runtime.from_settings) == cli.EXIT_WAITING
    note = capsys.readouterr().err
    assert cli.main(["status", "--pair", PAIR_ID, "--json"], runtime=Runtime.from_settings) == cli.EXIT_OK
    pause = json.loads(capsys.readouterr().out)["pairs"][0]["exchange"]["creation_quota_pause"]
    assert ("wait for Exchange" in note) == (pause is not None), "Exchange is blamed only while status shows a pause"
    if moment is pause_recorded:
        assert pause is not None and pause["reached_at"], "status shows the pause while it holds"

    monkeypatch.setenv("CTCS_RUN_WAIT_SECONDS", "30")
    assert cli.main(["run", "--pair", PAIR_ID], runtime=Runtime.from_settings) == cli.EXIT_OK, capsys.readouterr().err
    assert missing(sync) == 0
    assert len(sync.target.exchange.contacts()) == USERS, "no create applied twice"
    assert sync.rt.stores.contacts.status_counts(PAIR_ID) == {"ok": USERS}
