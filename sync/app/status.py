"""What `python -m sync status` and `GET /api/pairs` report: one query, shared by both front doors.

Everything under a pair is that pair's own: its rows counted by status (`queued` = creates waiting for the worker),
`poisoned` = its ops that failed every delivery (kept in the `-failed` queue), and problems with their causes.
The queues are shared by every pair, so their depths are reported once, beside the pairs, never under one.
"""

from __future__ import annotations

from typing import Any

from sync.app.runtime import Runtime
from sync.contract.vocabulary import ContactStatus

MAX_PROBLEMS = 100
RECENT_RUNS = 5


def pair_status(rt: Runtime, pair_id: str) -> dict[str, Any]:
    """One pair's status as JSON-ready data."""
    stores = rt.stores
    pair = stores.pairs.get(pair_id)
    state = stores.pair_state.get(pair_id)
    counts = stores.contacts.status_counts(pair_id)
    poisoned = counts.pop("poisoned", 0)
    problems = [
        {"source_id": row.source_id, "status": row.status, "error": row.last_error, "last_op": row.last_op}
        for status in (ContactStatus.CONFLICT, ContactStatus.FAILED)
        for row in stores.contacts.rows(pair_id, status=status)
    ]
    return {
        "pair": pair_id,
        "enabled": pair.enabled,
        "quarantined": state.quarantined,
        "quarantine_reason": state.quarantine_reason or None,
        "quarantine_kind": state.kind.value if state.kind else None,
        "retest_at": state.retest_at or None,
        "last_run": {"id": state.last_run_id, "at": state.last_run_at, "outcome": state.last_outcome},
        "has_delta_link": bool(state.delta_link),
        "contacts": dict(counts),
        "waiting": {"creates_queued": counts.get(ContactStatus.QUEUED, 0), "poisoned": poisoned},
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
            }
            for run in stores.runs.recent(pair_id, limit=RECENT_RUNS)
        ],
        "problems": problems[:MAX_PROBLEMS],
    }


def queue_depths(rt: Runtime) -> dict[str, int]:
    """Messages in the shared queues, every pair's together (approximate, as Storage counts them)."""
    stores = rt.stores
    return {
        "ops": stores.ops.approximate_count(),
        "poison": stores.poison.approximate_count(),
        "failed": stores.failed.approximate_count(),
        "parked": stores.parked.approximate_count(),
    }


def status_report(rt: Runtime, pair_ids: list[str] | None = None) -> dict[str, Any]:
    """Every pair (or the ones named) and the shared queues: what `status --json` prints."""
    ids = pair_ids if pair_ids is not None else [pair.id for pair in rt.stores.pairs.list()]
    return {"pairs": [pair_status(rt, pair_id) for pair_id in ids], "queues": queue_depths(rt)}
