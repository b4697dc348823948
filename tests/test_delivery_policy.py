"""One delivery decision for the Functions worker and the CLI drain (sync.core.delivery_policy.decide)."""

from __future__ import annotations

import pytest

from sync.core.delivery_policy import (
    MAX_DEFER_SECONDS,
    MAX_DEQUEUE_COUNT,
    Decision,
    Verdict,
    decide,
    default_backoff,
)
from sync.errors import BadOpMessage, TargetNotFound, TargetRejected, TargetThrottled, TargetTransient


def test_success_is_done() -> None:
    assert decide(None, dequeue_count=3) == Decision(Verdict.DONE)


@pytest.mark.parametrize("count", [1, MAX_DEQUEUE_COUNT])
def test_a_message_that_is_no_op_is_poisoned_at_once(count: int) -> None:
    decision = decide(BadOpMessage("contact operation is not JSON"), dequeue_count=count)
    assert decision.verdict is Verdict.POISON and "not JSON" in decision.reason


@pytest.mark.parametrize(
    ("retry_after", "count", "delay"),
    [
        (30.0, 1, 30),
        (0.249, 1, 1),  # a decimal Retry-After is rounded up
        (0.0, 4, 1),  # never handed straight back: at least a second
        (None, 3, 8),  # no Retry-After: the backoff of the delivery
        (7200.0, 1, MAX_DEFER_SECONDS),  # longer waits are split over several deferrals
    ],
)
def test_throttling_defers_without_spending_a_delivery(retry_after: float | None, count: int, delay: int) -> None:
    decision = decide(TargetThrottled("429", retry_after=retry_after), dequeue_count=count)
    assert decision == Decision(Verdict.DEFER, delay, decision.reason) and "429" in decision.reason


def test_throttling_on_the_last_delivery_still_defers() -> None:
    assert decide(TargetThrottled("429", retry_after=5), dequeue_count=MAX_DEQUEUE_COUNT).verdict is Verdict.DEFER


@pytest.mark.parametrize("error", [TargetTransient("503"), TargetNotFound("gone"), RuntimeError("bug")])
def test_other_failures_are_retried_with_backoff_until_the_last_delivery(error: Exception) -> None:
    for count in range(1, MAX_DEQUEUE_COUNT):
        decision = decide(error, dequeue_count=count)
        assert decision.verdict is Verdict.RETRY and decision.delay_seconds == default_backoff(count)
    last = decide(error, dequeue_count=MAX_DEQUEUE_COUNT)
    assert last.verdict is Verdict.POISON
    assert last.reason == f"{type(error).__name__}: {error}", "the cause is kept for status and replay"


def test_the_backoff_can_be_chosen_by_the_caller() -> None:
    decision = decide(TargetRejected("x"), dequeue_count=2, backoff=lambda count: 0)
    assert decision == Decision(Verdict.RETRY, 0, "TargetRejected: x")


def test_backoff_doubles_up_to_a_minute() -> None:
    assert [default_backoff(n) for n in (1, 2, 3, 4, 5, 6, 7)] == [2, 4, 8, 16, 32, 60, 60]
