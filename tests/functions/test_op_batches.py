"""A page with many ops reaches the queue in a few batch messages; the worker function splits each one into
single-op messages and applies those as usual (one delivery each, one contact each)."""

from __future__ import annotations

from sync.contract.ops import is_batch

from .conftest import PAIR_ID, Sync


def test_a_large_page_is_queued_in_batches_that_the_worker_splits(sync: Sync) -> None:
    sync.add_users(70)
    sync.host.fire_timer()
    messages = [m.content for m in sync.rt.stores.ops.peek_all()]
    assert 1 <= len(messages) <= 2 and all(is_batch(m) for m in messages)
    report = sync.host.drain_queue(deadline_seconds=120)
    assert report.completed == len(messages) + 70 and report.failed_attempts == 0 and report.left_in_queue == 0
    assert sync.anchors() == sync.expected_anchors()
    assert sync.rt.stores.contacts.status_counts(PAIR_ID) == {"ok": 70}
    assert sync.cloud.counts[("exchange", "New-MailContact")] == 70
