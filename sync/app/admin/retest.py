"""The timer's look at pairs quarantined for their credentials: test again when due, lift when the test passes.

`retest_quarantined(rt)` is one call the timer makes before planning. For each such pair whose `retest_at` has
come, it runs the connection test (a few token requests and reads, never an op): a pass lifts the quarantine,
drops the process's cached credentials and Key Vault reads (the admin fixed something) and moves the pair's
parked ops back to the queue; a failure keeps the pair quarantined with the new diagnosis and the next time
on the back-off (5, 15, then every 60 minutes). Other pairs are not touched, and one pair's failed test never
stops another's (invariant 7).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime

from sync.app.admin.connection_test import ConnectionReport, check_connection
from sync.app.wiring.quarantine import move_parked_back
from sync.app.wiring.runtime import Runtime
from sync.contract.vocabulary import QuarantineKind
from sync.core.quarantine import next_retest, retest_due

log = logging.getLogger("ctcs.retest")


@dataclass
class Retest:
    pair_id: str
    lifted: bool
    report: ConnectionReport | None = None
    moved_back: int = 0
    error: str = ""


def lift_credentials_quarantine(rt: Runtime, pair_id: str) -> int:
    """The pair's connection test passed: release it, forget stale credentials, give its parked ops back."""
    rt.stores.pair_state.lift_credentials_quarantine(pair_id)  # a new epoch: failures from before it are stale
    rt.forget_connections(pair_id)
    moved = move_parked_back(rt, pair_ids={pair_id})
    log.warning("pair %s: connection test passed, quarantine lifted; %d parked op(s) back on the queue", pair_id, moved,
                extra={"pair_id": pair_id, "outcome": "released", "quarantine_kind": QuarantineKind.CREDENTIALS.value,
                       "parked": moved})
    return moved


def retest_quarantined(rt: Runtime, *, now: datetime | None = None) -> list[Retest]:
    """Test every pair quarantined for its credentials whose retest time has come; see the module docstring."""
    now = now or datetime.now(UTC)
    results = []
    for pair in rt.stores.pairs.list():
        state = rt.stores.pair_state.get(pair.id)
        if not state.credentials_quarantined:
            continue
        due = datetime.fromisoformat(state.retest_at) if state.retest_at else None
        if not retest_due(due, now):
            continue
        try:
            report = check_connection(rt, pair)
        except Exception as error:  # invariant 7: the next pair is still tested
            log.exception("pair %s: the connection test itself failed", pair.id)
            results.append(Retest(pair.id, False, error=f"{type(error).__name__}: {error}"))
            continue
        if report.credentials_ok:
            results.append(Retest(pair.id, True, report, lift_credentials_quarantine(rt, pair.id)))
            continue
        failed = state.failed_tests + 1
        retest_at = next_retest(failed, now)
        rt.stores.pair_state.schedule_retest(pair.id, reason=report.summary(), failed_tests=failed, retest_at=retest_at)
        log.info("pair %s: connection test failed again (%d); next test at %s", pair.id, failed, retest_at.isoformat(),
                 extra={"pair_id": pair.id, "outcome": "retest_failed", "failed_tests": failed})
        results.append(Retest(pair.id, False, report))
    move_parked_back(rt)  # parked a moment after another lift: not held back until the pair fails again
    return results
