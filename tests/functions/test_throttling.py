"""Exchange throttling defers an op by its Retry-After without spending one of its deliveries."""

from __future__ import annotations

import time

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
