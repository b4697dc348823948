"""A pair whose credentials fail is quarantined (kind `credentials`), not retried op by op.

Whoever meets the failure first (a planning run reading the source, the worker applying an op, `pairs test`)
records it once: the reason is the diagnosis (cause and fix in an admin's words) of the side that failed, and the
timer tests the connection again on a back-off (`sync.core.quarantine`). While quarantined, the pair plans nothing
and its ops wait untried in the `-parked` queue; `sync.app.admin.retest` lifts the quarantine when a test passes and
moves them back. The safety gate's quarantine (kind `gate`) is separate: only an admin releases that one.

A lift stays lifted: each lift counts one more `credentials_epoch` of the pair, and a failure carries the epoch its
attempt began under (`attempted_under`: the worker's cached target client was built under it). A failure from before
the lift (an op that was already under way with the old certificate) quarantines nothing: `keep_parked` sends its op
back to the queue, where the worker's next attempt opens the fixed credential.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from sync.app.wiring.runtime import Runtime
from sync.contract.pairs import TenantPair
from sync.contract.vocabulary import QuarantineKind, RunOutcome
from sync.core.diagnosis import Side, Subject, diagnose
from sync.core.quarantine import next_retest
from sync.errors import CredentialUnusable, PairNotFound, SourceAuthError, TargetAuthError
from sync.state.queues import move_ops

log = logging.getLogger("ctcs.quarantine")

_EPOCH_ATTRIBUTE = "ctcs_credentials_epoch"


def attempted_under(error: BaseException, epoch: int) -> None:
    """Note on a failure the credentials epoch its attempt began under (see the module docstring)."""
    if not hasattr(error, _EPOCH_ATTRIBUTE):
        setattr(error, _EPOCH_ATTRIBUTE, epoch)


def attempt_epoch(error: BaseException) -> int | None:
    epoch = getattr(error, _EPOCH_ATTRIBUTE, None)
    return epoch if isinstance(epoch, int) else None


def side_of(error: BaseException, default: Side = Side.TARGET) -> Side:
    """Which sign-in an error is about."""
    if isinstance(error, SourceAuthError):
        return Side.SOURCE
    if isinstance(error, CredentialUnusable):
        text = str(error)
        for side in (Side.SOURCE_EXCHANGE, Side.SOURCE, Side.TARGET):
            if text.startswith((f"{side.value}.credential", f"{side.value}.cloud")):
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
    epoch = attempt_epoch(error)
    started = rt.stores.pair_state.quarantine_credentials(pair.id, reason, retest_at=next_retest(1, now or datetime.now(UTC)),
                                                          epoch=epoch)
    rt.look_again(pair.id)  # this worker sees it at once
    if not started and epoch is not None and rt.credentials_epoch(pair.id) > epoch:
        log.warning("pair %s: a credentials failure from before its quarantine was lifted quarantines nothing: %s",
                    pair.id, reason, extra={"pair_id": pair.id, "outcome": "stale_failure", "side": side.value})
        return False
    if started:
        log.error(
            "pair %s quarantined: %s", pair.id, reason,
            extra={"pair_id": pair.id, "outcome": RunOutcome.QUARANTINED.value,
                   "quarantine_kind": QuarantineKind.CREDENTIALS.value, "error_class": type(error).__name__,
                   "side": side.value, "reason": reason},
        )
    return started


def keep_parked(rt: Runtime, pair_id: str, error: BaseException, *, new_failure: bool) -> bool:
    """Where an op goes whose pair's credentials failed (`new_failure`: this op met the failure; else the pair was
    seen quarantined): True to `-parked`; False back to the ops queue, because the quarantine is lifted by now or
    the failure began before the lift. The quarantine is read afresh, so no op is parked behind a lifted one."""
    try:
        pair = rt.pair(pair_id)
    except PairNotFound:
        return True  # kept: what happens to it is decided when it is tried again
    if new_failure:
        quarantine_for_credentials(rt, pair, error)
    rt.look_again(pair_id)
    return bool(rt.credentials_quarantine(pair_id))


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
