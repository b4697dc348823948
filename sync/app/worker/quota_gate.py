"""`QuotaGate`: creates of a target organisation wait while Exchange's creation quota is spent; nothing else waits.

The pause itself is `sync.core.quota` (pure); its state is a TargetState row every worker instance reads
(`sync.state.targets`). A worker asks the gate before a create (`admit`) and tells it how the create went
(`refused`, `created`). The row is read at most every `cache_seconds` per organisation and process, and written
only when a pause starts, a probe goes out, or a pause ends: never once per op.

A create that must wait raises `CreationQuotaReached` with `retry_after` = the seconds until the pause's resume
time plus a small random spread; the delivery policy defers the op that long without spending an attempt.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from sync.app.wiring.runtime import Runtime
from sync.core import quota
from sync.core.quota import Admission, QuotaPause
from sync.errors import CreationQuotaReached
from sync.state.entities import now_utc
from sync.state.targets import TargetStateStore

log = logging.getLogger("ctcs.quota")

CACHE_SECONDS = 2.0
WRITE_ATTEMPTS = 3


@dataclass
class _Cached:
    pause: QuotaPause
    read_at: float  # monotonic


class QuotaGate:
    def __init__(
        self, store: TargetStateStore, *, backoff: tuple[int, ...] = quota.DEFAULT_BACKOFF_SECONDS,
        cache_seconds: float = CACHE_SECONDS, clock: Callable[[], datetime] = now_utc,
        rng: random.Random | None = None,
    ) -> None:
        self.store = store
        self.backoff = backoff
        self.cache_seconds = cache_seconds
        # A probe that never answers (its worker died) frees the probe after this; the others re-check as often.
        self.probe_seconds = min(60.0, max(2.0, backoff[0] / 10))
        self._clock = clock
        self._rng = rng or random.Random()
        self._lock = threading.Lock()
        self._cache: dict[str, _Cached] = {}

    def pause(self, organization: str) -> QuotaPause:
        """The organisation's pause as this process last read it (at most `cache_seconds` old)."""
        key = organization.lower()
        with self._lock:
            cached = self._cache.get(key)
            if cached is not None and time.monotonic() - cached.read_at < self.cache_seconds:
                return cached.pause
        pause, _ = self.store.quota(key)
        self._remember(key, pause)
        return pause

    def admit(self, organization: str) -> None:
        """Return when a create for the organisation may go; raise `CreationQuotaReached` when it must wait."""
        key = organization.lower()
        verdict, until = quota.admit(self.pause(key), self._clock())
        if verdict is Admission.GO:
            return
        if verdict is Admission.PROBE and self._take_probe(key):
            log.info("creation quota of %s: probing whether it has freed", key)
            return
        pause = self.pause(key)
        _, until = quota.admit(pause, self._clock())
        raise self._wait(key, pause, until)

    def refused(self, organization: str, error: CreationQuotaReached) -> CreationQuotaReached:
        """Exchange refused a create for the quota: start or extend the pause, and return the error saying how long
        the op waits."""
        key = organization.lower()
        pause = self._update(key, lambda current, now: quota.refused(current, now, self.backoff))
        if pause.resume_at is not None and pause.reached_at is not None:
            log.warning("creation quota of %s reached at %s: creates wait until %s", key,
                        pause.reached_at.isoformat(timespec="seconds"), pause.resume_at.isoformat(timespec="seconds"))
        waiting = self._wait(key, pause, pause.resume_at)
        waiting.__cause__ = error
        return waiting

    def created(self, organization: str) -> None:
        """A create succeeded. While a pause is due this is its probe's answer: the quota freed, the pause ends."""
        key = organization.lower()
        pause = self.pause(key)
        if not pause.active or pause.resume_at is None or self._clock() < pause.resume_at:
            return  # no pause, or a create that was on its way before the pause: nothing to learn
        ended = self._update(key, quota.created)
        if not ended.active:
            log.info("creation quota of %s freed after %.0f s; creates go on", key, ended.freed_max)

    # -------------------------------------------------------------------------------------------------------------
    def _wait(self, key: str, pause: QuotaPause, until: datetime | None) -> CreationQuotaReached:
        now = self._clock()
        seconds = max(0.0, (until - now).total_seconds()) if until is not None else self.probe_seconds
        seconds += self._rng.uniform(0.0, quota.spread_seconds(seconds))
        reached = pause.reached_at.isoformat(timespec="seconds") if pause.reached_at else "?"
        resume = until.isoformat(timespec="seconds") if until else "soon"
        return CreationQuotaReached(
            f"{key}: Exchange's creation quota was reached at {reached}; creates wait until {resume}",
            retry_after=seconds, resume_at=until,
        )

    def _take_probe(self, key: str) -> bool:
        """Mark the pause as probed by this create; False when another create got there first."""
        pause, etag = self.store.quota(key)
        verdict, _ = quota.admit(pause, self._clock())
        if verdict is Admission.GO:
            self._remember(key, pause)
            return True
        if verdict is Admission.WAIT:
            self._remember(key, pause)
            return False
        probing = quota.probing(pause, self._clock(), self.probe_seconds)
        won = self.store.save_quota(key, probing, etag)
        self._remember(key, probing if won else self.store.quota(key)[0])
        return won

    def _update(self, key: str, change: Callable[[QuotaPause, datetime], QuotaPause]) -> QuotaPause:
        for _ in range(WRITE_ATTEMPTS):
            current, etag = self.store.quota(key)
            updated = change(current, self._clock())
            if updated == current or self.store.save_quota(key, updated, etag):
                self._remember(key, updated)
                return updated
        current, _ = self.store.quota(key)  # kept changing under us: the others' news wins
        self._remember(key, current)
        return current

    def _remember(self, key: str, pause: QuotaPause) -> None:
        with self._lock:
            self._cache[key] = _Cached(pause, time.monotonic())


def quota_gate(rt: Runtime) -> QuotaGate:
    """The creation-quota gate of this instance (one per process: its cache serves every pair)."""
    return rt.per_instance("quota_gate", lambda: QuotaGate(rt.stores.targets, backoff=rt.tuning.quota_backoff))
