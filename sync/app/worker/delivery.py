"""From queue message to Exchange: the worker's entry point (`deliver`), the poison record and `replay_poison`.

What a delivery's failure leads to is decided once, in `sync.core.delivery_policy`; the CLI's in-process drain
(`sync.app.admin.drain`) follows the same decisions.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from typing import Any

from sync.app.wiring.quarantine import attempted_under, keep_parked
from sync.app.wiring.runtime import Runtime
from sync.app.worker.apply import Applied, Outcome, apply_op
from sync.app.worker.batches import split_batch
from sync.app.worker.quota_gate import quota_gate
from sync.contract.ops import ContactOp, OpMessage, decode_message
from sync.contract.vocabulary import PAIR_REPLACED, RunOutcome, RunTrigger, new_run_id
from sync.core.delivery_policy import MAX_DEQUEUE_COUNT, Decision, Verdict, decide
from sync.errors import BadOpMessage, PairNotFound, PairParked
from sync.state.contacts import POISONED_OP_SUFFIX
from sync.state.queues import move_ops
from sync.state.runs import RunRecord

log = logging.getLogger("ctcs.worker")

POISONED = "failed on every delivery"


def handle_message(rt: Runtime, message: OpMessage) -> tuple[ContactOp, Applied]:
    """Apply one queued op. Raises `BadOpMessage` (the message is not an op: never retry), `TargetTransient`/
    `TargetThrottled`/`RowBusy`/`CreationQuotaReached` (defer or retry later), `PairParked` (the pair is quarantined
    for its credentials: nothing is tried) or `TargetAuthError`."""
    op = message.require_op()
    started = time.monotonic()
    try:
        pair = rt.pair(op.pair_id)
        stored = rt.stores.pairs.generation_of(op.pair_id)  # one point read: the cached pair may have been replaced
        if stored != pair.generation:
            pair = rt.stores.pairs.get(op.pair_id)
    except PairNotFound:
        log.warning("dropping op %s: pair %s no longer exists", op.key, op.pair_id)
        return op, Applied(Outcome.STALE, detail="the pair was removed")
    if op.generation != pair.generation:
        return op, discard_replaced(rt, op)
    quarantined = rt.credentials_quarantine(pair.id)
    if quarantined:
        raise PairParked(f"pair {pair.id} is quarantined for its credentials: {quarantined}")
    target, epoch = rt.target_and_epoch(pair)
    calls_before = _thread_counts(target)
    try:
        applied = apply_op(op, pair=pair, target=target, contacts=rt.stores.contacts, quota=quota_gate(rt),
                           open_source=rt.open_source, ownership=rt.stores.ownership)
    except Exception as error:
        attempted_under(error, epoch)  # a failure of this client began before any later lift of the quarantine
        raise
    calls_after = _thread_counts(target)
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
            "detail": applied.detail[:300] if applied.outcome.failed else "",
            "duration_ms": round((time.monotonic() - started) * 1000),
            "exchange_calls": calls_after[0] - calls_before[0],
            "exchange_throttled": calls_after[1] - calls_before[1],
            # The op's version is its planning time in microseconds: how long a change took to reach Exchange.
            "plan_to_apply_ms": max(0, round(time.time() * 1000 - op.version / 1000)),
        },
    )
    return op, applied


def discard_replaced(rt: Runtime, op: ContactOp) -> Applied:
    """An op planned for an earlier pair with this id (removed, or replaced with other tenants): never applied to the
    pair that has the id now. Counted on the pair's status and logged, once per op."""
    rt.stores.pair_state.count_discarded(op.pair_id, "ops")
    log.warning("op %s %s: %s", op.kind.value, op.source_id, PAIR_REPLACED,
                extra={"pair_id": op.pair_id, "run_id": op.run_id, "op_kind": op.kind.value, "source_id": op.source_id,
                       "outcome": Outcome.DISCARDED.value, "detail": PAIR_REPLACED})
    return Applied(Outcome.DISCARDED, detail=PAIR_REPLACED)


def _batch_of_a_replaced_pair(rt: Runtime, ops: tuple[ContactOp, ...]) -> bool:
    """A batch planned for another generation of its pair id is discarded whole (counted once per op), not split
    first. A batch of a removed pair is split as before, and each op dropped as stale."""
    try:
        current = rt.stores.pairs.generation_of(ops[0].pair_id)
    except PairNotFound:
        return False
    if any(op.generation == current for op in ops):
        return False
    rt.stores.pair_state.count_discarded(ops[0].pair_id, "ops", len(ops))
    log.warning("batch of %d ops: %s", len(ops), PAIR_REPLACED,
                extra={"pair_id": ops[0].pair_id, "run_id": ops[0].run_id, "outcome": Outcome.DISCARDED.value,
                       "detail": PAIR_REPLACED})
    return True


def _of_the_current_pair(rt: Runtime, op: ContactOp) -> bool:
    """Whether the op belongs to the pair stored under its id now (same generation); False when it is gone."""
    try:
        return rt.stores.pairs.generation_of(op.pair_id) == op.generation
    except PairNotFound:
        return False


def _thread_counts(target: object) -> tuple[int, int]:
    counts = getattr(target, "thread_counts", None)
    return counts() if callable(counts) else (0, 0)


def note_failed_delivery(rt: Runtime, message: OpMessage, decision: Decision) -> None:
    """Keep the cause of a failed delivery on the user's row, so that a poisoned op reports why it failed."""
    try:
        op = message.require_op()
        rt.stores.contacts.note_delivery_error(op.pair_id, op.source_id, op.version, decision.reason)
    except Exception as error:  # the failure being reported matters more than this note
        log.debug("could not note the delivery error: %s", error)


def record_poison(rt: Runtime, message: OpMessage, *, error: str = "") -> ContactOp | None:
    """A message gave up: mark its user failed with the cause, so status shows it. The message itself is kept
    elsewhere (the poison or `-failed` queue). `error` is the cause when the caller knows it; otherwise the cause
    the last failed delivery noted on the row is used."""
    op = message.op
    if op is None:  # its body is untrusted: no row is marked and no id from it is logged
        log.error("poison message is not a contact operation, kept for replay-poison: %s", message.error,
                  extra={"outcome": "bad"})
        return None
    if not _of_the_current_pair(rt, op):  # the row is the new pair's now: never mark it for an old pair's op
        log.warning("op %s ended in the poison queue, kept for replay-poison: %s", op.key, PAIR_REPLACED,
                    extra={"pair_id": op.pair_id, "outcome": Outcome.DISCARDED.value, "detail": PAIR_REPLACED})
        return None
    cause = error or rt.stores.contacts.delivery_error(op.pair_id, op.source_id, op.version) or "no cause was recorded"
    failure = f"{POISONED} ({cause}); kept for replay-poison"
    rt.stores.contacts.record_failure(op.pair_id, op.source_id, error=failure, op=f"{op.kind.value}{POISONED_OP_SUFFIX}",
                                      run_id=op.run_id)
    log.error("op %s ended in the poison queue: %s", op.key, cause,
              extra={"pair_id": op.pair_id, "run_id": op.run_id, "op_kind": op.kind.value, "source_id": op.source_id,
                     "outcome": "poisoned", "detail": cause[:300]})
    return op


def replay_poison(rt: Runtime, *, pair_id: str | None = None, limit: int = 10_000) -> int:
    """Move failed ops (of one pair, or all) back to the ops queue; the worker applies them again.

    They are read from the holding queue `<queue>-failed` (where the poison trigger keeps them), from
    `<queue>-poison` itself (where `drain` leaves them, and where the host puts them until the poison trigger runs)
    and from `<queue>-poison-poison` (where the host put what an older poison trigger failed on).
    """
    def wanted(op_pair: str | None) -> bool:
        return pair_id is None or op_pair == pair_id

    moved = 0
    for kept in (rt.stores.failed, rt.stores.poison, rt.stores.poison_poison):
        moved += move_ops(kept, rt.stores.ops, wanted=wanted, limit=limit - moved)
    return moved


def keep_poisoned(rt: Runtime, body: str | bytes, *, error: str = "", dequeue_count: int = 1) -> ContactOp | None:
    """The poison trigger's work: record the failure, then keep the op for replay. It never re-poisons.

    The Functions host hands a `<queue>-poison` message to the poison trigger and deletes it once the trigger
    returns, so the trigger itself must put the op somewhere replay can find it (invariant 2: no op is lost).
    It goes to a holding queue `<queue>-failed`, sent without expiry, rather than into the ContactState row:
    the body is kept byte for byte whatever its size (an op may be up to 48,000 characters, more than a table
    property holds), a message that is not an op at all is kept too, and `replay_poison` moves queue messages
    back exactly as it does from `-poison`. No trigger listens on `-failed`, so nothing is retried until an
    admin runs `python -m sync replay-poison`.

    Recording marks the user's ContactState row `failed` with the cause its last delivery noted, and writes a
    SyncRuns row with trigger `poison`; a message that is not an op names no user and records nothing (its body
    is untrusted: the user it points at may be a real one). Recording comes first and the copy after, so that a
    recording that fails and is retried never leaves two copies in `-failed`. Should recording fail on the host's
    last delivery of this message, the failure is logged and the op is still kept: a raise then would only move it
    to `<queue>-poison-poison`, where no trigger and no replay looks. Should the copy fail, the trigger raises
    and the host delivers the message again (recording twice is harmless: the same row, one more run row).
    """
    # Text once (bytes that are not UTF-8 with replacement characters): what `-failed` keeps is what is decoded, once.
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    message = decode_message(text)
    try:
        op = _record_poisoned(rt, message, error=error)
    except Exception as failure:
        if dequeue_count < MAX_DEQUEUE_COUNT:
            raise
        op = message.op
        log.error("could not record the poisoned op %s, kept for replay-poison anyway: %s",
                  op.key if op else "(not an op)", type(failure).__name__, extra={"outcome": "poisoned"})
    rt.stores.failed.send_text(message.text)
    return op


def _record_poisoned(rt: Runtime, message: OpMessage, *, error: str) -> ContactOp | None:
    op = record_poison(rt, message, error=error)
    if op is not None:
        now = datetime.now(UTC)
        row = rt.stores.contacts.get(op.pair_id, op.source_id)
        rt.stores.runs.save(
            RunRecord(
                op.pair_id, new_run_id(now), RunTrigger.POISON, now, outcome=RunOutcome.FAILED,
                counts={"poisoned": 1}, error=f"{op.kind.value} of {op.source_id} (run {op.run_id}): {row.last_error}",
            )
        )
    return op


def park(rt: Runtime, message: OpMessage, decision: Decision, error: BaseException) -> bool:
    """Keep an op of a pair whose credentials fail, untried, in the `-parked` queue (sent without expiry, before
    the delivery succeeds: invariant 2); a new credentials failure quarantines the pair first. False: the
    quarantine was lifted meanwhile (or the failure began before the lift), and the op went back on the ops queue."""
    op = message.op
    if op is not None and not keep_parked(rt, op.pair_id, error, new_failure=decision.quarantine):
        rt.stores.ops.send_text(message.text)
        return False
    rt.stores.parked.send_text(message.text)
    return True


def op_fields(message: OpMessage) -> dict[str, Any]:
    """Log fields of a message (pair, run, op kind, source object id); empty when it is not an op."""
    op = message.op
    if op is None:
        return {}
    return {"pair_id": op.pair_id, "run_id": op.run_id, "op_kind": op.kind.value, "source_id": op.source_id}


def deliver(rt: Runtime, body: str | bytes, *, dequeue_count: int) -> str:
    """The queue trigger's work for one message: what happened (an `Outcome` value, "deferred" or "bad").

    The verdict comes from `sync.core.delivery_policy.decide`; here it becomes what the Functions host understands:
    - poison (not an op at all): sent straight to the poison queue; retrying it cannot help. This delivery succeeds.
    - park (the pair's credentials fail): kept untried in `<queue>-parked` (the pair quarantined on a new failure),
      and this delivery succeeds: no attempt is spent on what only an admin can fix.
    - defer (throttled, the creation quota, RowBusy): the same body is sent again, invisible for the delay, and
      this delivery succeeds, so waiting never spends one of the `maxDequeueCount` deliveries. (Host retry policies
      do not apply to queue triggers, and a failed delivery always waits the fixed host.json `visibilityTimeout`.)
      The op gave up its claim on the user's row before it raised, so a newer op of the user goes ahead meanwhile.
    - retry, or poison on the last delivery: the cause is noted on the user's row and the error raised; the host
      retries after `visibilityTimeout` and moves the message to `<queue>-poison` after `maxDequeueCount`.
    Permanent outcomes (conflict, rejected) are recorded in ContactState by `apply_op` and returned.
    A batch of ops is split into single-op messages ("split", sync.app.worker.batches); a storage error raises (the host
    delivers the batch again), a malformed batch goes to the poison queue whole.
    """
    started = time.monotonic()
    message = decode_message(body)  # the one decoding of this message: everything below reads `message`
    if message.is_batch:
        if message.error is not None:
            log.error("not a valid batch of operations, sent to the poison queue: %s", message.error,
                      extra={"outcome": "bad"})
            rt.stores.poison.send_text(message.text)
            return "bad"
        if _batch_of_a_replaced_pair(rt, message.batch):
            return Outcome.DISCARDED.value
        split_batch(rt, message.batch)
        return "split"
    try:
        _, applied = handle_message(rt, message)
    except Exception as error:
        decision = decide(error, dequeue_count=dequeue_count)
        fields = {**op_fields(message), "dequeue_count": dequeue_count, "error_class": type(error).__name__,
                  "duration_ms": round((time.monotonic() - started) * 1000)}
        if decision.verdict is Verdict.POISON and isinstance(error, BadOpMessage):
            log.error("not a contact operation, sent to the poison queue: %s", error, extra={**fields, "outcome": "bad"})
            rt.stores.poison.send_text(message.text)
            return "bad"
        if decision.verdict is Verdict.PARK:
            park(rt, message, decision, error)
            log.info("op parked: %s", decision.reason, extra={**fields, "outcome": "parked"})
            return "parked"
        if decision.verdict is Verdict.DEFER:
            rt.stores.ops.send_text(message.text, delay_seconds=decision.delay_seconds)
            log.warning("op deferred %s s: %s", decision.delay_seconds, decision.reason,
                        extra={**fields, "outcome": "deferred", "defer_seconds": decision.delay_seconds})
            return "deferred"
        last = decision.verdict is Verdict.POISON
        note_failed_delivery(rt, message, decision)
        log.warning(
            "op failed (delivery %s of %s%s): %s", dequeue_count, MAX_DEQUEUE_COUNT,
            ", next stop the poison queue" if last else ", will be retried", decision.reason,
            extra={**fields, "outcome": "poisoned" if last else "retry"},
        )
        raise
    return applied.outcome.value
