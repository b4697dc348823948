"""Fan-out: one planner invocation per pair, through the `pair-runs` queue.

    timer ──► request_runs: one `plan` request per due pair ──► pair-runs ──► run_requested (queue trigger): run_pair
                                                                   ▲                         │ out of time
                                                                   └── `continue` request ◄──┘

A pair whose reconcile is due (every `reconcile_hours`, spread over the interval by pair id) gets a `reconcile`
request instead of a `plan`; so does a pair whose ContactState is empty while the target holds contacts with its
anchor (re-added, or the table lost), which is checked when its `plan` request is run.

The timer does not plan: it only puts a request per due pair on the queue, so pairs plan in parallel (the host runs
several messages at once and scales out), and a slow or failing pair never holds another up (invariant 7). A pair is
due unless it is disabled, quarantined (an admin decides), being planned right now (its lease is held), or in the
middle of a round whose planner asked for the rest recently (that request is on the queue). A round whose last run
failed, or whose checkpoint has not moved for a while (its `continue` request was lost), is due again, and resumes
from its checkpoint.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from sync.app.planner.reconcile import reconcile_pair, spread_due_at
from sync.app.planner.rounds import Invocation
from sync.app.planner.run import RunResult, run_pair
from sync.app.planner.subscriptions import maintain_pair
from sync.app.wiring.runtime import Runtime
from sync.contract.pair_runs import PairRunRequest, RunKind, decode_run_request
from sync.contract.vocabulary import PAIR_REPLACED, RunOutcome, RunTrigger, SubscriptionState
from sync.errors import BadRunRequest, PairNotFound
from sync.state.entities import iso, now_utc
from sync.state.pair_state import PairStatus

log = logging.getLogger("ctcs.fanout")

STALLED_AFTER_BUDGETS = 2  # a round whose checkpoint is older than this many budgets (plus a minute) is resumed
# A notification run whose round found nothing looks again once, this much later: Graph's delta can show a change
# some seconds after its notification (Microsoft: "expect varying delays"). 30 s keeps change -> contact p95 under a
# minute with a 30 s delta delay; one look only, so a notification costs at most two delta rounds.
LOOK_AGAIN_SECONDS = 30


@dataclass(frozen=True)
class Requested:
    pair_id: str
    why_not: str = ""  # empty: a request was queued; else why the pair was not due

    @property
    def queued(self) -> bool:
        return not self.why_not


def why_not_due(status: PairStatus, *, enabled: bool, now: datetime, budget_seconds: int) -> str:
    """Why the timer leaves a pair alone this time ("" when it is due)."""
    if not enabled:
        return "disabled"
    if status.quarantined:
        return "quarantined"
    if status.lease_held(now):
        return "being planned"
    round_ = status.round
    if round_ is not None and round_.checkpoint_at and status.last_outcome == RunOutcome.CONTINUED:
        stalled = datetime.fromisoformat(round_.checkpoint_at) + timedelta(seconds=STALLED_AFTER_BUDGETS * budget_seconds + 60)
        if now < stalled:
            return "round in progress"
    return ""


def request_runs(rt: Runtime, *, trigger: RunTrigger = RunTrigger.TIMER) -> list[Requested]:
    """The timer's work: a `plan` request for every due pair. One pair's trouble (its state unreadable) is logged
    and the others are still requested."""
    now = now_utc()
    done = []
    for pair in rt.stores.pairs.list():
        try:
            status = rt.stores.pair_state.get(pair.id)
            why = why_not_due(status, enabled=pair.enabled, now=now, budget_seconds=rt.tuning.planner_budget_seconds)
            if not status.reconcile_due_at and not status.quarantined:
                # First sight of the pair: its reconciles start at a point of the interval its id decides, so pairs
                # added together do not all reconcile in the same timer run.
                rt.stores.pair_state.schedule_reconcile(pair.id, iso(spread_due_at(pair, now)))
            reconcile_due = bool(status.reconcile_due_at) and datetime.fromisoformat(status.reconcile_due_at) <= now
            kind = RunKind.RECONCILE if reconcile_due and status.round is None else RunKind.PLAN
            if not why:
                rt.stores.pair_runs.send(PairRunRequest(pair.id, kind, trigger, requested_at=iso(now),
                                                        generation=pair.generation))
            done.append(Requested(pair.id, why))
        except Exception as error:
            log.exception("pair %s: could not ask for a planning run", pair.id)
            done.append(Requested(pair.id, f"failed: {type(error).__name__}"))
    return done


def run_requested(rt: Runtime, body: str | bytes) -> RunResult | None:
    """The planner's work for one `pair-runs` message: plan the pair within the budget. None when there is nothing
    to do: a message that is not a request (logged; retrying cannot help), a pair that no longer exists, or a
    `continue` for a round that has ended. A `continue` that finds the lease held (a request of the timer got there
    first, or a crashed run's lease has not run out) is sent again for later, so a round is never left waiting."""
    try:
        request = decode_run_request(body)
    except BadRunRequest as bad:
        log.error("dropping a pair-runs message that is not a planning request: %s", bad)
        return None
    try:
        if _of_a_replaced_pair(rt, request):
            return None
        status = rt.stores.pair_state.get(request.pair_id)
        if request.kind is RunKind.CONTINUE and (status.round is None or status.round.round_id != request.round_id):
            log.info("pair %s: round %s has ended; nothing to continue", request.pair_id, request.round_id)
            return None
        if request.trigger is RunTrigger.NOTIFICATION and not _notification_run_starts(rt, request.pair_id):
            return None
        if request.kind is RunKind.RECONCILE or (request.kind is RunKind.PLAN and _state_lost(rt, request.pair_id)):
            result, _ = reconcile_pair(rt, request.pair_id, allow_deletes=request.allow_deletes,
                                       budget_seconds=rt.tuning.planner_budget_seconds, keep_ops=False)
            return result
        result = run_pair(rt, request.pair_id, trigger=request.trigger, full=request.full,
                          allow_deletes=request.allow_deletes,
                          invocation=Invocation(rt.tuning.planner_budget_seconds, keep_ops=False))
        _look_again_if_nothing_found(rt, request, result)
    except PairNotFound:
        log.warning("pair %s no longer exists; dropping its planning request", request.pair_id)
        return None
    if result.outcome is RunOutcome.LEASE_HELD and (request.kind is RunKind.CONTINUE
                                                    or request.trigger is RunTrigger.NOTIFICATION):
        # A continue must not leave its round waiting; a notification's change may be newer than what the run
        # holding the lease reads, so its run comes after that one.
        rt.stores.pair_runs.send(request, delay_seconds=_until_lease_ends(rt, request.pair_id))
    return result


def _look_again_if_nothing_found(rt: Runtime, request: PairRunRequest, result: RunResult) -> None:
    """A notification said something changed, but the round found nothing: delta may not show the change yet, so ask
    for one more run `LOOK_AGAIN_SECONDS` later. That run never asks again (bounded), and the timer still follows."""
    if request.trigger is not RunTrigger.NOTIFICATION or request.look_again or request.kind is not RunKind.PLAN:
        return
    if result.outcome is not RunOutcome.NO_CHANGES:
        return
    again = replace(request, look_again=True, requested_at=iso(now_utc()))
    rt.stores.pair_runs.send(again, delay_seconds=LOOK_AGAIN_SECONDS)
    log.info("pair %s: its notification run found nothing new; looking again in %d s", request.pair_id,
             LOOK_AGAIN_SECONDS, extra={"pair_id": request.pair_id, "look_again_seconds": LOOK_AGAIN_SECONDS})


def is_void(request: PairRunRequest, generation: str) -> bool:
    """Whether a request was made for another generation of its pair id (a pair removed and added again, or replaced
    with other tenants). A request naming no generation was made for a pair stored before generations existed; a plain
    `plan` without one is what the timer asks anyway, so it plans whatever pair holds the id now."""
    if request.generation == generation:
        return False
    harmless = not request.generation and request.kind is RunKind.PLAN and not (request.allow_deletes or request.full)
    return not harmless


def _of_a_replaced_pair(rt: Runtime, request: PairRunRequest) -> bool:
    """Discard (count and log) a request of another generation; `PairNotFound` when the pair is gone."""
    if not is_void(request, rt.stores.pairs.get(request.pair_id).generation):
        return False
    rt.stores.pair_state.count_discarded(request.pair_id, "requests")
    log.warning("pair %s: %s request (%s): %s", request.pair_id, request.kind.value, request.trigger.value,
                PAIR_REPLACED, extra={"pair_id": request.pair_id, "outcome": "discarded", "detail": PAIR_REPLACED})
    return True


def _state_lost(rt: Runtime, pair_id: str) -> bool:
    """ContactState holds nothing for the pair while the target holds contacts with its anchor: a pair removed and
    added again, or a lost table. A reconcile rebuilds the rows first, so nothing is created twice."""
    status = rt.stores.pair_state.get(pair_id)
    if status.round is not None or status.quarantined or not rt.stores.contacts.is_empty(pair_id):
        return False
    try:
        pair = rt.stores.pairs.get(pair_id)  # as stored now, not as cached: the id may name a new pair since
        return rt.target(pair).holds_owned(pair.contact.anchor_attribute, pair.anchor_prefix)
    except PairNotFound:
        raise
    except Exception as error:  # the planning run meets the same failure and records it in its run (invariant 7)
        log.warning("pair %s: could not check the target for contacts of a lost state: %s", pair_id, error)
        return False


def _notification_run_starts(rt: Runtime, pair_id: str) -> bool:
    """A notification run is starting: later notifications ask for another run, and the subscriptions a lifecycle
    event marked are renewed or made again first (the route itself never calls Graph). A disabled pair is left
    alone (its subscriptions go at the next timer)."""
    rt.stores.pair_state.disarm_notification_run(pair_id)
    if not rt.stores.pairs.get(pair_id).enabled:
        log.info("pair %s is disabled; dropping its notification run", pair_id)
        return False
    if any(row.state != SubscriptionState.ACTIVE for row in rt.stores.subscriptions.of_pair(pair_id)):
        try:
            maintain_pair(rt, pair_id)
        except Exception:  # planning still goes on; the row keeps the error and the timer tries again
            log.exception("pair %s: could not renew its change-notification subscriptions", pair_id)
    return True


def _until_lease_ends(rt: Runtime, pair_id: str) -> int:
    status = rt.stores.pair_state.get(pair_id)
    if not status.lease_until:
        return 1
    left = (datetime.fromisoformat(status.lease_until) - now_utc()).total_seconds()
    return int(min(rt.tuning.lease_seconds, max(1, left + 1)))
