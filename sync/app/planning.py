"""A planning run of one pair: read the source, plan, pass the safety gate, queue the ops, keep the deltaLink.

The timer, the HTTP resync and `python -m sync run` all come through `run_pair`; `preview` is the dry run.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sync.app import group_round
from sync.app.quarantine import quarantine_for_credentials
from sync.app.runtime import Runtime
from sync.contract.ops import OpKind
from sync.contract.pairs import TenantPair, template_fields
from sync.contract.userattrs import BASE_SELECT
from sync.contract.vocabulary import QuarantineKind, RunOutcome, RunTrigger
from sync.core.diagnosis import Side, is_credentials_failure
from sync.core.plan import Plan, plan_pair, unsafe_reason
from sync.core.source import DeltaRound
from sync.errors import CtcsError, DeltaTokenExpired, LeaseHeld, TargetError
from sync.state.runs import RunRecord

log = logging.getLogger("ctcs.planning")


@dataclass
class RunResult:
    run: RunRecord
    plan: Plan | None = None
    quarantine_reason: str = ""
    details: list[str] = field(default_factory=list)

    @property
    def outcome(self) -> RunOutcome:
        return self.run.outcome


def new_run_id(now: datetime) -> str:
    return f"{now:%Y%m%dT%H%M%S}-{secrets.token_hex(3)}"


def source_select(pair: TenantPair) -> tuple[str, ...]:
    """Exactly the user properties mapping and scope read: the base set plus what templates name."""
    names = list(BASE_SELECT)
    wanted = [name for template in (pair.contact.display_name, *pair.contact.attributes.values())
              for name in template_fields(template)]
    wanted += [clause.attribute for group in pair.scope.filter_groups for clause in group]
    for name in wanted:
        top = name.split(".", 1)[0]
        if top != "source" and top not in names:
            names.append(top)
    return tuple(names)


def definition_hash(pair: TenantPair) -> str:
    """Changes to what decides a contact (scope, mapping) make the next run a full round. So does a change of the
    users/delta `$select` (a new release reading more, like `manager`): a deltaLink keeps the `$select` it began with."""
    relevant = pair.scope.model_dump_json() + pair.contact.model_dump_json() + ",".join(source_select(pair))
    return hashlib.sha256(relevant.encode()).hexdigest()[:16]


def read_round(rt: Runtime, pair: TenantPair, delta_link: str | None) -> DeltaRound:
    source = rt.open_source(pair)
    select = source_select(pair)
    if delta_link:
        try:
            return source.read_round(delta_link, select)
        except DeltaTokenExpired as expired:
            log.warning("pair %s: delta token no longer valid (%s); starting a full round", pair.id, expired)
    round_ = source.read_round(None, select)
    round_.full = True
    return round_


@dataclass
class _Planned:
    plan: Plan
    round: DeltaRound
    full_request_seen: str  # PairState.full_requested_at when the round began


def _plan(rt: Runtime, pair: TenantPair, run_id: str, *, full: bool) -> _Planned:
    status = rt.stores.pair_state.get(pair.id)
    stale_definition = status.definition_hash not in ("", definition_hash(pair))
    groups = group_round.load(rt.stores.groups, pair)  # None unless the pair scopes by group
    use_link = not (full or status.force_full or stale_definition or group_round.needs_full_round(pair, groups)) \
        and status.delta_link
    round_ = read_round(rt, pair, status.delta_link if use_link else None)
    state = rt.stores.contacts.summaries(pair.id)
    round_, memberships = group_round.scope_round(rt.open_source(pair), pair, round_, groups, state, source_select(pair))
    visibility = rt.open_visibility(pair)  # the source's own Exchange, when the pair grants it
    hidden_ids = visibility.hidden_ids() if visibility is not None else None
    version = time.time_ns() // 1000
    plan = plan_pair(
        pair, round_, state, version=version, run_id=run_id, retry_kept=round_.full, now=datetime.now(UTC),
        hidden_ids=hidden_ids, memberships=memberships,
    )
    return _Planned(plan, round_, status.full_requested_at)


def preview(rt: Runtime, pair_id: str, *, full: bool = False) -> RunResult:
    """The plan a run would make now; writes nothing (not even the deltaLink)."""
    pair = rt.stores.pairs.get(pair_id)
    now = datetime.now(UTC)
    run = RunRecord(pair.id, new_run_id(now), RunTrigger.CLI, now)
    planned = _plan(rt, pair, run.run_id, full=full)
    plan, round_ = planned.plan, planned.round
    run.full, run.counts, run.graph_requests, run.outcome = round_.full, plan.counts(), round_.requests, RunOutcome.PREVIEWED
    return RunResult(run, plan, unsafe_reason(plan, pair) or "")


def run_pair(
    rt: Runtime, pair_id: str, *, trigger: RunTrigger, full: bool = False, allow_deletes: bool = False
) -> RunResult:
    """Plan one pair and queue its ops. Returns the run; errors of this pair are recorded, not raised."""
    stores = rt.stores
    now = datetime.now(UTC)
    pair = stores.pairs.get(pair_id)
    run = RunRecord(pair.id, new_run_id(now), trigger, now)
    started = time.monotonic()
    status = stores.pair_state.get(pair.id)
    # --allow-deletes releases the safety gate only; a credentials quarantine waits for a passing connection test.
    if status.credentials_quarantined or (status.quarantined and not allow_deletes):
        run.outcome = RunOutcome.QUARANTINED
        run.error = status.quarantine_reason
        return RunResult(run, quarantine_reason=status.quarantine_reason)
    try:
        stores.pair_state.acquire_lease(pair.id, run.run_id, rt.tuning.lease_seconds)
    except LeaseHeld as held:
        run.outcome, run.error = RunOutcome.LEASE_HELD, str(held)
        return RunResult(run)
    try:
        return _run_with_lease(rt, pair, run, allow_deletes=allow_deletes, full=full, started=started)
    except Exception as error:
        if is_credentials_failure(error):
            return _quarantined_for_credentials(rt, pair, run, error)
        run.outcome, run.error = RunOutcome.FAILED, f"{type(error).__name__}: {error}"
        if isinstance(error, CtcsError):
            log.error("pair %s run %s failed: %s", pair.id, run.run_id, run.error)
        else:
            log.exception("pair %s run %s failed unexpectedly", pair.id, run.run_id)
        stores.pair_state.record_run(pair.id, run_id=run.run_id, outcome=run.outcome, delta_link=None)
        return RunResult(run)
    finally:
        run.seconds = time.monotonic() - started
        stores.runs.save(run)
        stores.pair_state.release_lease(pair.id, run.run_id)


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
    rt: Runtime, pair: TenantPair, run: RunRecord, *, allow_deletes: bool, full: bool, started: float
) -> RunResult:
    stores = rt.stores
    planned = _plan(rt, pair, run.run_id, full=full)
    plan, round_ = planned.plan, planned.round
    run.full, run.counts, run.graph_requests = round_.full, plan.counts(), round_.requests
    reason = unsafe_reason(plan, pair)
    if reason and not allow_deletes:
        # Invariant 5: nothing is queued and the deltaLink stays, so the same changes are planned again on release.
        stores.pair_state.quarantine(pair.id, reason)
        stores.pair_state.record_run(pair.id, run_id=run.run_id, outcome=RunOutcome.QUARANTINED, delta_link=None)
        run.outcome, run.error = RunOutcome.QUARANTINED, reason
        log.warning("pair %s quarantined: %s", pair.id, reason,
                    extra={"pair_id": pair.id, "run_id": run.run_id, "outcome": RunOutcome.QUARANTINED.value,
                           "quarantine_kind": QuarantineKind.GATE.value, "reason": reason})
        return RunResult(run, plan, reason)
    stores.contacts.mark_queued(pair.id, [op for op in plan.ops if op.kind is OpKind.CREATE])
    try:
        queued = stores.ops.send_all(plan.ops)
    except Exception:
        # Some creates are marked queued but never reached the queue: a full round re-plans every queued row.
        stores.pair_state.request_full_round(pair.id)
        raise
    # Invariant 4: the deltaLinks (users and groups) are saved only now that every change of the round is queued.
    group_round.commit(stores.groups, pair.id, round_)
    stores.pair_state.record_run(
        pair.id,
        run_id=run.run_id,
        outcome=RunOutcome.PLANNED if queued else RunOutcome.NO_CHANGES,
        delta_link=round_.delta_link or "",
        definition=definition_hash(pair),
        full_request_seen=planned.full_request_seen,
    )
    if allow_deletes and stores.pair_state.get(pair.id).gate_quarantined:
        stores.pair_state.release_quarantine(pair.id)
        log.warning("pair %s: safety gate quarantine released (allow_deletes)", pair.id,
                    extra={"pair_id": pair.id, "run_id": run.run_id, "outcome": "released",
                           "quarantine_kind": QuarantineKind.GATE.value})
    run.outcome = RunOutcome.PLANNED if queued else RunOutcome.NO_CHANGES
    log.info(
        "pair %s run %s planned",
        pair.id,
        run.run_id,
        extra={"pair_id": pair.id, "run_id": run.run_id, "counts": run.counts, "full": run.full,
               "seconds": round(time.monotonic() - started, 3)},
    )
    return RunResult(run, plan)


def plan_all(rt: Runtime, *, trigger: RunTrigger = RunTrigger.TIMER) -> list[RunResult]:
    """Plan every enabled pair; one pair's failure never stops another (invariant 7)."""
    results = []
    for pair in rt.stores.pairs.list():
        if not pair.enabled:
            continue
        try:
            results.append(run_pair(rt, pair.id, trigger=trigger))
        except Exception as error:
            log.exception("pair %s could not be planned", pair.id)
            now = datetime.now(UTC)
            error_text = f"{type(error).__name__}: {error}"
            run = RunRecord(pair.id, new_run_id(now), trigger, now, outcome=RunOutcome.FAILED, error=error_text)
            rt.stores.runs.save(run)
            results.append(RunResult(run))
    return results



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
