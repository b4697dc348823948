"""The creation quota's pause: the pure arithmetic (sync.core.quota), the gate every worker instance shares through
the TargetState table on Azurite (sync.app.worker.quota_gate), and what the delivery policy makes of it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from sync.app.worker.quota_gate import QuotaGate
from sync.core import quota
from sync.core.delivery_policy import MAX_DEFER_SECONDS, Verdict, decide
from sync.core.quota import Admission, QuotaPause
from sync.errors import CreationQuotaReached, RowBusy
from sync.state.stores import Stores

T0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
BACKOFF = (900, 3600, 14400)
ORG = "fabrikam.onmicrosoft.com"


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def test_the_first_refusal_pauses_creates_for_the_first_back_off_step() -> None:
    pause = quota.refused(QuotaPause(), at(0), BACKOFF)
    assert pause.active and pause.reached_at == at(0) and pause.resume_at == at(900)
    assert quota.admit(pause, at(10)) == (Admission.WAIT, at(900))
    assert quota.refused(pause, at(30), BACKOFF) == pause, "a create already on its way changes nothing"
    assert quota.admit(QuotaPause(), at(10)) == (Admission.GO, None)


def test_after_the_resume_time_one_create_probes_and_the_others_wait_for_it() -> None:
    pause = quota.refused(QuotaPause(), at(0), BACKOFF)
    assert quota.admit(pause, at(900)) == (Admission.PROBE, None)
    probing = quota.probing(pause, at(900), 60)
    assert quota.admit(probing, at(901)) == (Admission.WAIT, at(960))
    assert quota.admit(probing, at(961)) == (Admission.PROBE, None), "a probe that never answered frees the probe"


def test_a_refused_probe_steps_up_the_back_off_and_the_last_step_repeats() -> None:
    pause = quota.refused(QuotaPause(), at(0), BACKOFF)
    pause = quota.refused(pause, at(900), BACKOFF)
    assert (pause.step, pause.resume_at, pause.failed_after) == (1, at(900 + 3600), 900)
    pause = quota.refused(pause, at(4500), BACKOFF)
    assert pause.resume_at == at(4500 + 14400)
    pause = quota.refused(pause, at(18900), BACKOFF)
    assert pause.resume_at == at(18900 + 14400)


def test_a_pause_ends_with_the_first_create_after_the_resume_time_and_is_learned() -> None:
    pause = quota.refused(QuotaPause(), at(0), BACKOFF)
    assert quota.created(pause, at(100)) == pause, "created before the pause ended: it was on its way"
    pause = quota.refused(pause, at(900), BACKOFF)  # probe at 15 min: still refused
    ended = quota.created(pause, at(4500))  # probe at 1 h 15 min: freed
    assert not ended.active and ended.pauses == 1 and ended.last_freed_at == at(4500)
    assert (ended.freed_min, ended.freed_max) == (900, 4500)
    # The next pause probes between what was too short and what worked: (900 + 4500) / 2 = 45 minutes.
    again = quota.refused(ended, at(10_000), BACKOFF)
    assert again.resume_at == at(10_000 + 2700)
    # Refused at 45 min: it waited less than what worked last time, so it tries exactly that next.
    again = quota.refused(again, at(12_700), BACKOFF)
    assert again.resume_at == at(10_000 + 4500) and again.step == 0
    # Worked at 75 min: the bounds close in on the tenant's real cooldown.
    learned = quota.created(again, at(14_500))
    assert (learned.freed_min, learned.freed_max) == (2700, 4500) and learned.pauses == 2


def test_a_pause_that_freed_at_its_first_probe_keeps_the_earlier_lower_bound() -> None:
    learned = QuotaPause(freed_min=900, freed_max=4500, pauses=1)
    pause = quota.refused(learned, at(0), BACKOFF)
    ended = quota.created(pause, at(2700))
    assert (ended.freed_min, ended.freed_max) == (900, 2700)


def test_waiting_creates_spread_their_return() -> None:
    assert quota.spread_seconds(900) == 60 and quota.spread_seconds(100) == 10 and quota.spread_seconds(-1) == 0


def test_the_delivery_policy_defers_waiting_ops_without_spending_an_attempt() -> None:
    waiting = decide(CreationQuotaReached("paused", retry_after=3 * 3600), dequeue_count=5)
    assert waiting.verdict is Verdict.DEFER and waiting.delay_seconds == 3 * 3600, "one deferral, never poisoned"
    assert decide(CreationQuotaReached("paused"), dequeue_count=1).delay_seconds == 900
    busy = decide(RowBusy("held", retry_after=4.2), dequeue_count=5)
    assert (busy.verdict, busy.delay_seconds) == (Verdict.DEFER, 5)
    assert decide(RowBusy("held", retry_after=10_000), dequeue_count=1).delay_seconds == MAX_DEFER_SECONDS


# --- the gate on Azurite ------------------------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


def gate(stores: Stores, clock: Clock) -> QuotaGate:
    """One worker instance's gate (its own cache), on the shared table."""
    return QuotaGate(stores.targets, backoff=(60, 300), cache_seconds=0.0, clock=clock)


def test_instances_share_the_pause_and_only_one_probes(stores: Stores) -> None:
    clock = Clock()
    first, second = gate(stores, clock), gate(stores, clock)
    first.admit(ORG)  # no pause: creates go
    error = first.refused(ORG, CreationQuotaReached("New-MailContact failed: quota"))
    assert error.resume_at == at(60) and 60 <= (error.retry_after or 0) <= 66
    assert isinstance(error.__cause__, CreationQuotaReached)
    with pytest.raises(CreationQuotaReached) as waiting:
        second.admit(ORG)  # the other instance learns it from the table
    assert waiting.value.resume_at == at(60)
    assert "reached at 2026-01-05T09:00:00" in str(waiting.value)

    clock.now = at(61)
    second.admit(ORG)  # the probe
    with pytest.raises(CreationQuotaReached) as probing:
        first.admit(ORG)
    assert probing.value.resume_at is not None and probing.value.resume_at > at(61)
    second.created(ORG)
    first.admit(ORG)  # the pause is over for everyone
    pause, _ = stores.targets.quota(ORG)
    assert not pause.active and pause.pauses == 1 and pause.freed_max == 61


def test_a_refused_probe_extends_the_pause_for_every_instance(stores: Stores) -> None:
    clock = Clock()
    first, second = gate(stores, clock), gate(stores, clock)
    first.refused(ORG, CreationQuotaReached("quota"))
    clock.now = at(61)
    first.admit(ORG)
    error = first.refused(ORG, CreationQuotaReached("quota"))  # the probe met the quota again
    assert error.resume_at == at(61 + 300)
    with pytest.raises(CreationQuotaReached):
        second.admit(ORG)
    assert stores.targets.quota("FABRIKAM.onmicrosoft.com")[0].step == 1, "organisations are case-insensitive"
