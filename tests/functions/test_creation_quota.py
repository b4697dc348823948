"""Exchange's creation quota through the Functions path (timer → queue on Azurite → worker → simulated Exchange):
the load pauses instead of failing, waiting creates are deferred on the queue without spending deliveries, status
shows the pause while it lasts, and the rest is created once the quota frees, without a full round. The CLI `run`
does not hang on it: it exits 4, and a later `run` applies what waited."""

from __future__ import annotations

import json
import threading
import time

import pytest

import function_app
from sync.app.admin.status import status_report
from sync.app.wiring.runtime import Runtime
from sync.cli import main as cli

from .conftest import PAIR_ID, Sync


def pause_in_status() -> dict[str, object] | None:
    pair = status_report(function_app.runtime(), [PAIR_ID])["pairs"][0]
    pause: dict[str, object] | None = pair["exchange"]["creation_quota_pause"]
    return pause


def test_a_load_beyond_the_quota_pauses_and_finishes_when_it_frees(sync: Sync, quick_backoff: None) -> None:
    limits = sync.target.exchange.limits
    limits.configure(creation_quota=8, quota_cooldown=3.0)
    users = sync.add_users(20)
    sync.host.fire_timer()
    drained: list[object] = []
    worker = threading.Thread(target=lambda: drained.append(sync.host.drain_queue(deadline_seconds=90)))
    worker.start()
    seen = None
    deadline = time.monotonic() + 30
    while seen is None and time.monotonic() < deadline:
        seen = pause_in_status()
        time.sleep(0.1)
    assert seen is not None, "status shows the pause while it lasts"
    assert seen["reached_at"] and seen["next_attempt_at"] and int(str(seen["creates_waiting"])) > 0
    worker.join(timeout=120)

    [report] = drained
    assert report.left_in_queue == 0  # type: ignore[attr-defined]
    assert report.failed_attempts == 0 and report.poisoned == 0  # type: ignore[attr-defined]
    assert set(report.dequeue_counts) == {1}, "waiting never spent a delivery"  # type: ignore[attr-defined]
    assert sync.anchors() == sync.expected_anchors() and len(sync.target.exchange.contacts()) == len(users)
    assert sync.rt.stores.contacts.status_counts(PAIR_ID) == {"ok": len(users)}
    assert [run.trigger for run in sync.rt.stores.runs.recent(PAIR_ID)] == ["timer"], "no second round needed"
    assert len(limits.stats.quota_windows) == 2 and limits.stats.creations == len(users)
    assert pause_in_status() is None
    last = status_report(function_app.runtime(), [PAIR_ID])["pairs"][0]["exchange"]["last_quota_pause"]
    assert last is not None and last["lasted_seconds"] >= 3
    # Refused: the creates already on their way when the quota was reached, then one probe at a time; waiting
    # creates did not each try Exchange on every return.
    assert limits.stats.quota_refusals < len(users), limits.stats.quota_refusals


def test_updates_and_deletes_go_on_while_creates_wait(sync: Sync, quick_backoff: None) -> None:
    users = sync.add_users(3)
    sync.host.fire_timer()
    sync.host.drain_queue(deadline_seconds=30)
    sync.target.exchange.limits.configure(creation_quota=1, quota_cooldown=60.0)
    sync.add_users(3, start=3)
    sync.source.directory.update_user(users[0], jobTitle="Chief")
    sync.source.directory.delete_user(users[1])
    sync.host.fire_timer()
    report = sync.host.drain_queue(deadline_seconds=2.5)
    assert report.left_in_queue == 3, "the three creates still wait"
    titles = {c["CustomAttribute15"].rsplit("|", 1)[-1]: c["Title"] for c in sync.target.exchange.contacts()}
    assert titles[users[0]] == "Chief" and users[1] not in titles
    counts = sync.rt.stores.contacts.status_counts(PAIR_ID)
    assert counts["deleted"] == 1 and counts["queued"] == 3 and "failed" not in counts


def test_run_exits_4_while_creates_wait_and_a_later_run_applies_them(
    sync: Sync, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("CTCS_QUOTA_BACKOFF_SECONDS", "3,6")
    monkeypatch.setenv("CTCS_RUN_WAIT_SECONDS", "1")
    sync.target.exchange.limits.configure(creation_quota=5, quota_cooldown=2.0)
    sync.add_users(10)
    started = time.monotonic()
    assert cli.main(["run", "--pair", PAIR_ID], runtime=Runtime.from_settings) == cli.EXIT_WAITING
    assert time.monotonic() - started < 30, "it did not hang"
    err = capsys.readouterr().err
    assert "5 operation(s) of pair contoso-to-fabrikam wait for Exchange" in err and "python -m sync run" in err
    assert "creation quota" in err
    assert cli.main(["status", "--pair", PAIR_ID, "--json"], runtime=Runtime.from_settings) == cli.EXIT_OK
    pause = json.loads(capsys.readouterr().out)["pairs"][0]["exchange"]["creation_quota_pause"]
    assert pause["creates_waiting"] == 5
    assert cli.main(["status"], runtime=Runtime.from_settings) == cli.EXIT_OK
    assert "creation quota" in capsys.readouterr().out
    assert len(sync.target.exchange.contacts()) == 5

    time.sleep(3.5)  # the pause's next attempt
    monkeypatch.setenv("CTCS_RUN_WAIT_SECONDS", "10")
    started = time.monotonic()
    assert cli.main(["run", "--pair", PAIR_ID], runtime=Runtime.from_settings) == cli.EXIT_OK
    assert time.monotonic() - started < 20
    assert sync.anchors() == sync.expected_anchors()
    assert sync.rt.stores.contacts.status_counts(PAIR_ID) == {"ok": 10}
    assert not sync.rt.stores.runs.recent(PAIR_ID)[0].full, "the later run was incremental: no --full needed"
