"""Invariant 2: an op that fails on every delivery is not lost. It ends in the poison queue, the poison trigger keeps
it and records it (ContactState `failed`, a SyncRuns `poison` row, visible in status), and once the cause is fixed
`python -m sync replay-poison` puts it back and the worker applies it."""

from __future__ import annotations

import json
from collections.abc import Callable

from sync.core.delivery_policy import MAX_DEQUEUE_COUNT

from .conftest import SyncPair, run_cli


def test_an_op_that_always_fails_is_poisoned_recorded_and_replayed_once_fixed(
    sync: SyncPair, record: Callable[..., None]
) -> None:
    users = sync.add_users(4)
    sync.sync()
    directory = sync.source.directory
    hire = sync.add_user("Hard Case")
    directory.update_user(users[0], jobTitle="Director")
    directory.delete_user(users[1])
    # Every New-MailContact answers 503 with a Retry-After longer than the client waits: raised at once, each time.
    sync.cloud.faults.inject("exchange", "unavailable", operation="New-MailContact", times=10_000, retry_after="120")

    report = sync.sync()

    assert report.failed_attempts == MAX_DEQUEUE_COUNT and report.poisoned == 1 and report.poison_handled == 1
    assert report.completed == 2, "the update and the delete of the same run were applied"
    rt = sync.rt
    row = sync.rows()[hire]
    assert row.status == "failed" and "every delivery" in row.last_error and row.last_op == "create:poisoned"
    [poison_run] = [run for run in rt.stores.runs.recent(sync.pair.id) if run.trigger == "poison"]
    assert poison_run.counts == {"poisoned": 1} and hire in poison_run.error
    kept = rt.stores.failed
    assert kept.approximate_count() == 1 and rt.stores.poison.approximate_count() == 0
    assert json.loads(next(iter(kept.peek_all())).content)["source_id"] == hire

    status = run_cli("status", "--pair", sync.pair.id, "--json")
    [shown] = json.loads(status.stdout)["pairs"]
    assert shown["contacts"]["failed"] == 1 and [p["source_id"] for p in shown["problems"]] == [hire]
    assert shown["waiting"]["poisoned"] == 1 and "New-MailContact failed (HTTP 503)" in shown["problems"][0]["error"]

    sync.cloud.faults.clear()  # the cause is fixed
    replay = run_cli("replay-poison", "--pair", sync.pair.id)
    assert replay.returncode == 0 and "moved 1 failed operation(s)" in replay.stdout, replay.stderr
    sync.cloud.reset_counts()
    again = sync.drain()

    assert again.completed == 1 and again.poisoned == 0 and kept.approximate_count() == 0
    assert sync.rows()[hire].status == "ok" and len(sync.contacts_of(hire)) == 1
    assert sync.cloud.counts[("exchange", "New-MailContact")] == 1
    sync.assert_in_step()
    record(deliveries_before_poison=report.failed_attempts, poisoned=1, recorded="ContactState failed + SyncRuns poison",
           replayed=1, applied_after_replay=1, contacts=len(sync.ours()))
