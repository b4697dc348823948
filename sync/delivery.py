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

from azure.storage.queue import QueueMessage

from sync.errors import BadOpMessage, PairNotFound, TargetThrottled, TargetTransient
from sync.ops import ContactOp, decode_op
from sync.runtime import Runtime
from sync.worker import Applied, Outcome, apply_op

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
    """Move poison messages (of one pair, or all) back to the ops queue; the worker applies them again."""
    moved = 0
    others: list[QueueMessage] = []  # other pairs' messages: hidden while we look, made visible again after
    while moved < limit:
        messages = rt.stores.poison.receive(max_messages=32, visibility_timeout=60)
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
            rt.stores.poison.delete(message)
            moved += 1
    for message in others:
        rt.stores.poison.client.update_message(message, visibility_timeout=0)
    return moved


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
