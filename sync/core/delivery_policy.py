"""What happens to a queued op after one delivery: one decision, used by the Functions worker and the CLI's drain.

    decide(error, dequeue_count) → Decision(verdict, delay_seconds, reason)

    done     the op was applied (or its outcome recorded): delete the message
    defer    wait `delay_seconds` without spending a delivery attempt: the same body is sent again, invisible
             until then. Throttling (Retry-After), the creation quota (until it frees: hours, never poisoned)
             and RowBusy (another op of the same user is being applied: seconds) all wait this way
    retry    the delivery failed for a reason worth another attempt: the message comes back after
             `delay_seconds` and this attempt counts towards `MAX_DEQUEUE_COUNT`
    poison   give up: a message that is not an op at all, or the last allowed delivery failed. The op moves to the
             poison queue, and from there to the `-failed` holding queue for `replay-poison` (invariant 2)
    park     the pair's credentials fail (401/403, no token, an unreadable certificate) or the pair is already
             quarantined for them: no retry can help until an admin fixes them. The op is kept, untried, in the
             `-parked` holding queue (invariant 2) without spending a delivery; with `quarantine` the pair is
             quarantined (kind `credentials`) so nothing more is tried or planned. A passing connection test
             lifts the quarantine and moves the pair's parked ops back to the queue.

Pure: it looks only at the error's class and the delivery count.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

from sync.core.diagnosis import is_credentials_failure
from sync.errors import BadOpMessage, CreationQuotaReached, PairParked, RowBusy, TargetThrottled

MAX_DEQUEUE_COUNT = 5  # as host.json's queues.maxDequeueCount (tested)
MAX_DEFER_SECONDS = 600  # the longest one deferral waits; a longer Retry-After is split over several
MIN_DEFER_SECONDS = 1  # never hand a deferred op straight back: Exchange asked us to wait
# A create waiting for the creation quota sleeps until the quota's resume time in one deferral (hours, not ten-minute
# hops that would wake every waiting op six times an hour); a queue message may stay invisible up to 7 days.
MAX_QUOTA_DEFER_SECONDS = 24 * 3600
DEFAULT_QUOTA_DEFER_SECONDS = 900  # when the error does not say (the gate always does)
ROW_BUSY_DEFER_SECONDS = 5  # when RowBusy does not say how long the other op's claim lasts


class Verdict(StrEnum):
    DONE = "done"
    DEFER = "defer"
    RETRY = "retry"
    POISON = "poison"
    PARK = "park"


@dataclass(frozen=True)
class Decision:
    verdict: Verdict
    delay_seconds: int = 0
    reason: str = ""
    quarantine: bool = False  # park: this failure is news, quarantine the pair (credentials)


def default_backoff(dequeue_count: int) -> int:
    """Seconds before a failed delivery is tried again: 2, 4, 8, ... up to a minute."""
    return int(min(60, 2 ** max(1, dequeue_count)))


def defer_seconds(retry_after: float | None, dequeue_count: int, *, maximum: int = MAX_DEFER_SECONDS) -> int:
    """How long a throttled op waits: Retry-After (at least a second), else the backoff; at most `maximum`."""
    wait_for = retry_after if retry_after is not None else default_backoff(max(1, dequeue_count))
    return int(min(maximum, max(MIN_DEFER_SECONDS, math.ceil(wait_for))))


def describe(error: BaseException) -> str:
    """The cause as an admin reads it in status: the error's class and message."""
    return f"{type(error).__name__}: {error}"


def decide(
    error: BaseException | None,
    *,
    dequeue_count: int,
    max_dequeue_count: int = MAX_DEQUEUE_COUNT,
    backoff: Callable[[int], int] = default_backoff,
) -> Decision:
    """The verdict on one delivery that raised `error` (None: it succeeded)."""
    if error is None:
        return Decision(Verdict.DONE)
    if isinstance(error, BadOpMessage):
        return Decision(Verdict.POISON, reason=f"not a contact operation: {error}")
    if isinstance(error, PairParked):
        return Decision(Verdict.PARK, reason=str(error))
    if is_credentials_failure(error):
        return Decision(Verdict.PARK, reason=describe(error), quarantine=True)
    if isinstance(error, TargetThrottled):
        return Decision(Verdict.DEFER, defer_seconds(error.retry_after, dequeue_count), describe(error))
    if isinstance(error, CreationQuotaReached):
        wait = error.retry_after if error.retry_after is not None else DEFAULT_QUOTA_DEFER_SECONDS
        return Decision(Verdict.DEFER, defer_seconds(wait, dequeue_count, maximum=MAX_QUOTA_DEFER_SECONDS),
                        describe(error))
    if isinstance(error, RowBusy):
        wait = error.retry_after if error.retry_after is not None else ROW_BUSY_DEFER_SECONDS
        return Decision(Verdict.DEFER, defer_seconds(wait, dequeue_count), describe(error))
    if dequeue_count >= max_dequeue_count:
        return Decision(Verdict.POISON, reason=describe(error))
    return Decision(Verdict.RETRY, max(0, backoff(dequeue_count)), describe(error))
