"""The HTTP API as plain request → response functions over a `Runtime`; `function_app` only translates.

Routes (auth level FUNCTION, JSON in and out, every error as `{"error": "..."}` with a 4xx/5xx status; the key a
request presents decides its role, sync.api.keys: `read` for the GETs, `operate` for the POSTs, `dangerous` for
`allow_deletes=true`; 401 for a key that is none of them, 403 for a lesser one):

    POST /api/pairs/{id}/resync[?full=true][&allow_deletes=true]   plan the pair now; ops go to the queue (a long
                                                                    round goes on in the planner: 202 `continued`)
    POST /api/pairs/{id}/reconcile[?allow_deletes=true]             ask the planner for a reconcile round (202)
    POST /api/pairs/{id}/test[?deep=true]                           test the pair's connections (200 / 424)
    POST /api/pairs/{id}/users/{user}/sync                          provision one user now, each step shown
    GET  /api/pairs                                                 every pair: definition and status
    GET  /api/pairs/{id}                                            one pair: definition and status

(`POST /api/notifications/{pair}/{token}`, where Graph posts change notifications, is anonymous and answers text:
sync.api.notifications.)

Definitions carry secret references (`kv:`, `env:`, `file:`) only, never values. The per-run log line that
the timer and resync both write (`log_run`) lives here too, so both triggers log runs the same way.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from sync.api.keys import KeyRefused, Role, require
from sync.app.admin.connection_test import check_connection
from sync.app.admin.deep_test import deep_check
from sync.app.admin.provision import Result, provision_user
from sync.app.admin.retest import lift_credentials_quarantine
from sync.app.admin.status import pair_status, queue_depths
from sync.app.planner.rounds import Invocation
from sync.app.planner.run import RunResult, run_pair
from sync.app.wiring.runtime import Runtime
from sync.contract.pair_runs import PairRunRequest, RunKind
from sync.contract.vocabulary import RunOutcome, RunTrigger
from sync.errors import CtcsError, PairNotFound
from sync.state.entities import iso, now_utc

log = logging.getLogger("ctcs.http")

PAIR_ID = re.compile(r"^[a-z0-9-]{3,40}$")  # as TenantPair.id
FUNCTION_KEY_PARAM = "code"  # the host reads the function key from ?code=; it is never ours to reject
_TRUE, _FALSE = ("true", "1", "yes"), ("false", "0", "no", "")
# Run outcome → HTTP status of a resync.
RESYNC_STATUS = {
    RunOutcome.PLANNED: 202, RunOutcome.CONTINUED: 202, RunOutcome.NO_CHANGES: 200, RunOutcome.QUARANTINED: 409,
    RunOutcome.LEASE_HELD: 409, RunOutcome.FAILED: 500,
}
# How long a resync plans before it answers: the rest of a longer round goes on in the planner (pair-runs queue).
# Well under the 230 s an HTTP request may take behind Azure's front end.
RESYNC_INLINE_SECONDS = 60


@dataclass(frozen=True)
class ApiResponse:
    status: int
    body: Any  # JSON-serialisable

    def json(self) -> str:
        return json.dumps(self.body, ensure_ascii=False, sort_keys=True)


class BadRequest(Exception):
    """The request itself is wrong (parameters, pair id format): 400."""


def error(status: int, message: str, **details: Any) -> ApiResponse:
    return ApiResponse(status, {"error": message, **details})


def respond(handler: Callable[[], ApiResponse]) -> ApiResponse:
    """Run a handler and turn what it raises into a JSON error: never a stack trace, never a secret (invariant 6)."""
    try:
        return handler()
    except KeyRefused as refused:
        return error(refused.status, str(refused))
    except BadRequest as bad:
        return error(400, str(bad))
    except PairNotFound as missing:
        return error(404, str(missing))
    except CtcsError as failed:  # ctcs messages name settings and fields, never values
        log.error("request failed: %s", failed)
        return error(500, str(failed))
    except Exception as unexpected:
        log.exception("request failed unexpectedly")
        return error(500, f"internal error ({type(unexpected).__name__}); see the function's log")


def flag(params: Mapping[str, str], name: str) -> bool:
    raw = params.get(name, "").strip().lower()
    if raw in _TRUE:
        return True
    if raw in _FALSE:
        return False
    raise BadRequest(f"query parameter {name!r} must be true or false, not {params[name]!r}")


def check_params(params: Mapping[str, str], allowed: tuple[str, ...] = ()) -> None:
    unknown = sorted(set(params) - {*allowed, FUNCTION_KEY_PARAM})
    if unknown:
        expected = ", ".join(allowed) or "none"
        raise BadRequest(f"unknown query parameter(s): {', '.join(unknown)} (expected: {expected})")


def check_pair_id(pair_id: str) -> str:
    if not PAIR_ID.match(pair_id):
        raise BadRequest(f"pair id {pair_id!r} is not valid: 3 to 40 lower-case letters, digits and -")
    return pair_id


def resync(rt: Runtime, pair_id: str, params: Mapping[str, str], *, role: Role) -> ApiResponse:
    """POST /api/pairs/{id}/resync: plan the pair now (`full`: every user; `allow_deletes`: pass a quarantine once)."""
    require(role, Role.OPERATE, "resync")
    check_params(params, ("full", "allow_deletes"))
    full, allow_deletes = flag(params, "full"), flag(params, "allow_deletes")
    if allow_deletes:
        require(role, Role.DANGEROUS, "resync with allow_deletes=true")
    pair = rt.stores.pairs.get(check_pair_id(pair_id))
    state = rt.stores.pair_state.get(pair.id)
    if state.credentials_quarantined:
        return error(
            409, f"pair {pair.id} is quarantined for its credentials: {state.quarantine_reason}",
            outcome=RunOutcome.QUARANTINED, quarantine_reason=state.quarantine_reason, quarantine_kind="credentials",
            hint=f"fix the credentials, then POST /api/pairs/{pair.id}/test (the timer also tests again on its own)",
        )
    if state.quarantined and not allow_deletes:
        # Checked before a full round is requested: a quarantined pair keeps its deltaLink until an admin decides.
        return error(
            409, f"pair {pair.id} is quarantined: {state.quarantine_reason}", outcome=RunOutcome.QUARANTINED,
            quarantine_reason=state.quarantine_reason,
            hint="review the plan (python -m sync plan --pair ID), then resync with allow_deletes=true",
        )
    if full:
        rt.stores.pair_state.request_full_round(pair.id)  # so the next run is full even if this one finds the lease held
    budget = min(RESYNC_INLINE_SECONDS, rt.tuning.planner_budget_seconds)
    result = run_pair(rt, pair.id, trigger=RunTrigger.HTTP, full=full, allow_deletes=allow_deletes,
                      invocation=Invocation(budget, keep_ops=False))
    log_run(result)
    run = result.run
    body = {
        "pair": pair.id,
        "run_id": run.run_id,
        "round_id": run.round_id,
        "outcome": run.outcome,
        "full": run.full,
        "pages": run.pages,
        "counts": run.counts,
        "queued": result.queued if run.outcome in (RunOutcome.PLANNED, RunOutcome.CONTINUED) else 0,
        "quarantine_released": allow_deletes and state.quarantined and run.outcome in (RunOutcome.PLANNED, RunOutcome.NO_CHANGES),
    }
    status = RESYNC_STATUS.get(run.outcome, 500)
    if status >= 400:
        reason = result.quarantine_reason or run.error or run.outcome
        return error(status, f"pair {pair.id}: {run.outcome}: {reason}", **body)
    return ApiResponse(status, body)


def reconcile(rt: Runtime, pair_id: str, params: Mapping[str, str], *, role: Role) -> ApiResponse:
    """POST /api/pairs/{id}/reconcile: a `reconcile` request on the planner queue, so the round gets the pair's lease,
    quarantine check and budget like any other (202; status shows its outcome under `last_reconcile`)."""
    require(role, Role.OPERATE, "reconcile")
    check_params(params, ("allow_deletes",))
    allow_deletes = flag(params, "allow_deletes")
    if allow_deletes:
        require(role, Role.DANGEROUS, "reconcile with allow_deletes=true")
    pair = rt.stores.pairs.get(check_pair_id(pair_id))
    state = rt.stores.pair_state.get(pair.id)
    if state.quarantined and not (allow_deletes and state.gate_quarantined):
        return error(409, f"pair {pair.id} is quarantined: {state.quarantine_reason}", outcome=RunOutcome.QUARANTINED,
                     quarantine_reason=state.quarantine_reason, quarantine_kind=state.kind.value if state.kind else None)
    requested_at = iso(now_utc())
    rt.stores.pair_runs.send(PairRunRequest(pair.id, RunKind.RECONCILE, RunTrigger.HTTP, allow_deletes=allow_deletes,
                                            requested_at=requested_at, generation=pair.generation))
    return ApiResponse(202, {"pair": pair.id, "requested": "reconcile", "requested_at": requested_at,
                             "hint": f"GET /api/pairs/{pair.id} shows it under status.last_reconcile when it ran"})


def test_pair(rt: Runtime, pair_id: str, params: Mapping[str, str], *, role: Role) -> ApiResponse:
    """POST /api/pairs/{id}/test: every connection check; 200 when all pass, 424 (a tenant side failed) otherwise.
    `deep=true` adds the read-only probes of every assumption (`assumptions` in the body; a failed one is a 424 too).
    A pass lifts a credentials quarantine at once."""
    require(role, Role.OPERATE, "a connection test")
    check_params(params, ("deep",))
    pair = rt.stores.pairs.get(check_pair_id(pair_id))
    if flag(params, "deep"):
        deep = deep_check(rt, pair)
        report, body, ok = deep.connection, deep.as_json(), deep.ok
    else:
        report = check_connection(rt, pair)
        body, ok = report.as_json(), report.ok
    lifted = report.credentials_ok and rt.stores.pair_state.get(pair.id).credentials_quarantined
    if lifted:
        lift_credentials_quarantine(rt, pair.id)
    return ApiResponse(200 if ok else 424, {**body, "quarantine_lifted": bool(lifted)})


# Provisioning result → HTTP status.
PROVISION_STATUS = {Result.NOT_FOUND: 404, Result.QUARANTINED: 409, Result.FAILED: 502}


def sync_user(rt: Runtime, pair_id: str, user: str, params: Mapping[str, str], *, role: Role) -> ApiResponse:
    """POST /api/pairs/{id}/users/{user}/sync: read, scope, plan and apply one user now; the steps in the body."""
    require(role, Role.OPERATE, "provisioning a user")
    check_params(params)
    if not user.strip() or len(user) > 320:
        raise BadRequest("user must be an object id, a user principal name or a mail address")
    done = provision_user(rt, check_pair_id(pair_id), user)
    status = PROVISION_STATUS.get(done.result, 200 if done.ok else 409)
    return ApiResponse(status, done.as_json())


def describe_pair(rt: Runtime, pair_id: str) -> dict[str, Any]:
    pair = rt.stores.pairs.get(pair_id)
    return {"id": pair.id, "definition": json.loads(pair.to_json()), "status": pair_status(rt, pair_id)}


def list_pairs(rt: Runtime, params: Mapping[str, str], *, role: Role) -> ApiResponse:
    """GET /api/pairs: every pair, and the shared queues once (their depths cover all pairs)."""
    require(role, Role.READ, "listing pairs")
    check_params(params)
    pairs = [describe_pair(rt, pair.id) for pair in rt.stores.pairs.list()]
    return ApiResponse(200, {"pairs": pairs, "queues": queue_depths(rt)})


def show_pair(rt: Runtime, pair_id: str, params: Mapping[str, str], *, role: Role) -> ApiResponse:
    """GET /api/pairs/{id}: the pair, and the shared queues."""
    require(role, Role.READ, "reading a pair")
    check_params(params)
    return ApiResponse(200, {**describe_pair(rt, check_pair_id(pair_id)), "queues": queue_depths(rt)})


def log_run(result: RunResult) -> None:
    """One line per planning run, its fields as `extra` (customDimensions in Application Insights)."""
    run = result.run
    level = logging.INFO if run.outcome.healthy else logging.WARNING
    log.log(
        level,
        "run %s of pair %s (%s): %s",
        run.run_id, run.pair_id, run.trigger, run.outcome,
        extra={
            "pair_id": run.pair_id, "run_id": run.run_id, "trigger": run.trigger, "outcome": run.outcome,
            "full": run.full, "counts": run.counts, "duration_ms": round(run.seconds * 1000),
            "error": run.error or None, "round_id": run.round_id or None, "pages": run.pages,
        },
    )
