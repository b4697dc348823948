"""From queue message to Exchange: the worker's entry point, the poison record and replay, and an in-process
drain for `python -m sync run` that treats messages as the Functions host does."""

from __future__ import annotations

import logging
import math
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from azure.storage.queue import QueueMessage

from sync.app.apply import Applied, Outcome, apply_op
from sync.app.planning import new_run_id
from sync.app.runtime import Runtime
from sync.contract.ops import ContactOp, decode_op
from sync.errors import BadOpMessage, PairNotFound, TargetThrottled, TargetTransient
from sync.state.queues import OpQueue
from sync.state.runs import RunRecord

log = logging.getLogger("ctcs.worker")

MAX_DEQUEUE_COUNT = 5  # as host.json's queues.maxDequeueCount
MAX_DEFER_SECONDS = 600


def default_backoff(dequeue_count: int) -> int:
    """Seconds before a failed message is visible again: 2, 4, 8, ... up to a minute."""
    return int(min(60, 2 ** max(1, dequeue_count)))


def handle_message(rt: Runtime, body: str | bytes) -> tuple[ContactOp, Applied]:
    """Apply one queued op. Raises `BadOpMessage` (never retry), `TargetTransient`/`TargetThrottled` (retry later)."""
    op = decode_op(body)
    started = time.monotonic()
    try:
        pair = rt.pair(op.pair_id)
    except PairNotFound:
        log.warning("dropping op %s: pair %s no longer exists", op.key, op.pair_id)
        return op, Applied(Outcome.STALE, detail="the pair was removed")
    applied = apply_op(op, pair=pair, target=rt.target(pair), contacts=rt.stores.contacts)
    log.info(
        "op %s %s: %s",
        op.kind.value,
        op.source_id,
        applied.outcome.value,
        extra={
            "pair_id": op.pair_id,
            "run_id": op.run_id,
            "op_kind": op.kind.value,
            "source_id": op.source_id,
            "outcome": applied.outcome.value,
            "duration_ms": round((time.monotonic() - started) * 1000),
        },
    )
    return op, applied


def record_poison(rt: Runtime, body: str | bytes, *, error: str = "failed on every delivery") -> ContactOp | None:
    """A message gave up: mark its user failed so status shows it. The message itself stays in the poison queue."""
    try:
        op = decode_op(body)
    except BadOpMessage as bad:
        log.error("poison message is not a contact operation: %s", bad)
        return None
    rt.stores.contacts.record_failure(op.pair_id, op.source_id, error=error, op=op.kind.value, run_id=op.run_id)
    log.error("op %s ended in the poison queue: %s", op.key, error, extra={"pair_id": op.pair_id, "run_id": op.run_id})
    return op


def replay_poison(rt: Runtime, *, pair_id: str | None = None, limit: int = 10_000) -> int:
    """Move failed ops (of one pair, or all) back to the ops queue; the worker applies them again.

    They are read from the holding queue `<queue>-failed` (where the poison trigger keeps them) and from
    `<queue>-poison` itself (where `drain` leaves them, and where the host puts them until the poison trigger runs).
    """
    moved = _move_back(rt, rt.stores.failed, pair_id=pair_id, limit=limit)
    return moved + _move_back(rt, rt.stores.poison, pair_id=pair_id, limit=limit - moved)


def _move_back(rt: Runtime, source: OpQueue, *, pair_id: str | None, limit: int) -> int:
    moved = 0
    others: list[QueueMessage] = []  # other pairs' messages: hidden while we look, made visible again after
    while moved < limit:
        messages = source.receive(max_messages=32, visibility_timeout=60)
        if not messages:
            break
        for message in messages:
            try:
                op_pair: str | None = decode_op(message.content).pair_id
            except BadOpMessage:
                op_pair = None
            if pair_id is not None and op_pair != pair_id:
                others.append(message)
                continue
            rt.stores.ops.send_text(message.content)
            source.delete(message)
            moved += 1
    for message in others:
        source.make_visible(message)
    return moved


def keep_poisoned(rt: Runtime, body: str | bytes, *, error: str = "failed on every delivery") -> ContactOp | None:
    """The poison trigger's work: keep the op for replay, then record the failure.

    The Functions host hands a `<queue>-poison` message to the poison trigger and deletes it once the trigger
    returns, so the trigger itself must put the op somewhere replay can find it (invariant 2: no op is lost).
    It goes to a holding queue `<queue>-failed`, sent without expiry, rather than into the ContactState row:
    the body is kept byte for byte whatever its size (an op may be up to 48,000 characters, more than a table
    property holds), a message that is not an op at all is kept too, and `replay_poison` moves queue messages
    back exactly as it does from `-poison`. No trigger listens on `-failed`, so nothing is retried until an
    admin runs `python -m sync replay-poison`.

    The op is copied first and recorded after: should recording fail, the host redelivers the poison message
    and the copy is made twice, which is harmless (an op applies once, by version). Recording marks the user's
    ContactState row `failed` and writes a SyncRuns row with trigger `poison`.
    """
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    rt.stores.failed.send_text(text, keep=True)
    op = record_poison(rt, text, error=error)
    if op is not None:
        now = datetime.now(UTC)
        rt.stores.runs.save(
            RunRecord(
                op.pair_id, new_run_id(now), "poison", now, outcome="failed", counts={"poisoned": 1},
                error=f"{op.kind.value} of {op.source_id} (run {op.run_id}) {error}; kept for replay-poison",
            )
        )
    return op


def op_fields(body: str | bytes) -> dict[str, Any]:
    """Log fields of a message (pair, run, op kind, source object id); empty when it is not an op."""
    try:
        op = decode_op(body)
    except BadOpMessage:
        return {}
    return {"pair_id": op.pair_id, "run_id": op.run_id, "op_kind": op.kind.value, "source_id": op.source_id}


def defer_seconds(retry_after: float | None, dequeue_count: int) -> int:
    """How long a throttled op waits: Retry-After (at least a second), else the backoff; at most MAX_DEFER_SECONDS."""
    wait_for = retry_after if retry_after is not None else default_backoff(max(1, dequeue_count))
    return int(min(MAX_DEFER_SECONDS, max(1, math.ceil(wait_for))))


def deliver(rt: Runtime, body: str | bytes, *, dequeue_count: int) -> str:
    """The queue trigger's work for one message: what happened (an `Outcome` value, "deferred" or "bad").

    - A message that is not an op is sent straight to the poison queue: retrying it cannot help.
    - Throttling defers the op without spending one of its `maxDequeueCount` deliveries: the same body is sent
      again, invisible for Retry-After seconds, and this delivery succeeds. (Host retry policies do not apply to
      queue triggers, and a failed delivery always waits the fixed host.json `visibilityTimeout`; raising here
      would both ignore Retry-After and push a throttled op towards the poison queue.)
    - Transient failures are raised: the host retries after `visibilityTimeout`, then poisons the message.
    - Permanent outcomes (conflict, rejected) are recorded in ContactState by `apply_op` and returned.
    """
    started = time.monotonic()
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    try:
        _, applied = handle_message(rt, body)
    except BadOpMessage as bad:
        log.error("not a contact operation, sent to the poison queue: %s", bad, extra={"outcome": "bad"})
        rt.stores.poison.send_text(text)
        return "bad"
    except TargetThrottled as throttled:
        delay = defer_seconds(throttled.retry_after, dequeue_count)
        rt.stores.ops.send_text(text, delay_seconds=delay)
        log.warning(
            "op deferred %s s: target throttled", delay,
            extra={**op_fields(body), "outcome": "deferred", "defer_seconds": delay, "dequeue_count": dequeue_count,
                   "duration_ms": round((time.monotonic() - started) * 1000)},
        )
        return "deferred"
    except Exception as error:
        last = dequeue_count >= MAX_DEQUEUE_COUNT
        log.warning(
            "op failed (delivery %s of %s%s): %s: %s", dequeue_count, MAX_DEQUEUE_COUNT,
            ", next stop the poison queue" if last else ", will be retried", type(error).__name__, error,
            extra={**op_fields(body), "outcome": "poisoned" if last else "retry", "dequeue_count": dequeue_count,
                   "duration_ms": round((time.monotonic() - started) * 1000)},
        )
        raise
    return applied.outcome.value


@dataclass
class DrainReport:
    outcomes: Counter[str] = field(default_factory=Counter)
    poisoned: int = 0
    deferred: int = 0
    seconds: float = 0.0

    @property
    def failed(self) -> int:
        return self.poisoned + sum(n for name, n in self.outcomes.items() if Outcome(name).failed)


def drain(
    rt: Runtime,
    *,
    concurrency: int = 4,
    deadline_seconds: float = 3600.0,
    on_done: Callable[[str], None] | None = None,
    backoff: Callable[[int], int] = default_backoff,
) -> DrainReport:
    """Apply queued ops until the queue is empty: retries, deferrals and poisoning as the host would do them."""
    report = DrainReport()
    started = time.monotonic()
    queue = rt.stores.ops
    with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="ctcs-worker") as pool:
        running: dict[Future[tuple[ContactOp, Applied]], QueueMessage] = {}
        while time.monotonic() - started < deadline_seconds:
            if len(running) < concurrency:
                for message in queue.receive(max_messages=min(32, concurrency * 2), visibility_timeout=120):
                    running[pool.submit(handle_message, rt, message.content)] = message
            if not running:
                if queue.approximate_count() == 0:
                    break
                time.sleep(0.5)  # only deferred messages are left: wait for them to become visible
                continue
            finished, _ = wait(list(running), timeout=1.0, return_when=FIRST_COMPLETED)
            for future in finished:
                message = running.pop(future)
                label = _settle(rt, message, future, report, backoff)
                if on_done is not None and label:
                    on_done(label)
    report.seconds = time.monotonic() - started
    return report


def _settle(
    rt: Runtime,
    message: QueueMessage,
    future: Future[tuple[ContactOp, Applied]],
    report: DrainReport,
    backoff: Callable[[int], int],
) -> str:
    queue = rt.stores.ops
    try:
        _, applied = future.result()
    except BadOpMessage as bad:
        log.error("bad message moved to the poison queue: %s", bad)
        _poison(rt, message, str(bad), report)
        return "poisoned"
    except TargetThrottled as throttled:
        wait_for = throttled.retry_after if throttled.retry_after is not None else backoff(message.dequeue_count or 1)
        delay = min(MAX_DEFER_SECONDS, math.ceil(wait_for))
        queue.client.update_message(message, visibility_timeout=delay)
        report.deferred += 1
        return ""
    except (TargetTransient, Exception) as error:
        if (message.dequeue_count or 1) >= MAX_DEQUEUE_COUNT:
            _poison(rt, message, f"{type(error).__name__}: {error}", report)
            return "poisoned"
        queue.client.update_message(message, visibility_timeout=backoff(message.dequeue_count or 1))
        report.deferred += 1
        return ""
    queue.delete(message)
    report.outcomes[applied.outcome.value] += 1
    return applied.outcome.value


def _poison(rt: Runtime, message: QueueMessage, error: str, report: DrainReport) -> None:
    rt.stores.poison.send_text(message.content)
    rt.stores.ops.delete(message)
    record_poison(rt, message.content, error=error)
    report.poisoned += 1
