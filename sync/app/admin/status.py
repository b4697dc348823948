"""What `python -m sync status` and `GET /api/pairs` report: one query, shared by both front doors.

Everything under a pair is that pair's own: its rows counted by status (`queued` = creates waiting for the worker),
`poisoned` = its ops that failed every delivery (kept in the `-failed` queue), and problems with their causes.
The queues are shared by every pair, so their depths are reported once, beside the pairs, never under one: every
queue, the poison queues and theirs included (`queues` by role, `queue_names` the names they have in this app).
Under `exchange`, the pair's target organisation as every worker instance sees it: a creation-quota pause (when it
was reached, the creates of this pair that wait, the next attempt) and the pace of Exchange calls.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from sync.app.wiring.runtime import Runtime
from sync.contract.pairs import RETIRED_ADOPT_NOTE, TenantPair
from sync.contract.vocabulary import ContactStatus
from sync.state.ownership import MarkKind
from sync.state.pair_state import PairStatus, RoundState
from sync.state.pairs import tenants_of
from sync.state.queues import OpQueue, PairRunQueue
from sync.state.targets import MEMBER_SECONDS

MAX_PROBLEMS = 100
RECENT_RUNS = 5
GROUPS = "groups_"  # how ContactStateStore.status_counts tells groups' rows from users'


def ownership_status(rt: Runtime, pair: TenantPair) -> dict[str, Any]:
    """Contacts an admin took over (released until handed back, `python -m sync handback`), how many the pair
    adopted (`python -m sync adopt`), and a note for a stored pair that still says `conflicts: adopt_contacts`."""
    marks = rt.stores.ownership.marks(pair)
    released = [{"source_id": m.source_id, "name": m.name, "address": m.address, "why": m.why, "at": m.at}
                for m in sorted(marks.values(), key=lambda m: m.source_id) if m.kind is MarkKind.RELEASED]
    note = {"conflicts_note": RETIRED_ADOPT_NOTE} if pair.conflicts == "adopt_contacts" else {}
    return {"released_contacts": released, "adopted_contacts": len(marks) - len(released), **note}


def pair_status(rt: Runtime, pair_id: str) -> dict[str, Any]:
    """One pair's status as JSON-ready data."""
    stores = rt.stores
    pair = stores.pairs.get(pair_id)
    state = stores.pair_state.get(pair_id)
    all_counts = stores.contacts.status_counts(pair_id)
    group_counts = {name.removeprefix(GROUPS): n for name, n in all_counts.items() if name.startswith(GROUPS)}
    counts = {name: n for name, n in all_counts.items() if not name.startswith(GROUPS)}
    poisoned = counts.pop("poisoned", 0) + group_counts.pop("poisoned", 0)
    problems = [
        {"source_id": row.source_id, "kind": row.kind.value, "status": row.status, "error": row.last_error,
         "last_op": row.last_op}
        for status in (ContactStatus.CONFLICT, ContactStatus.FAILED, ContactStatus.RELEASED)
        for row in stores.contacts.rows(pair_id, status=status)
    ]
    queued = counts.get(ContactStatus.QUEUED, 0) + group_counts.get(ContactStatus.QUEUED, 0)
    groups: dict[str, Any] = {}
    if pair.syncs_groups or group_counts:
        # Pairs that sync groups: their group contacts by status, apart from the users' (`contacts`).
        groups = {"group_contacts": group_counts, "has_groups_delta_link": bool(state.groups_delta_link)}
    return {
        "pair": pair_id,
        "enabled": pair.enabled,
        "quarantined": state.quarantined,
        "quarantine_reason": state.quarantine_reason or None,
        "quarantine_kind": state.kind.value if state.kind else None,
        "retest_at": state.retest_at or None,
        "last_run": {"id": state.last_run_id, "at": state.last_run_at, "outcome": state.last_outcome},
        "has_delta_link": bool(state.delta_link),
        "round_in_progress": _round(state.round),
        "last_reconcile": {"run_id": state.reconcile_run_id, "at": state.reconcile_at,
                           "repaired": dict(state.reconcile_counts), "next_due_at": state.reconcile_due_at or None}
        if state.reconcile_at else None,
        "contacts": dict(counts),
        **groups,
        **ownership_status(rt, pair),
        "waiting": {"creates_queued": queued, "poisoned": poisoned},
        **pair_life(rt, pair, state),
        "exchange": target_status(rt, pair.target.organization, creates_waiting=queued),
        "recent_runs": [
            {
                "run_id": run.run_id,
                "trigger": run.trigger,
                "started": run.started.isoformat(timespec="seconds"),
                "outcome": run.outcome,
                "full": run.full,
                "seconds": run.seconds,
                "counts": run.counts,
                "error": run.error or None,
                "round_id": run.round_id or None,
                "pages": run.pages,
            }
            for run in stores.runs.recent(pair_id, limit=RECENT_RUNS)
        ],
        "problems": problems[:MAX_PROBLEMS],
        "subscriptions": [
            {
                "resource": row.resource, "state": row.state, "expires_at": row.expires_at or None,
                "renewed_at": row.renewed_at or None, "notifications_accepted": row.accepted,
                "notifications_rejected": row.rejected, "last_notification_at": row.last_notification_at or None,
                "error": row.error or None,
            }
            for row in stores.subscriptions.of_pair(pair_id)
        ],
    }


def pair_life(rt: Runtime, pair: TenantPair, state: PairStatus) -> dict[str, Any]:
    """The pair's generation, the messages of earlier pairs with its id that were discarded, and any other stored
    pair syncing the same source tenant into the same target tenant (stored before that was refused)."""
    same = [other.id for other in rt.stores.pairs.list() if other.id != pair.id and tenants_of(other) == tenants_of(pair)]
    overlap = None
    if same:
        overlap = (f"pair(s) {', '.join(same)} also sync this source tenant into this target tenant: the pairs fight "
                   "over the same contacts (one may delete what another made); remove all but one "
                   "(python -m sync pairs remove ID)")
    return {"generation": pair.generation or None, "overlap": overlap,
            "discarded_pair_replaced": {"ops": state.discarded_ops, "requests": state.discarded_requests}}


def _at(moment: datetime | None) -> str | None:
    return moment.isoformat(timespec="seconds") if moment else None


def target_status(rt: Runtime, organization: str, *, creates_waiting: int) -> dict[str, Any]:
    """The target organisation's creation-quota pause and pace (TargetState), as of now."""
    pause, _ = rt.stores.targets.quota(organization)
    pace, members = rt.stores.targets.pace(organization)
    now = time.time()
    quota: dict[str, Any] | None = None
    if pause.active:
        quota = {"reached_at": _at(pause.reached_at), "creates_waiting": creates_waiting,
                 "next_attempt_at": _at(pause.resume_at)}
    last = None
    if pause.pauses:
        last = {"ended_at": _at(pause.last_freed_at), "lasted_seconds": round(pause.freed_max)}
    return {
        "organization": organization,
        "creation_quota_pause": quota,
        "last_quota_pause": last,
        "pace": None if pace is None else {
            "concurrent_calls": pace.limit,
            "refused_at": pace.ceiling or None,
            "instances": sum(1 for seen in members.values() if now - seen < MEMBER_SECONDS),
            "throttled_until": _at(datetime.fromtimestamp(pace.throttled_until, UTC)) if pace.throttled_until > now else None,
        },
    }


def _round(round_: RoundState | None) -> dict[str, Any] | None:
    """A long round between two planner invocations (or one that stopped): where its checkpoint is."""
    if round_ is None:
        return None
    return {
        "round_id": round_.round_id, "full": round_.full, "trigger": round_.trigger, "started_at": round_.started_at,
        "checkpoint_at": round_.checkpoint_at or None, "pages_done": round_.page,
        "users_read": int(round_.counts.get("users", 0)), "ops_queued": int(round_.counts.get("queued", 0)),
    }


def queue_depths(rt: Runtime) -> dict[str, int]:
    """Messages in every queue ctcs or the host writes, every pair's together (approximate, as Storage counts them;
    a queue the host has not created yet counts 0). The keys are the queues' roles; `queue_names` has their names."""
    return {role: queue.approximate_count() for role, queue in _queues(rt).items()}


def queue_names(rt: Runtime) -> dict[str, str]:
    """The name of each queue `queue_depths` counts, by the same role."""
    return {role: queue.name for role, queue in _queues(rt).items()}


def _queues(rt: Runtime) -> dict[str, OpQueue | PairRunQueue]:
    stores = rt.stores
    return {
        "ops": stores.ops, "poison": stores.poison, "poison_poison": stores.poison_poison, "failed": stores.failed,
        "parked": stores.parked, "pair_runs": stores.pair_runs, "pair_runs_poison": stores.pair_runs_poison,
        "pair_runs_poison_poison": stores.pair_runs_poison_poison,
    }


def status_report(rt: Runtime, pair_ids: list[str] | None = None) -> dict[str, Any]:
    """Every pair (or the ones named) and the shared queues: what `status --json` prints."""
    ids = pair_ids if pair_ids is not None else [pair.id for pair in rt.stores.pairs.list()]
    return {"pairs": [pair_status(rt, pair_id) for pair_id in ids], "queues": queue_depths(rt),
            "queue_names": queue_names(rt), "notifications": notification_status(rt)}


def notification_status(rt: Runtime) -> dict[str, Any]:
    """Whether change notifications are on, where Graph posts them, and how many named no subscription of ours."""
    return {"enabled": rt.tuning.change_notifications and bool(rt.tuning.notification_url),
            "url": rt.tuning.notification_url or None, "rejected_unmatched": rt.stores.subscriptions.unmatched()}
