"""A planning run of one pair: read the source, plan, pass the safety gate, queue the ops, keep the deltaLink.

The planner function (fed by the timer through the `pair-runs` queue), the HTTP resync and `python -m sync run` all
come through `run_pair`, which works on the pair's round page by page (sync.app.planner.rounds) under the pair's lease. With
a budget it stops after the page on which the budget ran out and asks for the rest with a `continue` request on the
`pair-runs` queue (sync.app.planner.fanout); without one (the CLI) it plans the whole round. `preview` is the dry run:
the same rounds, planned the same way, with a sink that writes nothing (sync.app.planner.sinks).
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sync.app.planner.group_contacts import (
    GroupsBaseline,
    KindRound,
    drop_users,
    managed_count,
    needs_groups_round,
    run_groups_round,
    split_rows,
)
from sync.app.planner.rounds import Invocation, RoundProgress, StreamedRound, version_now
from sync.app.planner.sinks import DrySink, StoreSink
from sync.app.wiring.quarantine import quarantine_for_credentials
from sync.app.wiring.runtime import Runtime
from sync.contract.ops import KIND_ORDER, OpKind
from sync.contract.pair_runs import PairRunRequest, RunKind
from sync.contract.pairs import TenantPair
from sync.contract.vocabulary import QuarantineKind, RunOutcome, RunTrigger, new_run_id
from sync.core.diagnosis import Side, is_credentials_failure
from sync.core.plan import Plan, unsafe_reason
from sync.core.source import source_select
from sync.errors import CtcsError, LeaseHeld, LeaseLost, TargetError
from sync.state.entities import iso, now_utc
from sync.state.runs import RunRecord

log = logging.getLogger("ctcs.planning")

Prepare = Callable[[TenantPair, RunRecord], Mapping[str, int]]


@dataclass
class RunResult:
    run: RunRecord
    plan: Plan | None = None
    quarantine_reason: str = ""
    details: list[str] = field(default_factory=list)
    queued: int = 0  # ops this run queued
    groups_plan: Plan | None = None  # the groups round's plan (pairs whose objects include groups)

    @property
    def outcome(self) -> RunOutcome:
        return self.run.outcome


def definition_hash(pair: TenantPair) -> str:
    """Changes to what decides a contact (scope, mapping) make the next run a full round. So does a change of the
    users/delta `$select` (a new release reading more, like `manager`): a deltaLink keeps the `$select` it began with."""
    relevant = pair.scope.model_dump_json() + pair.contact.model_dump_json() + ",".join(source_select(pair))
    return hashlib.sha256(relevant.encode()).hexdigest()[:16]


def preview(rt: Runtime, pair_id: str, *, full: bool = False) -> RunResult:
    """The plan a run would make now, planned by the run's own pipeline (the streamed round, then the groups round)
    with a sink that writes nothing: no lease, no run row, no mark, no op, no checkpoint, not even the deltaLink.
    It plans a new round from the deltaLink, as `python -m sync plan` always has (a round in progress is the runs')."""
    pair = rt.stores.pairs.get(pair_id)
    now = datetime.now(UTC)
    run = RunRecord(pair.id, new_run_id(now), RunTrigger.CLI, now)
    status = rt.stores.pair_state.get(pair.id)
    dry = DrySink()
    if pair.syncs_users:
        streamed = StreamedRound(rt, pair, run, source_select(pair), definition_hash(pair), dry, full=full)
        progress = streamed.run_round()
        plan, reason, group_rows, hidden = progress.plan, progress.quarantine_reason, streamed.group_rows, streamed.hidden
        plan.full = progress.full  # an expired deltaLink turned the round full
        plan.ops.sort(key=lambda op: (KIND_ORDER[op.kind], op.source_id))  # the pages' ops in one order, as a run's
        managed = plan.managed + managed_count(group_rows)
        run.full, run.graph_requests = progress.full, progress.requests
    else:
        user_rows, group_rows = split_rows(rt.stores.contacts.summaries(pair.id))
        managed = managed_count(user_rows) + managed_count(group_rows)
        hidden = rt.hidden_ids(pair)
        users = drop_users(pair, run, user_rows, version=version_now(), allow_deletes=False, managed=managed, sink=dry)
        plan, reason = users.plan, unsafe_reason(users.plan, pair) or ""
        run.full, run.graph_requests = True, 0
    run.counts, run.outcome = plan.counts(), RunOutcome.PREVIEWED
    groups: KindRound | None = None
    if needs_groups_round(pair, group_rows):
        removals = plan.count(OpKind.DELETE) + plan.count(OpKind.HIDE)
        baseline = GroupsBaseline(group_rows, hidden, managed, earlier_removals=removals)
        groups = run_groups_round(rt, pair, run, baseline, version=version_now(), full=full or status.force_full,
                                  allow_deletes=False, sink=dry)
        run.counts.update(groups.plan.counts())
        run.graph_requests += groups.requests
        reason = reason or unsafe_reason(groups.plan, pair, earlier_removals=removals) or ""
    return RunResult(run, plan, reason, groups_plan=groups.plan if groups is not None else None)


def run_pair(
    rt: Runtime,
    pair_id: str,
    *,
    trigger: RunTrigger,
    full: bool = False,
    allow_deletes: bool = False,
    invocation: Invocation | None = None,
    prepare: Prepare | None = None,
) -> RunResult:
    """Plan one pair's round (or the part of it `invocation.budget_seconds` allows) and queue its ops. Returns the run;
    errors of this pair are recorded, not raised (invariant 7). A run that stops before the round's end (outcome
    `continued`) has asked for the rest on the `pair-runs` queue by the time this returns. `invocation.keep_ops`
    keeps every op in the result's plan (the CLI shows them); without it only counts are kept, whatever the round's
    size. `prepare` runs under the lease before the round (a reconcile corrects the state there); the counts it
    returns join the run's."""
    stores = rt.stores
    now = datetime.now(UTC)
    pair = stores.pairs.get(pair_id)
    run = RunRecord(pair.id, new_run_id(now), trigger, now)
    started = time.monotonic()
    status = stores.pair_state.get(pair.id).for_generation(pair.generation)
    released_by_round = status.round is not None and status.round.allow_deletes
    # --allow-deletes releases the safety gate only; a credentials quarantine waits for a passing connection test.
    if status.credentials_quarantined or (status.quarantined and not (allow_deletes or released_by_round)):
        run.outcome = RunOutcome.QUARANTINED
        run.error = status.quarantine_reason
        return RunResult(run, quarantine_reason=status.quarantine_reason)
    try:
        stores.pair_state.acquire_lease(pair.id, run.run_id, rt.tuning.lease_seconds)
    except LeaseHeld as held:
        run.outcome, run.error = RunOutcome.LEASE_HELD, str(held)
        return RunResult(run)
    try:
        result = _run_with_lease(rt, pair, run, allow_deletes=allow_deletes, full=full, started=started,
                                 invocation=invocation or Invocation(), prepare=prepare)
    except LeaseLost as lost:
        run.outcome, run.error = RunOutcome.LEASE_HELD, str(lost)
        log.warning("pair %s run %s stopped: %s", pair.id, run.run_id, lost)
        result = RunResult(run)
    except Exception as error:
        if is_credentials_failure(error):
            return _quarantined_for_credentials(rt, pair, run, error)
        run.outcome, run.error = RunOutcome.FAILED, f"{type(error).__name__}: {error}"
        if isinstance(error, CtcsError):
            log.error("pair %s run %s failed: %s", pair.id, run.run_id, run.error)
        else:
            log.exception("pair %s run %s failed unexpectedly", pair.id, run.run_id)
        stores.pair_state.record_run(pair.id, run_id=run.run_id, outcome=run.outcome, delta_link=None)
        result = RunResult(run)
    finally:
        run.seconds = time.monotonic() - started
        stores.runs.save(run)
        stores.pair_state.release_lease(pair.id, run.run_id)
    if run.outcome is RunOutcome.CONTINUED:
        _ask_for_the_rest(rt, pair, run)  # after the lease is free, so the next invocation can take the pair
    return result


def _ask_for_the_rest(rt: Runtime, pair: TenantPair, run: RunRecord) -> None:
    pair_id = pair.id
    request = PairRunRequest(pair_id, RunKind.CONTINUE, run.trigger, round_id=run.round_id, requested_at=iso(now_utc()),
                             generation=pair.generation)
    try:
        rt.stores.pair_runs.send(request)
    except Exception as error:  # the round waits at its checkpoint: the next timer run carries it on
        log.error("pair %s: could not ask for the rest of round %s (%s); the next timer run resumes it",
                  pair_id, run.round_id, error)


def _quarantined_for_credentials(rt: Runtime, pair: TenantPair, run: RunRecord, error: BaseException) -> RunResult:
    """The run met a credentials failure (a sign-in refused, 401/403, an unreadable certificate): quarantine the
    pair (kind `credentials`) instead of failing run after run; the timer re-tests it. Nothing was queued."""
    # In a planning run only the source's Exchange (visibility) is an Exchange call.
    quarantine_for_credentials(rt, pair, error, side=None if not isinstance(error, TargetError) else Side.SOURCE_EXCHANGE)
    reason = rt.stores.pair_state.get(pair.id).quarantine_reason
    run.outcome, run.error = RunOutcome.QUARANTINED, reason
    rt.stores.pair_state.record_run(pair.id, run_id=run.run_id, outcome=run.outcome, delta_link=None)
    return RunResult(run, quarantine_reason=reason)


def _run_with_lease(
    rt: Runtime, pair: TenantPair, run: RunRecord, *, allow_deletes: bool, full: bool, started: float,
    invocation: Invocation, prepare: Prepare | None = None,
) -> RunResult:
    stores = rt.stores
    prepared = dict(prepare(pair, run)) if prepare is not None else {}
    if not pair.syncs_users:
        return _run_groups_only(rt, pair, run, allow_deletes=allow_deletes, full=full, started=started)
    sink = StoreSink(rt, pair, run)
    streamed = StreamedRound(rt, pair, run, source_select(pair), definition_hash(pair), sink, full=full,
                             allow_deletes=allow_deletes, invocation=invocation, started=started)
    progress = streamed.run_round()
    _record(run, progress)
    if prepare is not None:
        # A reconcile's orphans are the removals of its full round: contacts with no live, in-scope source user.
        removals = progress.plan.count(OpKind.DELETE) + progress.plan.count(OpKind.HIDE)
        prepared["orphans_removed"] = 0 if progress.quarantine_reason else removals
        run.counts = {**run.counts, **prepared}
    if progress.quarantine_reason:
        stores.pair_state.record_run(pair.id, run_id=run.run_id, outcome=RunOutcome.QUARANTINED, delta_link=None)
        return RunResult(run, progress.plan, progress.quarantine_reason, queued=progress.queued)
    groups: KindRound | None = None
    if progress.finished and needs_groups_round(pair, streamed.group_rows):
        # The users round is queued and its deltaLink saved: the groups round follows under the same lease.
        managed = progress.plan.managed + managed_count(streamed.group_rows)
        removals = progress.plan.count(OpKind.DELETE) + progress.plan.count(OpKind.HIDE)
        baseline = GroupsBaseline(streamed.group_rows, streamed.hidden, managed, earlier_removals=removals)
        groups = run_groups_round(rt, pair, run, baseline, version=version_now(), full=full or run.full,
                                  allow_deletes=progress.deletes_allowed, sink=sink)
        _record_groups(run, groups, users_queued=progress.round_queued)
        if groups.quarantine_reason:
            stores.pair_state.record_run(pair.id, run_id=run.run_id, outcome=RunOutcome.QUARANTINED, delta_link=None)
            return RunResult(run, progress.plan, groups.quarantine_reason, queued=progress.queued,
                             groups_plan=groups.plan)
        stores.pair_state.record_run(pair.id, run_id=run.run_id, outcome=run.outcome, delta_link=None)
    if progress.finished and progress.deletes_allowed and stores.pair_state.get(pair.id).gate_quarantined:
        _release_gate(rt, pair, run)
    elif not progress.finished:
        stores.pair_state.record_run(pair.id, run_id=run.run_id, outcome=run.outcome, delta_link=None)
    _log_run(pair, run, started)
    queued = progress.queued + (groups.queued if groups else 0)
    return RunResult(run, progress.plan, queued=queued, groups_plan=groups.plan if groups else None)


def _run_groups_only(rt: Runtime, pair: TenantPair, run: RunRecord, *, allow_deletes: bool, full: bool,
                     started: float) -> RunResult:
    """A pair whose `objects` are groups only: its users' contacts (if it had any) go, then the groups round."""
    stores = rt.stores
    user_rows, group_rows = split_rows(stores.contacts.summaries(pair.id))
    managed = managed_count(user_rows) + managed_count(group_rows)
    run.outcome = RunOutcome.NO_CHANGES
    sink = StoreSink(rt, pair, run)
    users = drop_users(pair, run, user_rows, version=version_now(), allow_deletes=allow_deletes, managed=managed,
                       sink=sink)
    run.counts = users.plan.counts()
    plan, reason, queued = users.plan, users.quarantine_reason, users.queued
    groups: KindRound | None = None
    if not reason:
        baseline = GroupsBaseline(group_rows, rt.hidden_ids(pair), managed, earlier_removals=users.removals)
        groups = run_groups_round(rt, pair, run, baseline, version=version_now(), full=full, allow_deletes=allow_deletes,
                                  sink=sink)
        _record_groups(run, groups, users_queued=users.queued)
        reason, queued = groups.quarantine_reason, queued + groups.queued
    run.full = full or (groups is not None and groups.full)
    if reason:
        run.outcome, run.error = RunOutcome.QUARANTINED, reason
    stores.pair_state.record_run(pair.id, run_id=run.run_id, outcome=run.outcome, delta_link=None)
    if not reason and allow_deletes and stores.pair_state.get(pair.id).gate_quarantined:
        _release_gate(rt, pair, run)
    _log_run(pair, run, started)
    return RunResult(run, plan, reason, queued=queued, groups_plan=groups.plan if groups else None)


def _record_groups(run: RunRecord, groups: KindRound, *, users_queued: int) -> None:
    """The run's counts hold the groups round's beside the users' (prefixed `groups_`); the outcome says whether
    anything was queued at all."""
    run.counts = {**run.counts, **groups.plan.counts()}
    run.graph_requests += groups.requests
    if groups.quarantine_reason:
        run.outcome, run.error = RunOutcome.QUARANTINED, groups.quarantine_reason
    elif run.outcome in (RunOutcome.NO_CHANGES, RunOutcome.PLANNED):
        run.outcome = RunOutcome.PLANNED if users_queued or groups.queued else RunOutcome.NO_CHANGES


def _release_gate(rt: Runtime, pair: TenantPair, run: RunRecord) -> None:
    rt.stores.pair_state.release_quarantine(pair.id)
    rt.stores.removals.forget(pair)  # the admin saw the removals: the gate's window starts anew
    log.warning("pair %s: safety gate quarantine released (allow_deletes)", pair.id,
                extra={"pair_id": pair.id, "run_id": run.run_id, "outcome": "released",
                       "quarantine_kind": QuarantineKind.GATE.value})


def _log_run(pair: TenantPair, run: RunRecord, started: float) -> None:
    log.info(
        "pair %s run %s: %s",
        pair.id,
        run.run_id,
        run.outcome,
        extra={"pair_id": pair.id, "run_id": run.run_id, "round_id": run.round_id, "counts": run.counts,
               "full": run.full, "pages": run.pages, "seconds": round(time.monotonic() - started, 3)},
    )


def _record(run: RunRecord, progress: RoundProgress) -> None:
    run.full, run.counts, run.graph_requests = progress.full, progress.plan.counts(), progress.requests
    run.round_id, run.pages, run.outcome = progress.round_id, progress.pages, progress.outcome
    if progress.quarantine_reason:
        run.error = progress.quarantine_reason


def record_applied(rt: Runtime, result: RunResult, outcomes: Mapping[str, int]) -> None:
    """A run that also applied its ops in-process (`python -m sync run`): its row and the pair say `applied`, with
    what applying did (`applied_created`, `applied_conflict`, `applied_poisoned`, ...) beside the planned counts."""
    run = result.run
    if run.outcome is not RunOutcome.PLANNED:
        return
    run.outcome = RunOutcome.APPLIED
    run.counts = {**run.counts, **{f"applied_{name}": count for name, count in sorted(outcomes.items()) if count}}
    rt.stores.runs.save(run)
    rt.stores.pair_state.record_run(run.pair_id, run_id=run.run_id, outcome=run.outcome, delta_link=None)
