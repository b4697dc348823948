"""Retry arithmetic the edges share (Graph and Exchange): honour Retry-After (integer, decimal or HTTP date), fall back
to exponential backoff, and stay within a budget per round or per call. Pure: no clock but the one passed in."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds to wait from a Retry-After header: integer, decimal (`0.249`) or HTTP date; None when absent or unreadable."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = parsedate_to_datetime(text)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - (now or datetime.now(UTC))).total_seconds()
    if seconds != seconds or seconds in (float("inf"), float("-inf")):  # NaN or infinite: not a usable wait
        return None
    return max(0.0, seconds)


@dataclass(frozen=True)
class RetryPolicy:
    """How long an edge keeps retrying throttled or transient calls before it gives up and raises.

    `max_retries` and `max_wait_seconds` bound one budget (a Graph round, one Exchange cmdlet call);
    without Retry-After the wait is `base_delay * 2**n`, at most `max_delay`.
    """

    max_retries: int = 5
    max_wait_seconds: float = 120.0
    base_delay: float = 1.0
    max_delay: float = 30.0


class RetryBudget:
    """Counts retries and seconds waited against a `RetryPolicy`."""

    def __init__(self, policy: RetryPolicy) -> None:
        self.policy = policy
        self.retries = 0
        self.waited = 0.0

    def next_wait(self, retry_after: float | None) -> float | None:
        """Seconds to wait before the next attempt, or None when the budget does not allow another one."""
        if self.retries >= self.policy.max_retries:
            return None
        if retry_after is None:
            wait = min(self.policy.max_delay, self.policy.base_delay * 2.0**self.retries)
        else:
            wait = retry_after
        if self.waited + wait > self.policy.max_wait_seconds:
            return None
        return wait

    def spend(self, wait: float) -> None:
        self.retries += 1
        self.waited += wait
