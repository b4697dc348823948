"""Exchange throttling defers an op by its Retry-After without spending one of its deliveries; a deferred op gives
up its claim on the user's row, and an op that meets another at work on its user is deferred too (RowBusy)."""

from __future__ import annotations

import time

from sync.app.worker.delivery import deliver
from sync.core.delivery_policy import MAX_DEFER_SECONDS, defer_seconds

from .conftest import PAIR_ID, Sync


def test_a_throttled_op_is_deferred_then_applied_without_a_failed_attempt(sync: Sync) -> None:
    sync.add_users(3)
    sync.host.fire_timer()
    sync.host.drain_queue(deadline_seconds=30)
    [user] = sync.source.directory.users[:1]
    sync.source.directory.update_user(user["id"], jobTitle="Chief")
    sync.host.fire_timer()
    # One update; Exchange answers 429 + Retry-After to the first try and to all 4 retries ExchangeTarget makes
    # itself (0.2 s each), so the worker sees TargetThrottled(retry_after=0.2) and defers the op by 1 s.
    sync.cloud.faults.inject("exchange", "throttle", operation="Set-Contact", times=5, retry_after="0.2")
    started = time.monotonic()
    report = sync.host.drain_queue(deadline_seconds=30)
    waited = time.monotonic() - started
    assert report.failed_attempts == 0 and report.poisoned == 0 and report.left_in_queue == 0
    assert report.invocations["apply_contact_op"] == 2  # the update, throttled, then again
    assert report.dequeue_counts == {1: 2}, "the deferred op came back as a fresh message: no attempt was spent"
    assert sync.cloud.counts[("faults", "exchange", "throttle")] == 5
    assert waited >= 1.0, "the op waited its Retry-After before it was delivered again"
    assert {c["Title"] for c in sync.target.exchange.contacts() if c["CustomAttribute15"].endswith(user["id"])} == {
        "Chief"
    }
    assert sync.rt.stores.contacts.status_counts(PAIR_ID) == {"ok": 3}


def test_defer_delay_honours_retry_after_within_bounds() -> None:
    assert defer_seconds(0.2, 1) == 1
    assert defer_seconds(42.5, 3) == 43
    assert defer_seconds(10_000, 1) == MAX_DEFER_SECONDS
    assert defer_seconds(None, 3) == 8  # no Retry-After: the backoff of the delivery


def _take(sync: Sync) -> str:
    """The one op message on the queue, removed from it (to deliver by hand, as a worker instance would)."""
    [message] = sync.rt.stores.ops.receive(max_messages=32, visibility_timeout=60)
    sync.rt.stores.ops.delete(message)
    return str(message.content)


def test_a_deferred_op_keeps_no_claim_so_the_users_newer_op_wins_and_nothing_is_poisoned(sync: Sync) -> None:
    [user] = sync.add_users(1)
    sync.host.fire_timer()
    sync.host.drain_queue(deadline_seconds=30)
    sync.source.directory.update_user(user, jobTitle="Director")
    sync.host.fire_timer()
    older = _take(sync)
    sync.source.directory.update_user(user, jobTitle="Chief")
    sync.host.fire_timer()
    newer = _take(sync)
    # Exchange keeps throttling the older op beyond the client's own retries: it is deferred.
    sync.cloud.faults.inject("exchange", "throttle", operation="Set-Contact", times=5, retry_after="0.2")
    assert deliver(sync.rt, older, dequeue_count=1) == "deferred"
    row = sync.rt.stores.contacts.get(PAIR_ID, user)
    assert row.claim_version == 0 and not row.claim_until, "the deferred op gave up its claim on the user's row"
    assert deliver(sync.rt, newer, dequeue_count=1) == "updated", "the newer op did not meet RowBusy"
    assert deliver(sync.rt, older, dequeue_count=1) == "stale", "the older op, back after its wait, is dropped"
    [contact] = sync.target.exchange.contacts()
    assert contact["Title"] == "Chief"
    assert sync.rt.stores.contacts.status_counts(PAIR_ID) == {"ok": 1}
    assert sync.rt.stores.poison.approximate_count() == 0


def test_an_op_that_meets_another_at_work_on_the_user_is_deferred_not_retried(sync: Sync) -> None:
    [user] = sync.add_users(1)
    sync.host.fire_timer()
    sync.host.drain_queue(deadline_seconds=30)
    sync.source.directory.update_user(user, jobTitle="Chief")
    sync.host.fire_timer()
    body = _take(sync)
    contacts = sync.rt.stores.contacts
    contacts.claim(contacts.get(PAIR_ID, user), 1, 300)  # another instance is applying an op of this user
    for _ in range(6):  # more than maxDequeueCount: RowBusy never spends a delivery
        assert deliver(sync.rt, body, dequeue_count=1) == "deferred"
    contacts.release(contacts.get(PAIR_ID, user))
    assert deliver(sync.rt, body, dequeue_count=1) == "updated"
    assert sync.rt.stores.poison.approximate_count() == 0
