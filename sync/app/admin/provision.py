"""Provision on demand: one user, now, with each step shown (`run --pair ID --user USER`, POST .../users/{user}/sync).

    source    read the user (object id, UPN or mail) from the source now
    scope     the scope decision and the rule that decided (stored group memberships, as `explain` uses)
    contact   the desired contact (what the mapping makes of the user)
    plan      the op the planner makes for this user alone against its state row (a conflict or failure is retried)
    Exchange  the op applied in-process, with the Exchange calls it made
    result    the outcome, recorded in ContactState like any op

Only this user is planned and applied: no other user's op, no link fix-up of others, no safety gate (one user). The
pair's deltaLink, lease and last run are left alone, so the next timer run carries on as if this had not happened
(a SyncRuns row with trigger `on_demand` records it). A pair quarantined for its credentials is refused: its calls
would fail; a credentials failure met here quarantines the pair as anywhere else.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from sync.app.planner import group_round
from sync.app.wiring.quarantine import quarantine_for_credentials
from sync.app.wiring.runtime import Runtime
from sync.app.worker.apply import Applied, apply_op
from sync.contract.ops import ContactOp
from sync.contract.pairs import TenantPair
from sync.contract.vocabulary import RunOutcome, RunTrigger, new_run_id
from sync.core.diagnosis import is_credentials_failure
from sync.core.managers import reported_manager
from sync.core.plan import Baseline, PlanOptions, plan_pair
from sync.core.scope import SKIP_REASONS, decide_scope
from sync.core.source import DeltaRound, source_select
from sync.errors import CtcsError
from sync.state.ownership import with_released
from sync.state.runs import RunRecord

log = logging.getLogger("ctcs.provision")


class Result:
    """What provisioning one user ended in (`Provisioned.result`)."""

    NOT_FOUND = "not_found"  # no such user in the source, and no contact of ours to remove
    OUT_OF_SCOPE = "out_of_scope"  # the user gets no contact (nothing to remove)
    UNCHANGED = "unchanged"  # the contact already holds the desired values: nothing sent
    QUARANTINED = "quarantined"  # the pair is quarantined for its credentials
    FAILED = "failed"  # the op could not be applied now (the error says why); the next run tries again


@dataclass
class Step:
    name: str
    detail: str
    data: dict[str, Any] = field(default_factory=dict)


@dataclass
class Provisioned:
    pair_id: str
    key: str
    run_id: str
    steps: list[Step] = field(default_factory=list)
    result: str = ""  # an apply Outcome value (created, updated, conflict, ...) or a Result
    source_id: str = ""
    exchange_calls: dict[str, int] = field(default_factory=dict)
    ok: bool = True

    def step(self, name: str, detail: str, **data: Any) -> None:
        self.steps.append(Step(name, detail, data))

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def provision_user(rt: Runtime, pair_id: str, key: str) -> Provisioned:
    pair = rt.stores.pairs.get(pair_id)
    now = datetime.now(UTC)
    done = Provisioned(pair.id, key, new_run_id(now))
    state = rt.stores.pair_state.get(pair.id)
    if state.credentials_quarantined:
        done.step("pair", f"quarantined for its credentials: {state.quarantine_reason}")
        return _finish(rt, done, Result.QUARANTINED, ok=False, now=now)
    started = time.monotonic()
    try:
        _provision(rt, pair, key.strip(), done)
    except CtcsError as error:
        if is_credentials_failure(error):
            quarantine_for_credentials(rt, pair, error)
        done.step("error", f"{type(error).__name__}: {error}")
        done.result, done.ok = Result.FAILED, False
    log.info("on-demand provisioning of %s in pair %s: %s", done.source_id or key, pair.id, done.result,
             extra={"pair_id": pair.id, "run_id": done.run_id, "trigger": RunTrigger.ON_DEMAND.value,
                    "source_id": done.source_id, "outcome": done.result,
                    "duration_ms": round((time.monotonic() - started) * 1000)})
    return _finish(rt, done, done.result, ok=done.ok, now=now)


def _provision(rt: Runtime, pair: TenantPair, key: str, done: Provisioned) -> None:
    select = source_select(pair)
    user = rt.open_source(pair).find_user(key, select)
    round_ = DeltaRound()
    if user is None:
        row = rt.stores.contacts.get(pair.id, key.lower())
        if not (row.status and row.status.live):
            done.step("source", "not found in the source tenant (object id, UPN or mail), and no contact of ours")
            done.result, done.ok = Result.NOT_FOUND, False
            return
        done.source_id = row.source_id
        done.step("source", "not found in the source tenant: its contact is removed", source_id=row.source_id)
        round_.add_removal(row.source_id, "deleted")
    else:
        done.source_id = str(user["id"])
        done.step("source", f"found {user.get('displayName') or ''} <{user.get('mail') or 'no mail'}>",
                  source_id=done.source_id, user=dict(user))
        round_.add_user(user)
    source_id = done.source_id
    memberships = group_round.stored_memberships(rt.stores.groups, pair) or {}
    hidden_ids = rt.hidden_ids(pair)
    if user is not None:
        hidden = None if hidden_ids is None else source_id.lower() in hidden_ids
        decision = decide_scope(pair, user, memberships.get(source_id, frozenset()), hidden)
        if decision.in_scope:
            done.step("scope", "in scope", in_scope=True)
        else:
            why = SKIP_REASONS.get(decision.reason or "", decision.reason or "")
            done.step("scope", f"out of scope: {decision.reason} ({why})" + (f"; {decision.detail}" if decision.detail else ""),
                      in_scope=False, reason=decision.reason, rule=decision.detail)
    manager = reported_manager(user) if user is not None else None
    state = rt.stores.contacts.summaries_of(pair.id, [source_id, *([manager] if manager else [])])
    state = with_released(state, rt.stores.ownership.marks(pair))  # a contact an admin took over stays theirs
    plan = plan_pair(pair, round_, Baseline(state, memberships=memberships, hidden_ids=hidden_ids),
                     PlanOptions(time.time_ns() // 1000, done.run_id, retry_kept=True, now=datetime.now(UTC)))
    ops = [op for op in plan.ops if op.source_id == source_id]
    for op in ops:
        if op.contact:
            done.step("contact", "desired contact", contact=dict(op.contact))
    if not ops:
        summary = state.get(source_id)
        live = summary is not None and summary.live
        done.step("plan", "nothing to do: " + ("the contact already holds these values" if live
                                                else "no contact, and none is wanted"))
        done.result = Result.UNCHANGED if user is not None and live else Result.OUT_OF_SCOPE
        return
    target = rt.open_target(pair)
    try:
        for op in ops:
            done.step("plan", f"{op.kind.value} ({op.reason})", kind=op.kind.value, reason=op.reason)
            applied = _apply(op, pair, target, rt, done)
            done.result = applied.outcome.value
            done.ok = not applied.outcome.failed
            done.step("result", applied.outcome.value + (f": {applied.detail}" if applied.detail else ""),
                      outcome=applied.outcome.value, guid=applied.guid)
    finally:
        close = getattr(target, "close", None)
        if callable(close):
            close()


def _apply(op: ContactOp, pair: TenantPair, target: Any, rt: Runtime, done: Provisioned) -> Applied:
    before = Counter(getattr(target, "requests", None) or {})
    try:
        return apply_op(op, pair=pair, target=target, contacts=rt.stores.contacts, ownership=rt.stores.ownership)
    finally:
        calls = Counter(getattr(target, "requests", None) or {}) - before
        done.exchange_calls = dict(Counter(done.exchange_calls) + calls)
        done.step("Exchange", ", ".join(f"{cmdlet} x{n}" for cmdlet, n in sorted(calls.items())) or "no call",
                  calls=dict(calls))


def _finish(rt: Runtime, done: Provisioned, result: str, *, ok: bool, now: datetime) -> Provisioned:
    done.result, done.ok = result, ok
    outcome = RunOutcome.APPLIED if ok and done.result not in (Result.UNCHANGED, Result.OUT_OF_SCOPE) else (
        RunOutcome.NO_CHANGES if ok else RunOutcome.QUARANTINED if result == Result.QUARANTINED else RunOutcome.FAILED)
    rt.stores.runs.save(RunRecord(
        done.pair_id, done.run_id, RunTrigger.ON_DEMAND, now, outcome=outcome, counts={done.result: 1},
        error="" if ok else f"{done.key}: {done.steps[-1].detail if done.steps else done.result}",
    ))
    return done
