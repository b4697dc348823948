"""Apply queued ops in-process until they are done: `python -m sync run` (and tests) instead of the Functions host.

Each delivery's outcome goes through the same decision as the Functions worker (`sync.core.delivery_policy`):
done → deleted; defer → sent again with the delay, no attempt spent; retry → hidden for the backoff, the attempt
counts; poison → moved to the poison queue and recorded with its cause; park → kept untried in the `-parked` queue
(the pair quarantined for its credentials).

With `pair_id`, only that pair's ops are applied and reported: another pair's message that comes along is given
back as a fresh copy (so this look costs it no delivery attempt), hidden for a short while so the drain gets past it.

It never hangs on Exchange: ops deferred for longer than `wait_seconds` (the creation quota, a long Retry-After)
stay on the queue and are reported as `waiting`, with when they come back; so are a pair's creates that an earlier
run deferred (its `queued` rows) while the pause that holds them lasts longer than `wait_seconds`. A later drain
applies them once they are visible again.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from azure.storage.queue import QueueMessage

from sync.app.wiring.runtime import Runtime
from sync.app.worker.apply import Applied, Outcome
from sync.app.worker.batches import split_batch
from sync.app.worker.delivery import handle_message, note_failed_delivery, park, record_poison
from sync.app.worker.quota_gate import quota_gate
from sync.contract.ops import ContactOp, OpMessage, decode_message
from sync.contract.vocabulary import ContactStatus
from sync.core.delivery_policy import Verdict, decide, default_backoff
from sync.core.quota import QuotaPause
from sync.errors import PairNotFound
from sync.state.entities import now_utc

log = logging.getLogger("ctcs.drain")

OTHER_PAIR_DELAY_SECONDS = 30
# A received message is leased for LEASE_SECONDS and the lease renewed while its op runs, so that what a killed
# `run` held comes back to the queue within LEASE_SECONDS (it once stayed hidden for two minutes, while later runs
# found the pair's creates queued with nothing to apply and blamed Exchange).
LEASE_SECONDS = 10
RENEW_WITHIN_SECONDS = 5  # renew a lease once this little of it is left
IDLE_POLL_SECONDS = 0.5
RECOUNT_SECONDS = 5.0  # how often an idle drain re-counts the pair's waiting creates
OVERDUE_SECONDS = 30.0
WAIT_WORDS = {  # why an op waits, as `run` tells the admin
    "CreationQuotaReached": "creates wait for Exchange's creation quota",
    "TargetThrottled": "Exchange asked to wait (throttling)",
    "RowBusy": "another op of the same user is being applied",
}


@dataclass
class DrainReport:
    outcomes: Counter[str] = field(default_factory=Counter)
    poisoned: int = 0
    deferred: int = 0
    seconds: float = 0.0
    passed_over: int = 0  # other pairs' messages given back untouched
    waiting: int = 0  # ops still on the queue because Exchange asked them to wait longer than the drain waits
    waiting_until: datetime | None = None  # when the last of them comes back, as far as known
    waiting_reason: str = ""
    waiting_for_exchange: bool = True  # False: they wait for no Exchange answer (held by a worker, or one that died)
    split: int = 0  # batches of ops split into single-op messages (then applied like the others)
    parked: int = 0  # ops kept untried because their pair's credentials fail (the pair is quarantined)

    @property
    def failed(self) -> int:
        return self.poisoned + sum(n for name, n in self.outcomes.items() if Outcome(name).failed)

    @property
    def applied(self) -> int:
        return sum(self.outcomes.values())


@dataclass(frozen=True)
class _Received:
    """A message the drain received: the queue's handle (to delete, defer or give it back) and what it holds,
    decoded once as it came off the queue."""

    handle: QueueMessage
    message: OpMessage
    leased_until: float = 0.0  # monotonic; the handle's pop receipt changes when the lease is renewed

    @property
    def key(self) -> str:
        op = self.message.op
        return op.key if op is not None else f"message:{self.handle.id}"


@dataclass
class _Drain:
    rt: Runtime
    pair_id: str | None
    backoff: Callable[[int], int]
    wait_seconds: float = 120.0
    report: DrainReport = field(default_factory=DrainReport)
    waiting: dict[str, tuple[float, str]] = field(default_factory=dict)  # op key → (when its copy is due, why)
    idle_since: float | None = None
    counted_at: float = 0.0
    pending: int = 0  # the pair's creates still queued (ContactState `queued`), as last counted
    running: dict[Future[tuple[ContactOp, Applied]], _Received] = field(default_factory=dict)

    def renew_leases(self) -> None:
        """Renew the lease of every received message whose lease is about to run out (its op still runs or waits
        for a worker thread); one that was lost is left to whoever holds it now."""
        now = time.monotonic()
        for future, received in list(self.running.items()):
            if received.leased_until - now > RENEW_WITHIN_SECONDS:
                continue
            if self.rt.stores.ops.renew(received.handle, LEASE_SECONDS):
                self.running[future] = replace(received, leased_until=now + LEASE_SECONDS)
            else:
                log.warning("lost the lease of a queued op while applying it: %s", received.key)
                self.running[future] = replace(received, leased_until=float("inf"))

    def give_back_unstarted(self) -> None:
        for future, received in list(self.running.items()):
            if future.cancelled():
                self.rt.stores.ops.make_visible(received.handle)
            else:
                try:
                    future.exception()  # let it finish, then settle it as usual
                    self.settle(received, future)
                except BaseException as error:  # a second Ctrl-C: leave it, it reappears after its timeout
                    log.debug("left an op unsettled: %s", type(error).__name__)
                    break

    def mine(self, received: _Received) -> bool:
        if self.pair_id is None:
            return True
        pair = received.message.pair_id
        if pair is None or pair == self.pair_id:  # a message that is not an op is everyone's: poison it
            return True
        self.rt.stores.ops.send_text(received.message.text, delay_seconds=OTHER_PAIR_DELAY_SECONDS)
        self.rt.stores.ops.delete(received.handle)
        self.report.passed_over += 1
        return False

    def settle(self, received: _Received, future: Future[tuple[ContactOp, Applied]]) -> str:
        queue = self.rt.stores.ops
        handle, message = received.handle, received.message
        key = received.key
        self.waiting.pop(key, None)
        try:
            _, applied = future.result()
        except Exception as error:
            count = handle.dequeue_count or 1
            decision = decide(error, dequeue_count=count, backoff=self.backoff)
            if decision.verdict is Verdict.PARK:
                parked = park(self.rt, message, decision, error)  # else back on the queue: the quarantine was lifted
                queue.delete(handle, missing_ok=True)
                self.report.parked += int(parked)
                return "parked" if parked else "requeued"
            if decision.verdict is Verdict.DEFER:
                queue.send_text(message.text, delay_seconds=decision.delay_seconds)
                queue.delete(handle, missing_ok=True)
            elif decision.verdict is Verdict.RETRY:
                note_failed_delivery(self.rt, message, decision)
                queue.defer(handle, decision.delay_seconds)
            else:
                log.error("op moved to the poison queue: %s", decision.reason)
                self.rt.stores.poison.send_text(message.text)
                queue.delete(handle, missing_ok=True)
                record_poison(self.rt, message, error=decision.reason)
                self.report.poisoned += 1
                return "poisoned"
            self.waiting[key] = (time.monotonic() + decision.delay_seconds, decision.reason)
            self.report.deferred += 1
            return ""
        queue.delete(handle, missing_ok=True)
        self.report.outcomes[applied.outcome.value] += 1
        return applied.outcome.value

    def finished(self, received_own: bool) -> bool:
        """Nothing is running. Done when nothing of ours is left that comes back within `wait_seconds`; what
        comes back later is reported as waiting (the caller exits 4), never waited for."""
        now = time.monotonic()
        if received_own:
            self.idle_since = None
            return False
        # A copy long overdue was taken by another consumer (the Functions worker): it is no longer ours to wait for.
        overdue = now - max(self.wait_seconds, OVERDUE_SECONDS)
        self.waiting = {key: entry for key, entry in self.waiting.items() if entry[0] > overdue}
        if any(due <= now + self.wait_seconds for due, _ in self.waiting.values()):
            return False  # a deferred op of ours is due soon: wait for it
        if self.idle_since is None:
            self.idle_since = now
        if self.waiting:
            return self._stop_waiting()
        if self.pair_id is None:  # everyone's ops: wait for messages still hidden on the queue, within bounds
            left = self.rt.stores.ops.approximate_count()
            if left and now - self.idle_since < self.wait_seconds:
                return False
            self.report.waiting = left
            return True
        return self._pair_settled(now)

    def _pair_settled(self, now: float) -> bool:
        """No op of the pair came along: done unless creates an earlier run deferred are due within our wait."""
        assert self.pair_id is not None
        if now - self.counted_at >= RECOUNT_SECONDS:
            self.pending = self.rt.stores.contacts.status_counts(self.pair_id).get(ContactStatus.QUEUED, 0)
            self.counted_at = now
        if not self.pending:
            return True
        pause = self._pause()
        resume_at = pause.resume_at if pause is not None and pause.active else None
        if resume_at is not None and resume_at > now_utc() + timedelta(seconds=self.wait_seconds):
            self._report_waiting(self.pending, resume_at, "creates wait for Exchange's creation quota")
            return True
        if now - (self.idle_since or now) < self.wait_seconds:
            return False  # they should become visible soon (a short deferral, another worker on them)
        if resume_at is not None:
            self._report_waiting(self.pending, resume_at, "creates wait for Exchange's creation quota")
            return True
        # No pause holds them and none came back: a worker holds their messages (the Functions worker, another
        # run, or one that was killed and whose lease has not run out yet), or an earlier delay has not ended.
        self._report_waiting(self.pending, None, "creates still queued: their messages are held by another worker, "
                             "or by one that stopped, until its lease ends")
        self.report.waiting_for_exchange = False
        return True

    def _stop_waiting(self) -> bool:
        latest = max(due for due, _ in self.waiting.values())
        until = now_utc() + timedelta(seconds=max(0.0, latest - time.monotonic()))
        reasons = Counter(WAIT_WORDS.get(reason.split(":", 1)[0], "Exchange") for _, reason in self.waiting.values())
        count = len(self.waiting)
        if self.pair_id is not None:
            count = max(count, self.rt.stores.contacts.status_counts(self.pair_id).get(ContactStatus.QUEUED, 0))
        self._report_waiting(count, until, ", ".join(sorted(reasons)))
        return True

    def _report_waiting(self, count: int, until: datetime | None, reason: str) -> None:
        self.report.waiting, self.report.waiting_until, self.report.waiting_reason = count, until, reason

    def _pause(self) -> QuotaPause | None:
        try:
            pair = self.rt.pair(self.pair_id or "")
        except PairNotFound:
            return None
        return quota_gate(self.rt).pause(pair.target.organization)


def drain(
    rt: Runtime,
    *,
    pair_id: str | None = None,
    concurrency: int = 4,
    deadline_seconds: float = 3600.0,
    on_done: Callable[[str], None] | None = None,
    backoff: Callable[[int], int] = default_backoff,
    wait_seconds: float | None = None,
) -> DrainReport:
    """Apply queued ops (of `pair_id`, or every pair's) until none are left, as the Functions host would; ops that
    must wait longer than `wait_seconds` (default: the runtime's `run_wait_seconds`) are left queued and reported."""
    state = _Drain(rt, pair_id, backoff, rt.tuning.run_wait_seconds if wait_seconds is None else wait_seconds)
    started = time.monotonic()
    pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="ctcs-worker")
    try:
        _loop(state, pool, concurrency, started + deadline_seconds, on_done)
    except BaseException:
        # Ctrl-C (or an error): nothing more starts. Ops already running finish and record their outcome; received
        # ones that had not started are handed back to the queue at once, for the worker or the next run.
        pool.shutdown(wait=False, cancel_futures=True)
        state.give_back_unstarted()
        raise
    pool.shutdown(wait=True)
    state.report.seconds = time.monotonic() - started
    return state.report


def _loop(
    state: _Drain, pool: ThreadPoolExecutor, concurrency: int, deadline: float, on_done: Callable[[str], None] | None
) -> None:
    rt, queue, running = state.rt, state.rt.stores.ops, state.running
    while time.monotonic() < deadline:
        received_own = False
        if len(running) < concurrency:
            messages = queue.receive(max_messages=min(32, concurrency * 2), visibility_timeout=LEASE_SECONDS)
            for handle in messages:
                # The one decoding of this message: a batch, an op, or why it is neither (then it is poisoned).
                received = _Received(handle, decode_message(handle.content), time.monotonic() + LEASE_SECONDS)
                if state.mine(received):
                    received_own = True
                    if received.message.batch:
                        split_batch(rt, received.message.batch)  # its ops come back as messages of their own
                        queue.delete(handle)
                        state.report.split += 1
                        continue
                    running[pool.submit(handle_message, rt, received.message)] = received
        if not running:
            if state.finished(received_own):
                break
            time.sleep(IDLE_POLL_SECONDS)  # only deferred messages are left: wait for them to become visible
            continue
        done, _ = wait(list(running), timeout=1.0, return_when=FIRST_COMPLETED)
        state.renew_leases()
        for future in done:
            label = state.settle(running.pop(future), future)
            if on_done is not None and label:
                on_done(label)
