"""A local stand-in for the Azure Functions host (which cannot run here): it drives `function_app` over Azurite.

    host = LocalHost()                      # settings from the environment, as the host reads its app settings
    host.fire_timer()                       # sync_timer with a real azure.functions TimerRequest, then the planner
                                            # queue (pair-runs) until it is empty, as the host would right after
    report = host.drain_queue()             # every queue trigger, as the host runs them, until the queues are empty
    reply = host.call_http("POST", "pairs/contoso-to-fabrikam/resync", {"full": "true"})
    reply.status, reply.json

What it copies from the host, and where the numbers come from:
- Bindings are read from the decorated functions themselves (`FunctionBuilder.build()`), and `%SETTING%` tokens
  in queue names are resolved from the environment, falling back to the defaults in `sync.settings`.
- `extensions.queues` in host.json: `batchSize` messages are received and run in parallel, and the next batch is
  fetched as soon as only `newBatchThreshold` of them are still running (so up to `batchSize + newBatchThreshold`
  run at once, as the host does); a message whose function raised is left to reappear after `visibilityTimeout`
  (tests pass a shorter `visibility_timeout`), and once it has been delivered `maxDequeueCount` times it is copied
  unchanged to `<queue>-poison` and deleted.
- Worker instances: `LocalHost(app_module=worker_instance())` drives a fresh copy of `function_app` with its own
  module state (its own `Runtime`: Exchange clients, pacer, caches), as a second instance of the app in Azure
  would be; several hosts draining the same queue at once are several instances.
  Messages are base64 (`messageEncoding`): they are decoded here exactly as the host does, into the bytes of
  `QueueMessage.get_body()`. The poison queue is drained through its own trigger the same way.
- Queues other than the ops queue and its poison queue (the planner's `pair-runs`) are drained the same way, first:
  what they do feeds the ops queue. `fire_timer` runs them right after the timer function, as the host would pick
  the timer's messages up within seconds; `run_planner=False` leaves them queued.
- HTTP requests are matched against each HTTP function's route template and methods; the function key is not
  checked (auth level FUNCTION is the host's business). `call_http` calls a route in-process; `listen(tls_files)`
  also serves the routes on a real loopback HTTPS listener (`https://127.0.0.1:PORT/api/...`), which is how the
  simulated Graph reaches the notification route (validation handshake, notifications); `close()` stops it.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import copy
import importlib
import importlib.util
import itertools
import json
import os
import re
import threading
import time
from collections import Counter
from collections.abc import Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType
from typing import Any

import azure.functions as func
from azure.core.exceptions import ResourceExistsError
from azure.functions.decorators.function_app import FunctionBuilder
from azure.functions.queue import QueueMessage
from azure.functions.timer import TimerRequest
from azure.storage.queue import QueueClient
from azure.storage.queue import QueueMessage as StorageMessage
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from sim.cloud import Listener
from sync.settings import setting
from sync.state.storage import shared_transport

HOST_JSON = Path(__file__).resolve().parent.parent / "host.json"
FUNCTION_APP = Path(__file__).resolve().parent.parent / "function_app.py"
MESSAGE_LEASE_SECONDS = 300  # how long a received message stays hidden while its function runs
POLL_SECONDS = 0.25
_instances = itertools.count(1)


def worker_instance() -> ModuleType:
    """A fresh copy of `function_app` (module `function_app_instance<N>`): what another instance of the Function
    App runs. It shares nothing with the others but the storage account and the tenants it calls."""
    name = f"function_app_instance{next(_instances)}"
    spec = importlib.util.spec_from_file_location(name, FUNCTION_APP)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _timespan_seconds(value: str) -> float:
    hours, minutes, seconds = value.split(":")
    return int(hours) * 3600 + int(minutes) * 60 + float(seconds)


@dataclass(frozen=True)
class QueueSettings:
    """host.json `extensions.queues`, with the host's defaults for what it leaves out."""

    batch_size: int = 16
    new_batch_threshold: int = 8
    max_dequeue_count: int = 5
    visibility_timeout: float = 0.0
    message_encoding: str = "base64"

    @classmethod
    def from_host_json(cls, path: Path = HOST_JSON) -> QueueSettings:
        queues = json.loads(path.read_text(encoding="utf-8")).get("extensions", {}).get("queues", {})
        return cls(
            batch_size=int(queues.get("batchSize", cls.batch_size)),
            new_batch_threshold=int(queues.get("newBatchThreshold", cls.new_batch_threshold)),
            max_dequeue_count=int(queues.get("maxDequeueCount", cls.max_dequeue_count)),
            visibility_timeout=_timespan_seconds(queues.get("visibilityTimeout", "00:00:00")),
            message_encoding=str(queues.get("messageEncoding", cls.message_encoding)),
        )


@dataclass
class HostReport:
    """What the driver did; `invocations` counts every call of a queue-triggered function, by function name."""

    timer_runs: int = 0
    invocations: Counter[str] = field(default_factory=Counter)
    planner_runs: int = 0  # a function of another queue (the planner) returned
    planner_failed: int = 0  # ... or raised
    completed: int = 0  # apply_contact_op returned: the message was deleted
    failed_attempts: int = 0  # apply_contact_op raised: the message reappears after visibilityTimeout
    dequeue_counts: Counter[int] = field(default_factory=Counter)  # dequeue_count seen by apply_contact_op
    poisoned: int = 0  # moved to <queue>-poison after maxDequeueCount deliveries
    poison_handled: int = 0  # the poison trigger returned
    poison_failed: int = 0  # the poison trigger raised
    http_calls: int = 0
    left_in_queue: int = 0  # messages still queued when drain_queue stopped (deadline)
    seconds: float = 0.0

    def since(self, before: HostReport) -> HostReport:
        """What happened after `before` (a copy of an earlier cumulative report)."""
        return HostReport(
            timer_runs=self.timer_runs - before.timer_runs, invocations=self.invocations - before.invocations,
            planner_runs=self.planner_runs - before.planner_runs, planner_failed=self.planner_failed - before.planner_failed,
            completed=self.completed - before.completed, failed_attempts=self.failed_attempts - before.failed_attempts,
            dequeue_counts=self.dequeue_counts - before.dequeue_counts, poisoned=self.poisoned - before.poisoned,
            poison_handled=self.poison_handled - before.poison_handled,
            poison_failed=self.poison_failed - before.poison_failed, http_calls=self.http_calls - before.http_calls,
            left_in_queue=self.left_in_queue, seconds=self.seconds - before.seconds,
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "timer_runs": self.timer_runs, "invocations": dict(self.invocations), "planner_runs": self.planner_runs,
            "planner_failed": self.planner_failed, "completed": self.completed,
            "failed_attempts": self.failed_attempts, "poisoned": self.poisoned, "poison_handled": self.poison_handled,
            "poison_failed": self.poison_failed, "http_calls": self.http_calls, "left_in_queue": self.left_in_queue,
            "seconds": round(self.seconds, 2),
        }


@dataclass(frozen=True)
class HttpReply:
    status: int
    body: bytes
    headers: Mapping[str, str]

    @property
    def json(self) -> Any:
        return json.loads(self.body) if self.body else None


@dataclass(frozen=True)
class _Route:
    builder: FunctionBuilder
    pattern: re.Pattern[str]
    methods: frozenset[str]


def _resolve(expression: str, environ: Mapping[str, str]) -> str:
    """`%NAME%` tokens as the host resolves them: from app settings (the environment), else the declared default."""

    def value(match: re.Match[str]) -> str:
        name = match.group(1)
        resolved = environ.get(name) or setting(name, environ)
        if not resolved:
            raise LookupError(f"binding expression %{name}% has no app setting")
        return resolved

    return re.sub(r"%([A-Za-z0-9_]+)%", value, expression)


class LocalHost:
    """Plays the Functions host's part for one `function_app` module; see the module docstring."""

    def __init__(
        self,
        *,
        app_module: ModuleType | None = None,
        host_json: Path = HOST_JSON,
        visibility_timeout: float | None = None,
        environ: Mapping[str, str] | None = None,
        message_lease_seconds: int = MESSAGE_LEASE_SECONDS,
    ) -> None:
        self.app = app_module if app_module is not None else importlib.import_module("function_app")
        self.message_lease_seconds = message_lease_seconds
        self.settings = QueueSettings.from_host_json(host_json)
        self.visibility_timeout = self.settings.visibility_timeout if visibility_timeout is None else visibility_timeout
        self.environ = os.environ if environ is None else environ
        self.report = HostReport()
        self._lock = threading.Lock()
        self._transport = shared_transport()
        self.timers: dict[str, FunctionBuilder] = {}
        self.queues: dict[str, tuple[FunctionBuilder, QueueClient]] = {}  # queue name → trigger, raw client
        self.routes: list[_Route] = []
        self._listeners: list[Listener] = []
        for builder in vars(self.app).values():
            if isinstance(builder, FunctionBuilder):
                self._index(builder)

    def _index(self, builder: FunctionBuilder) -> None:
        function = builder.build()
        trigger: Any = function.get_trigger()
        kind = trigger.get_binding_name()
        if kind == "timerTrigger":
            self.timers[function.get_function_name() or "timer"] = builder
        elif kind == "queueTrigger":
            name = _resolve(trigger.queue_name, self.environ)
            connection = self.environ.get(trigger.connection) or setting(trigger.connection, self.environ)
            if not connection:
                raise LookupError(f"queue trigger connection {trigger.connection} has no app setting")
            # Raw (we decode as the host does), on one connection pool sized for a batch's concurrent deliveries.
            client = QueueClient.from_connection_string(connection, name, transport=self._transport)
            self.queues[name] = (builder, client)
        elif kind == "httpTrigger":
            template = re.sub(r"\{(\w+)(?::[^}]*)?\}", r"(?P<\1>[^/]+)", trigger.route.strip("/"))
            methods = frozenset(str(getattr(m, "value", m)).upper() for m in trigger.methods or ("GET", "POST"))
            self.routes.append(_Route(builder, re.compile(f"^{template}$"), methods))

    # timer -------------------------------------------------------------------------------------------------------
    def fire_timer(self, name: str | None = None, *, past_due: bool = False, run_planner: bool = True,
                   deadline_seconds: float = 120.0) -> HostReport:
        """Run a timer function (the only one when `name` is None) as the schedule would, then (`run_planner`) the
        planner queue until it is empty. Returns what the planner did."""
        builder = self.timers[name] if name else next(iter(self.timers.values()))
        now = datetime.now(UTC)
        builder(TimerRequest(past_due=past_due, schedule_status={"Last": now.isoformat(), "Next": (now + timedelta(minutes=5)).isoformat()}))
        self.report.timer_runs += 1
        return self.run_planner(deadline_seconds=deadline_seconds) if run_planner else HostReport()

    def run_planner(self, *, deadline_seconds: float = 120.0, limit: int | None = None) -> HostReport:
        """Deliver the planner queue(s) until empty (a planner's `continue` messages included): the ops they queue
        stay for `drain_queue`. With `limit`, stop after that many invocations (one message at a time)."""
        return self._drain(self.planner_queues, deadline_seconds, limit=limit)

    # queues ------------------------------------------------------------------------------------------------------
    @property
    def ops_queue(self) -> str:
        """The queue whose `-poison` sibling also has a trigger: the ops queue."""
        return next(name for name in self.queues if f"{name}-poison" in self.queues)

    @property
    def planner_queues(self) -> list[str]:
        """Every other triggered queue (the planner's `pair-runs`): drained before the ops queue, which they feed."""
        ops = self.ops_queue
        return [name for name in self.queues if name not in (ops, f"{ops}-poison")]

    def drain_queue(self, *, deadline_seconds: float = 60.0) -> HostReport:
        """Deliver messages until every triggered queue is empty (the planner's, then the ops queue and its poison
        queue; deferred messages included), or the deadline passes. Returns what this call did; `self.report` keeps
        the totals."""
        ops = self.ops_queue
        return self._drain([*self.planner_queues, f"{ops}-poison", ops], deadline_seconds)

    def _drain(self, queues: list[str], deadline_seconds: float, *, limit: int | None = None) -> HostReport:
        before = copy.deepcopy(self.report)
        started = time.monotonic()
        ops = self.ops_queue
        delivered = 0
        workers = self.settings.batch_size + self.settings.new_batch_threshold
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="host-queue") as pool:
            running: set[Future[None]] = set()
            while time.monotonic() - started < deadline_seconds and (limit is None or delivered < limit):
                received = 0
                for queue in queues:
                    if queue != ops:  # the planner's and the poison queue: a batch at a time
                        received += self._batch(pool, queue, running, wait_all=True, size=1 if limit else None)
                    elif len(running) <= self.settings.new_batch_threshold:
                        received += self._batch(pool, queue, running, wait_all=False)
                delivered += received
                if running:
                    done, _ = wait(running, timeout=POLL_SECONDS, return_when=FIRST_COMPLETED)
                    running -= done
                    continue
                if received:
                    continue
                if all(self._count(name) == 0 for name in queues):
                    break
                time.sleep(POLL_SECONDS)  # invisible messages (deferred or failed) are still due
            for future in running:
                future.result()
        self.report.left_in_queue = sum(self._count(name) for name in queues)
        self.report.seconds += time.monotonic() - started
        return self.report.since(before)

    def _count(self, queue: str) -> int:
        return int(self.queues[queue][1].get_queue_properties().approximate_message_count or 0)

    def _batch(
        self, pool: ThreadPoolExecutor, queue: str, running: set[Future[None]], *, wait_all: bool,
        size: int | None = None,
    ) -> int:
        client = self.queues[queue][1]
        pages = client.receive_messages(
            messages_per_page=size or self.settings.batch_size, visibility_timeout=self.message_lease_seconds
        )
        messages = list(next(pages.by_page(), []))
        futures = [pool.submit(self._deliver, queue, message) for message in messages]
        if wait_all:
            for future in futures:
                future.result()
        else:
            running.update(futures)
        return len(messages)

    def _deliver(self, queue: str, message: StorageMessage) -> None:
        builder, client = self.queues[queue]
        name = builder.build().get_function_name() or queue
        is_poison_trigger = queue.endswith("-poison")
        is_ops = queue == self.ops_queue
        dequeue_count = int(message.dequeue_count or 1)
        if dequeue_count > self.settings.max_dequeue_count:  # a crash outlived its lease too often: poison unseen
            self._move_to_poison(queue, message)
            return
        with self._lock:
            self.report.invocations[name] += 1
            if is_ops:
                self.report.dequeue_counts[dequeue_count] += 1
        try:
            body = self._decode(str(message.content))
            builder(QueueMessage(  # type: ignore[no-untyped-call]
                id=message.id, body=body, dequeue_count=dequeue_count, pop_receipt=message.pop_receipt,
                insertion_time=message.inserted_on, expiration_time=message.expires_on,
            ))
        except Exception:
            with self._lock:
                if is_poison_trigger:
                    self.report.poison_failed += 1
                elif is_ops:
                    self.report.failed_attempts += 1
                else:
                    self.report.planner_failed += 1
            if dequeue_count >= self.settings.max_dequeue_count:
                self._move_to_poison(queue, message)
            else:
                client.update_message(message, visibility_timeout=int(self.visibility_timeout))
            return
        client.delete_message(message)
        with self._lock:
            if is_poison_trigger:
                self.report.poison_handled += 1
            elif is_ops:
                self.report.completed += 1
            else:
                self.report.planner_runs += 1

    def _decode(self, content: str) -> bytes:
        if self.settings.message_encoding.lower() != "base64":
            return content.encode("utf-8")
        try:
            return base64.b64decode(content, validate=True)
        except binascii.Error as error:
            raise ValueError("queue message is not valid base64 (host.json messageEncoding is base64)") from error

    def _move_to_poison(self, queue: str, message: StorageMessage) -> None:
        """As the host does: the same content, in `<queue>-poison` (created when missing), then delete."""
        _, client = self.queues[queue]
        target = self.queues.get(f"{queue}-poison", (None, None))[1] or QueueClient.from_connection_string(
            self._connection(), f"{queue}-poison"
        )
        with contextlib.suppress(ResourceExistsError):
            target.create_queue()
        target.send_message(message.content)
        client.delete_message(message)
        with self._lock:
            self.report.poisoned += 1

    def _connection(self) -> str:
        return self.environ.get("AzureWebJobsStorage") or str(setting("AzureWebJobsStorage", self.environ))

    # http --------------------------------------------------------------------------------------------------------
    def call_http(
        self,
        method: str,
        route: str,
        params: Mapping[str, str] | None = None,
        *,
        body: bytes = b"",
        headers: Mapping[str, str] | None = None,
    ) -> HttpReply:
        """Call the HTTP function whose route and method match (`route` with or without the `/api/` prefix)."""
        path = route.split("?", 1)[0].strip("/").removeprefix("api/")
        self.report.http_calls += 1
        matched = [(r, m) for r in self.routes if (m := r.pattern.match(path))]
        if not matched:
            return HttpReply(404, b"", {})
        allowed = [(r, m) for r, m in matched if method.upper() in r.methods]
        if not allowed:
            return HttpReply(405, b"", {})
        handler, match = allowed[0]
        request = func.HttpRequest(
            method.upper(), f"http://localhost:7071/api/{path}", headers=dict(headers or {}),
            params=dict(params or {}), route_params=match.groupdict(), body=body,
        )
        response = handler.builder(request)
        headers = {"Content-Type": f"{response.mimetype}; charset={response.charset}", **dict(response.headers)}
        return HttpReply(response.status_code, response.get_body(), headers)


    def listen(self, tls_files: tuple[str, str]) -> str:
        """Serve the HTTP routes over loopback HTTPS (certificate and key, e.g. `SimCloud.tls_files`, whose CA the
        simulated Graph trusts) as the host serves them at `https://<app>/api/...`; returns the base URL."""
        listener = Listener("functions-host", *tls_files)

        async def endpoint(request: Request) -> Response:
            body = await request.body()
            reply = await run_in_threadpool(
                self.call_http, request.method, request.path_params["path"], dict(request.query_params),
                body=body, headers=dict(request.headers),
            )
            return Response(reply.body, status_code=reply.status,
                            media_type=reply.headers.get("Content-Type", "application/octet-stream"))

        methods = ["GET", "POST", "PUT", "PATCH", "DELETE"]
        listener.start(Starlette(routes=[Route("/api/{path:path}", endpoint, methods=methods)]))
        listener.wait_started(timeout=10)
        self._listeners.append(listener)
        return listener.url

    def close(self) -> None:
        for listener in self._listeners:
            listener.stop()
        self._listeners.clear()
