"""A pair whose credentials fail is quarantined (kind `credentials`), not retried op by op.

Whoever meets the failure first (a planning run reading the source, the worker applying an op, `pairs test`)
records it once: the reason is the diagnosis (cause and fix in an admin's words) of the side that failed, and the
timer tests the connection again on a back-off (`sync.core.quarantine`). While quarantined, the pair plans nothing
and its ops wait untried in the `-parked` queue; `sync.app.admin.retest` lifts the quarantine when a test passes and
moves them back. The safety gate's quarantine (kind `gate`) is separate: only an admin releases that one.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from sync.app.wiring.runtime import Runtime
from sync.contract.pairs import TenantPair
from sync.contract.vocabulary import QuarantineKind, RunOutcome
from sync.core.diagnosis import Side, Subject, diagnose
from sync.core.quarantine import next_retest
from sync.errors import CredentialUnusable, SourceAuthError, TargetAuthError
from sync.state.queues import move_ops

log = logging.getLogger("ctcs.quarantine")


def side_of(error: BaseException, default: Side = Side.TARGET) -> Side:
    """Which sign-in an error is about."""
    if isinstance(error, SourceAuthError):
        return Side.SOURCE
    if isinstance(error, CredentialUnusable):
        text = str(error)
        for side in (Side.SOURCE_EXCHANGE, Side.SOURCE, Side.TARGET):
            if text.startswith(f"{side.value}.credential"):
                return side
    if isinstance(error, TargetAuthError):
        return default
    return default


def subject_of(pair: TenantPair, side: Side) -> Subject:
    tenant = pair.target if side is Side.TARGET else pair.source
    return Subject(side, tenant.tenant_id, tenant.client_id, tenant.endpoints.authority)


def credentials_reason(pair: TenantPair, error: BaseException, side: Side) -> str:
    """The quarantine reason: the side, the cause and the fix, then what the service said."""
    diagnosis = diagnose(subject_of(pair, side), str(error), status=getattr(error, "status", None))
    said = str(error).strip().splitlines()[0][:400] if str(error).strip() else type(error).__name__
    return f"{side.value}: {diagnosis.text()}. It said: {said}"


def quarantine_for_credentials(rt: Runtime, pair: TenantPair, error: BaseException, *, side: Side | None = None,
                               now: datetime | None = None) -> bool:
    """Quarantine the pair for its credentials; True (and one log line, the one alerts count) only for the caller
    that started the quarantine."""
    side = side or side_of(error)
    reason = credentials_reason(pair, error, side)
    started = rt.stores.pair_state.quarantine_credentials(pair.id, reason, retest_at=next_retest(1, now or datetime.now(UTC)))
    rt.look_again(pair.id)  # this worker sees it at once
    if started:
        log.error(
            "pair %s quarantined: %s", pair.id, reason,
            extra={"pair_id": pair.id, "outcome": RunOutcome.QUARANTINED.value,
                   "quarantine_kind": QuarantineKind.CREDENTIALS.value, "error_class": type(error).__name__,
                   "side": side.value, "reason": reason},
        )
    return started


def move_parked_back(rt: Runtime, *, pair_ids: set[str] | None = None) -> int:
    """Put parked ops back on the ops queue: of the pairs named, or of every pair not quarantined for its
    credentials (ops parked by a worker that saw a quarantine a moment before it was lifted)."""
    if pair_ids is None:
        if rt.stores.parked.approximate_count() == 0:
            return 0
        quarantined = {pair.id for pair in rt.stores.pairs.list()
                       if rt.stores.pair_state.get(pair.id).credentials_quarantined}

        def wanted(pair_id: str | None) -> bool:
            return pair_id is not None and pair_id not in quarantined
    else:
        def wanted(pair_id: str | None) -> bool:
            return pair_id in pair_ids

    return move_ops(rt.stores.parked, rt.stores.ops, wanted=wanted)
