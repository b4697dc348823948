"""When a pair quarantined for its credentials is tested again (pure).

The timer re-runs the connection test of such a pair on a back-off: 5 minutes after the failure, then 15, then
every 60. A fix is noticed within the hour at worst, and a pair whose credentials stay broken costs a few token
requests an hour, never one per op.
"""

from __future__ import annotations

from datetime import datetime, timedelta

RETEST_BACKOFF_MINUTES = (5, 15, 60)


def retest_delay(failed_tests: int) -> timedelta:
    """How long after the `failed_tests`-th failed test (1 = the failure that quarantined) the next test runs."""
    index = min(max(failed_tests, 1), len(RETEST_BACKOFF_MINUTES)) - 1
    return timedelta(minutes=RETEST_BACKOFF_MINUTES[index])


def next_retest(failed_tests: int, now: datetime) -> datetime:
    return now + retest_delay(failed_tests)


def retest_due(retest_at: datetime | None, now: datetime) -> bool:
    """A quarantine without a time (written by an older release, or by hand) is due at once."""
    return retest_at is None or retest_at <= now
