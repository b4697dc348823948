"""What `python -m sync status` and `GET /api/pairs` report about a pair: one query, shared by both front doors."""

from __future__ import annotations

from typing import Any

from sync.app.runtime import Runtime


def pair_status(rt: Runtime, pair_id: str) -> dict[str, Any]:
    stores = rt.stores
    pair = stores.pairs.get(pair_id)
    state = stores.pair_state.get(pair_id)
    runs = stores.runs.recent(pair_id, limit=5)
    problems = [
        {"source_id": row.source_id, "status": row.status, "error": row.last_error, "last_op": row.last_op}
        for status in ("conflict", "failed")
        for row in stores.contacts.rows(pair_id, status=status)
    ]
    return {
        "pair": pair_id,
        "enabled": pair.enabled,
        "quarantined": state.quarantined,
        "quarantine_reason": state.quarantine_reason or None,
        "last_run": {"id": state.last_run_id, "at": state.last_run_at, "outcome": state.last_outcome},
        "has_delta_link": bool(state.delta_link),
        "contacts": dict(stores.contacts.status_counts(pair_id)),
        "queue": {"pending": stores.ops.approximate_count(), "poison": stores.poison.approximate_count()},
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
            for run in runs
        ],
        "problems": problems[:100],
    }
