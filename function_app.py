"""ctcs on Azure Functions (Python v2 model): thin triggers that translate into calls of `sync`.

    sync_timer          timer %SYNC_SCHEDULE%          ask for a planning run of every due pair (pair-runs queue)
    plan_pair_run       queue %CTCS_PAIR_RUNS_QUEUE%   plan one pair's round, or as much as the budget allows
    apply_contact_op    queue %CTCS_OPS_QUEUE%         apply one op to Exchange Online (split a batch of ops first)
    record_poisoned_op  queue %CTCS_OPS_QUEUE%-poison  keep an op that failed every delivery, for replay-poison
    pairs_resync        POST /api/pairs/{id}/resync    plan one pair now (?full=true, ?allow_deletes=true)    operate
    pairs_reconcile     POST /api/pairs/{id}/reconcile ask for a reconcile round (?allow_deletes=true)        operate
    pairs_test          POST /api/pairs/{id}/test      test the pair's connections                           operate
    pairs_sync_user     POST /api/pairs/{id}/users/{user}/sync   provision one user now, each step shown     operate
    pairs_list          GET  /api/pairs                definitions (secret references only) and status       read
    pairs_show          GET  /api/pairs/{id}           one pair                                              read
    graph_notifications POST /api/notifications/{pair}/{token}   Graph's notifications (anonymous: see below)

Retries, throttling and the poison queue are sized in host.json (see docs/host-settings.md). Everything here can
be driven without the host: `sim/host.py` plays its part over Azurite.

Imports are lazy: the host imports this module on every cold start, and Graph gives the notification route 3 s, so
indexing loads only azure.functions; each function imports what it needs on its first call (the notification route
only sync.api.notifications and, until this process has a Runtime, the lean intake of sync.app.notifications.lean;
see docs/notifications.md, "A cold instance").
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING

import azure.functions as func
from azure.functions.queue import QueueMessage  # part of azure.functions: the worker reads the annotations

if TYPE_CHECKING:
    from sync.api.handlers import ApiResponse
    from sync.api.keys import Role
    from sync.app.notifications.lean import IntakeRuntime
    from sync.app.wiring.runtime import Runtime
app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)
log = logging.getLogger("ctcs.functions")

_runtime: list[Runtime] = []  # one per worker process, made on first use (not at import: indexing needs no settings)
_runtime_lock = threading.Lock()
_lean: list[IntakeRuntime] = []  # the notification route's, while the process has no Runtime


def runtime() -> Runtime:
    with _runtime_lock:
        if not _runtime:
            from sync.app.wiring.runtime import Runtime
            _runtime.append(Runtime.from_settings())
            _lean.clear()
        return _runtime[0]


def intake() -> IntakeRuntime:
    """The notification route's: the process's Runtime when it has one, else the lean one (opens 1 table, 1 queue)."""
    with _runtime_lock:
        if _runtime:
            return _runtime[0]
        if not _lean:
            from sync.app.notifications.lean import LeanIntake
            _lean.append(LeanIntake.from_settings())
        return _lean[0]


@app.timer_trigger(arg_name="timer", schedule="%SYNC_SCHEDULE%", run_on_startup=False, use_monitor=True)
def sync_timer(timer: func.TimerRequest) -> None:
    """Ask for a planning run of every due pair: one message each on the pair-runs queue, so pairs plan in parallel
    and a slow pair never delays another. The timer never retries, so it does no more than that."""
    from sync.app.admin.retest import retest_quarantined
    from sync.app.planner.fanout import request_runs
    from sync.app.planner.subscriptions import keep_subscriptions
    from sync.contract.vocabulary import RunTrigger
    if timer.past_due:
        log.warning("timer is past due; asking for planning runs now")
    retest_quarantined(runtime())  # pairs quarantined for their credentials: test again when due, lift on a pass
    requested = request_runs(runtime(), trigger=RunTrigger.TIMER)
    log.info("timer asked for %d planning run(s)", sum(1 for r in requested if r.queued),
             extra={"requested": [r.pair_id for r in requested if r.queued],
                    "not_due": {r.pair_id: r.why_not for r in requested if not r.queued}})
    # After the requests, so planning never waits for Graph: renew subscriptions due, make missing ones, drop those
    # of disabled pairs (or all of them when change notifications are off).
    kept = [m for m in keep_subscriptions(runtime()) if m.action != "kept"]
    if kept:
        log.info("timer maintained %d change-notification subscription(s)", len(kept),
                 extra={"subscriptions": [f"{m.pair_id}/{m.resource}: {m.action}" for m in kept]})


@app.queue_trigger(arg_name="message", queue_name="%CTCS_PAIR_RUNS_QUEUE%", connection="AzureWebJobsStorage")
def plan_pair_run(message: QueueMessage) -> None:
    """Plan one pair: its round in progress from the checkpoint, or a new round, page by page, for at most
    CTCS_PLANNER_BUDGET_SECONDS; the rest of a long round is asked for with a message on the same queue. The pair's
    errors are recorded in its run, never raised (invariant 7)."""
    from sync.api.handlers import log_run
    from sync.app.planner.fanout import run_requested
    result = run_requested(runtime(), message.get_body())
    if result is not None:
        log_run(result)


@app.queue_trigger(arg_name="message", queue_name="%CTCS_OPS_QUEUE%", connection="AzureWebJobsStorage")
def apply_contact_op(message: QueueMessage) -> None:
    """Apply one op. Not an op: straight to the poison queue. Throttled: sent again with a Retry-After delay and
    this delivery succeeds, so throttling never spends an attempt (host retry policies do not apply to queue
    triggers, and a failed delivery always waits the fixed visibilityTimeout). Transient: raised, so the host
    retries after visibilityTimeout and poisons after maxDequeueCount. Conflicts and rejections are recorded."""
    from sync.app.worker.delivery import deliver
    deliver(runtime(), message.get_body(), dequeue_count=message.dequeue_count or 1)


@app.queue_trigger(arg_name="message", queue_name="%CTCS_OPS_QUEUE%-poison", connection="AzureWebJobsStorage")
def record_poisoned_op(message: QueueMessage) -> None:
    """An op failed every delivery: `keep_poisoned` records the failure with the cause its last delivery noted on
    the user's row (nothing for a message that is not an op), then copies the message to the `-failed` holding
    queue (replayed by `python -m sync replay-poison`) before the host deletes it. On its own last delivery it never
    raises, so nothing is moved on to `-poison-poison`."""
    from sync.app.worker.delivery import keep_poisoned
    keep_poisoned(runtime(), message.get_body(), dequeue_count=message.dequeue_count or 1)


def _http(response: ApiResponse) -> func.HttpResponse:
    return func.HttpResponse(response.json(), status_code=response.status, mimetype="application/json")


def _role(req: func.HttpRequest) -> Role:  # the least key a route takes: last column above (sync.api.keys)
    from sync.api.keys import caller_role
    return caller_role(dict(req.headers), dict(req.params))


@app.route(route="pairs/{id}/resync", methods=[func.HttpMethod.POST], auth_level=func.AuthLevel.FUNCTION)
def pairs_resync(req: func.HttpRequest) -> func.HttpResponse:
    from sync.api import handlers as http_api
    pair_id, params = req.route_params.get("id", ""), dict(req.params)
    return _http(http_api.respond(lambda: http_api.resync(runtime(), pair_id, params, role=_role(req))))


@app.route(route="pairs/{id}/reconcile", methods=[func.HttpMethod.POST], auth_level=func.AuthLevel.FUNCTION)
def pairs_reconcile(req: func.HttpRequest) -> func.HttpResponse:
    from sync.api import handlers as http_api
    pair_id, params = req.route_params.get("id", ""), dict(req.params)
    return _http(http_api.respond(lambda: http_api.reconcile(runtime(), pair_id, params, role=_role(req))))


@app.route(route="pairs/{id}/test", methods=[func.HttpMethod.POST], auth_level=func.AuthLevel.FUNCTION)
def pairs_test(req: func.HttpRequest) -> func.HttpResponse:
    from sync.api import handlers as http_api
    pair_id, params = req.route_params.get("id", ""), dict(req.params)
    return _http(http_api.respond(lambda: http_api.test_pair(runtime(), pair_id, params, role=_role(req))))


@app.route(route="pairs/{id}/users/{user}/sync", methods=[func.HttpMethod.POST], auth_level=func.AuthLevel.FUNCTION)
def pairs_sync_user(req: func.HttpRequest) -> func.HttpResponse:
    from sync.api import handlers as http_api
    pair_id, user, params = req.route_params.get("id", ""), req.route_params.get("user", ""), dict(req.params)
    return _http(http_api.respond(lambda: http_api.sync_user(runtime(), pair_id, user, params, role=_role(req))))


@app.route(route="pairs", methods=[func.HttpMethod.GET], auth_level=func.AuthLevel.FUNCTION)
def pairs_list(req: func.HttpRequest) -> func.HttpResponse:
    from sync.api import handlers as http_api
    params = dict(req.params)
    return _http(http_api.respond(lambda: http_api.list_pairs(runtime(), params, role=_role(req))))


@app.route(route="pairs/{id}", methods=[func.HttpMethod.GET], auth_level=func.AuthLevel.FUNCTION)
def pairs_show(req: func.HttpRequest) -> func.HttpResponse:
    from sync.api import handlers as http_api
    pair_id, params = req.route_params.get("id", ""), dict(req.params)
    return _http(http_api.respond(lambda: http_api.show_pair(runtime(), pair_id, params, role=_role(req))))


@app.route(route="notifications/{pair}/{token}", methods=[func.HttpMethod.POST], auth_level=func.AuthLevel.ANONYMOUS)
def graph_notifications(req: func.HttpRequest) -> func.HttpResponse:
    """Graph's change notifications and lifecycle events, and its validation handshake. No function key: Graph
    posts to the URL it was given; its path token is checked first (no storage for a stranger), then the declared size
    (before the body is read), then each item's clientState and tenantId (sync.api.notifications)."""
    from sync.api import notifications as graph_api  # this route's whole import path (module docstring)
    address = (req.route_params.get("pair", ""), req.route_params.get("token", ""))
    answer = graph_api.receive(intake(), address, dict(req.params), dict(req.headers), req.get_body)
    return func.HttpResponse(answer.text, status_code=answer.status, mimetype=answer.mimetype)
