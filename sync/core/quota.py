"""The creation quota's pause of one target organisation, as pure arithmetic over a `QuotaPause`.

Exchange Online refuses New-MailContact after a dynamic, unpublished number of recent creations
(`RecipientUsageExceededRecentQuotaException`) and lets creations through again "after a while". ctcs pauses the
creates for that organisation (updates, deletes and other organisations go on) and learns how long the while is:

    refused      the first refusal starts a pause: resume after the first wait (learned, else BACKOFF[0])
    due          the resume time passed: ONE create (the probe) is tried; the others wait a little longer
    probe fails  the quota still holds: wait the learned time if it is longer, else the next back-off step
                 (by default 15 min, 1 h, 4 h, then 4 h again)
    probe works  the quota freed: the pause ends, and what it took is kept for the next pause

Learning: a pause ends knowing the quota freed somewhere between `freed_min` (the longest wait since the quota was
reached that was still too short; 0 when none was) and `freed_max` (the wait that worked). The next pause probes
in the middle of the two, or at `freed_max` when there is no lower bound, so repeated pauses close in on the
tenant's real cooldown with one refused call per pause instead of waiting a whole back-off step each time.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum

DEFAULT_BACKOFF_SECONDS: tuple[int, ...] = (900, 3600, 14400)
MIN_WAIT_SECONDS = 1.0


class Admission(StrEnum):
    GO = "go"  # no pause: create
    PROBE = "probe"  # the pause is due and nobody is probing: this create may try (take the probe first)
    WAIT = "wait"  # paused, or another create is probing: defer until `wait_until`


@dataclass(frozen=True)
class QuotaPause:
    """One organisation's creation-quota state; `reached_at` None means creates are not paused."""

    reached_at: datetime | None = None  # the first refusal of the current pause
    resume_at: datetime | None = None  # creates wait until then
    step: int = 0  # index into the back-off of the current wait
    failed_after: float = 0.0  # this pause: the longest wait (seconds since reached_at) whose probe was refused
    probe_until: datetime | None = None  # a probe create is out until then; the others wait
    freed_min: float = 0.0  # learned from the last pause: seconds still too short (0: unknown)
    freed_max: float = 0.0  # learned from the last pause: seconds after which the quota had freed (0: unknown)
    pauses: int = 0  # pauses this organisation has had (ended ones)
    last_freed_at: datetime | None = None

    @property
    def active(self) -> bool:
        return self.reached_at is not None


def first_wait(pause: QuotaPause, backoff: tuple[int, ...] = DEFAULT_BACKOFF_SECONDS) -> float:
    """Seconds a new pause waits before its first probe: what the last pause taught, else the first back-off step."""
    if pause.freed_max > 0:
        wait = (pause.freed_min + pause.freed_max) / 2 if pause.freed_min > 0 else pause.freed_max
        return max(MIN_WAIT_SECONDS, wait)
    return float(backoff[0])


def refused(pause: QuotaPause, now: datetime, backoff: tuple[int, ...] = DEFAULT_BACKOFF_SECONDS) -> QuotaPause:
    """New-MailContact met the quota at `now`. A refusal while the pause still runs (a create that was already on
    its way) changes nothing; a refusal after the resume time (the probe's) extends the pause."""
    if not pause.active:
        wait = first_wait(pause, backoff)
        return replace(pause, reached_at=now, resume_at=now + timedelta(seconds=wait), step=0, failed_after=0.0,
                       probe_until=None)
    assert pause.reached_at is not None and pause.resume_at is not None
    if now < pause.resume_at:
        return pause
    failed_after = max(pause.failed_after, (now - pause.reached_at).total_seconds())
    if pause.freed_max > failed_after:
        # The quota freed after `freed_max` last time: try exactly then before stepping up the back-off.
        resume_at, step = pause.reached_at + timedelta(seconds=pause.freed_max), pause.step
    else:
        step = pause.step + 1
        resume_at = now + timedelta(seconds=backoff[min(step, len(backoff) - 1)])
    return replace(pause, resume_at=resume_at, step=step, failed_after=failed_after, probe_until=None)


def created(pause: QuotaPause, now: datetime) -> QuotaPause:
    """A create succeeded at `now`. After the resume time that is the probe's answer: the quota freed, the pause
    ends and its bounds are learned. Before it, it was a create already on its way: nothing changes."""
    if not pause.active:
        return pause
    assert pause.reached_at is not None and pause.resume_at is not None
    if now < pause.resume_at:
        return pause
    took = (now - pause.reached_at).total_seconds()
    lower = pause.failed_after or (pause.freed_min if pause.freed_min < took else 0.0)
    return QuotaPause(freed_min=lower, freed_max=took, pauses=pause.pauses + 1, last_freed_at=now)


def admit(pause: QuotaPause, now: datetime) -> tuple[Admission, datetime | None]:
    """May a create go now? (GO | PROBE | WAIT, and until when a WAIT lasts)."""
    if not pause.active:
        return Admission.GO, None
    assert pause.resume_at is not None
    if now < pause.resume_at:
        return Admission.WAIT, pause.resume_at
    if pause.probe_until is not None and now < pause.probe_until:
        return Admission.WAIT, pause.probe_until
    return Admission.PROBE, None


def probing(pause: QuotaPause, now: datetime, lease_seconds: float) -> QuotaPause:
    """The pause with a probe out until `now + lease_seconds` (a probe that never answers frees it then)."""
    return replace(pause, probe_until=now + timedelta(seconds=lease_seconds))


def spread_seconds(wait_seconds: float) -> float:
    """How widely waiting creates scatter their return after a pause (a tenth of the wait, at most a minute), so
    they do not all wake in the same second."""
    return min(60.0, max(0.0, wait_seconds) * 0.1)
