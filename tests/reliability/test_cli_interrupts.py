"""The CLI against the simulated tenants as an admin uses it: Ctrl-C in the middle of a run, and `explain` for
someone the source does not have. Each ends with one line and an exit code, never a traceback."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid

from sync.cli import main as cli

from .conftest import REPO, SyncPair, run_cli


def test_ctrl_c_during_run_exits_130_with_one_line_and_loses_nothing(sync: SyncPair) -> None:
    users = sync.add_users(40)
    # Exchange keeps answering 429: the run is still applying when the admin presses Ctrl-C.
    sync.cloud.faults.inject("exchange", "throttle", operation="New-MailContact", times=1_000_000, retry_after="1")
    process = subprocess.Popen(
        [sys.executable, "-m", "sync", "run", "--pair", sync.pair.id], cwd=REPO, env=dict(os.environ),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    deadline = time.monotonic() + 60
    while sync.cloud.counts[("exchange", "New-MailContact")] == 0 and time.monotonic() < deadline:
        time.sleep(0.2)  # planned and applying
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=90)

    assert process.returncode == cli.EXIT_INTERRUPTED, stderr
    assert "Traceback" not in stderr
    assert "interrupted: ops already queued stay on the queue" in stderr
    sync.cloud.faults.clear()
    sync.drain(deadline_seconds=240)  # the worker picks up what the interrupted run left (received ones reappear)
    assert sync.assert_in_step() == len(users)


def test_explain_for_someone_the_source_does_not_have(sync: SyncPair) -> None:
    sync.add_users(2)
    sync.sync()
    stranger = str(uuid.uuid4())
    for key in (stranger, "nobody@nowhere.example"):
        result = run_cli("explain", "--pair", sync.pair.id, key)
        assert result.returncode == cli.EXIT_OK, result.stderr
        assert "not found in the source tenant" in result.stdout and result.stderr == ""
