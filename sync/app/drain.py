"""Apply queued ops in-process until they are done: `python -m sync run` (and tests) instead of the Functions host.

Each delivery's outcome goes through the same decision as the Functions worker (`sync.core.delivery_policy`):
done → deleted; defer → sent again with the delay, no attempt spent; retry → hidden for the backoff, the attempt
counts; poison → moved to the poison queue and recorded with its cause; park → kept untried in the `-parked` queue
(the pair quarantined for its credentials).

With `pair_id`, only that pair's ops are applied and reported: another pair's message that comes along is given
back as a fresh copy (so this look costs it no delivery attempt), hidden for a short while so the drain gets past it.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field

from azure.storage.queue import QueueMessage

from sync.app.apply import Applied, Outcome
from sync.app.delivery import handle_message, note_failed_delivery, park, record_poison
from sync.app.runtime import Runtime
from sync.contract.ops import ContactOp, decode_op
from sync.core.delivery_policy import Verdict, decide, default_backoff
from sync.errors import BadOpMessage

log = logging.getLogger("ctcs.drain")

OTHER_PAIR_DELAY_SECONDS = 30
RECEIVE_VISIBILITY_SECONDS = 120
IDLE_POLL_SECONDS = 0.5


@dataclass
class DrainReport:
    outcomes: Counter[str] = field(default_factory=Counter)
    poisoned: int = 0
    deferred: int = 0
    seconds: float = 0.0
    passed_over: int = 0  # other pairs' messages given back untouched
    parked: int = 0  # ops kept untried because their pair's credentials fail (the pair is quarantined)

    @property
    def failed(self) -> int:
        return self.poisoned + sum(n for name, n in self.outcomes.items() if Outcome(name).failed)

    @property
    def applied(self) -> int:
        return sum(self.outcomes.values())


def _pair_of(message: QueueMessage) -> str | None:
    try:
        return decode_op(message.content).pair_id
    except BadOpMessage:
        return None


def _key(message: QueueMessage) -> str:
    try:
        return decode_op(message.content).key
    except BadOpMessage:
        return f"message:{message.id}"


@dataclass
class _Drain:
    rt: Runtime
    pair_id: str | None
    backoff: Callable[[int], int]
    report: DrainReport = field(default_factory=DrainReport)
    waiting: dict[str, float] = field(default_factory=dict)  # op key → when its deferred or retried copy is due

    def mine(self, message: QueueMessage) -> bool:
        if self.pair_id is None:
            return True
        pair = _pair_of(message)
        if pair is None or pair == self.pair_id:  # a message that is not an op is everyone's: poison it
            return True
        self.rt.stores.ops.send_text(message.content, delay_seconds=OTHER_PAIR_DELAY_SECONDS)
        self.rt.stores.ops.delete(message)
        self.report.passed_over += 1
        return False

    def settle(self, message: QueueMessage, future: Future[tuple[ContactOp, Applied]]) -> str:
        queue = self.rt.stores.ops
        key = _key(message)
        self.waiting.pop(key, None)
        try:
            _, applied = future.result()
        except Exception as error:
            count = message.dequeue_count or 1
            decision = decide(error, dequeue_count=count, backoff=self.backoff)
            if decision.verdict is Verdict.PARK:
                park(self.rt, message.content, decision, error)
                queue.delete(message, missing_ok=True)
                self.report.parked += 1
                return "parked"
            if decision.verdict is Verdict.DEFER:
                queue.send_text(message.content, delay_seconds=decision.delay_seconds)
                queue.delete(message, missing_ok=True)
            elif decision.verdict is Verdict.RETRY:
                note_failed_delivery(self.rt, message.content, decision)
                queue.defer(message, decision.delay_seconds)
            else:
                log.error("op moved to the poison queue: %s", decision.reason)
                self.rt.stores.poison.send_text(message.content)
                queue.delete(message, missing_ok=True)
                record_poison(self.rt, message.content, error=decision.reason)
                self.report.poisoned += 1
                return "poisoned"
            self.waiting[key] = time.monotonic() + decision.delay_seconds
            self.report.deferred += 1
            return ""
        queue.delete(message, missing_ok=True)
        self.report.outcomes[applied.outcome.value] += 1
        return applied.outcome.value

    def finished(self, received_own: bool) -> bool:
        """Nothing running and nothing of ours came back: done unless a deferred op of ours is still due."""
        if received_own or self.waiting:
            return False
        if self.pair_id is None:  # everyone's ops: wait for any message still hidden on the queue
            return self.rt.stores.ops.approximate_count() == 0
        return True


def drain(
    rt: Runtime,
    *,
    pair_id: str | None = None,
    concurrency: int = 4,
    deadline_seconds: float = 3600.0,
    on_done: Callable[[str], None] | None = None,
    backoff: Callable[[int], int] = default_backoff,
) -> DrainReport:
    """Apply queued ops (of `pair_id`, or every pair's) until none are left, as the Functions host would."""
    state = _Drain(rt, pair_id, backoff)
    started = time.monotonic()
    queue = rt.stores.ops
    with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="ctcs-worker") as pool:
        running: dict[Future[tuple[ContactOp, Applied]], QueueMessage] = {}
        while time.monotonic() - started < deadline_seconds:
            received_own = False
            if len(running) < concurrency:
                messages = queue.receive(max_messages=min(32, concurrency * 2), visibility_timeout=RECEIVE_VISIBILITY_SECONDS)
                for message in messages:
                    if state.mine(message):
                        received_own = True
                        running[pool.submit(handle_message, rt, message.content)] = message
            if not running:
                if state.finished(received_own):
                    break
                time.sleep(IDLE_POLL_SECONDS)  # only deferred messages are left: wait for them to become visible
                continue
            done, _ = wait(list(running), timeout=1.0, return_when=FIRST_COMPLETED)
            for future in done:
                label = state.settle(running.pop(future), future)
                if on_done is not None and label:
                    on_done(label)
    state.report.seconds = time.monotonic() - started
    return state.report
