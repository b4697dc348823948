"""One Functions host instance for the planning benchmark, in a process of its own (so its memory is its own and it
can be killed like a crashed host): it drives `function_app` with `sim.host.LocalHost` over Azurite and the
simulated cloud the benchmark started, and writes what it measured as JSON.

    python benchmarks/host_process.py --report FILE [--timer] [--planner] [--message-lease 300] [--deadline 3600]

It works with today's code and with the code before fan-out (`--timer` alone then plans inline, as its timer did):
the benchmark puts either tree first on PYTHONPATH. What it times it times from outside the code: it wraps
`OpQueue.send_all`, `ContactStateStore.mark_queued` and (when there is one) `RoundPageStore.save`.
"""

from __future__ import annotations

import argparse
import inspect
import json
import resource
import threading
import time
from collections.abc import Callable
from typing import Any

STATS: dict[str, float] = {"send_seconds": 0.0, "ops_sent": 0, "row_seconds": 0.0, "rows_written": 0}
_lock = threading.Lock()


def _timed(owner: Any, name: str, seconds: str, count: str, counted: Callable[..., int]) -> None:
    original = getattr(owner, name)

    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        result = original(self, *args, **kwargs)
        with _lock:
            STATS[seconds] += time.perf_counter() - started
            STATS[count] += counted(result, *args)
        return result

    setattr(owner, name, wrapper)


def instrument() -> None:
    from sync.state.contacts import ContactStateStore
    from sync.state.queues import OpQueue

    # send_all returns how many ops it sent; mark_queued how many rows it marked.
    _timed(OpQueue, "send_all", "send_seconds", "ops_sent", lambda sent, *args: int(sent))
    _timed(ContactStateStore, "mark_queued", "row_seconds", "rows_written", lambda marked, *args: int(marked))
    try:
        from sync.state.round_pages import RoundPageStore
    except ImportError:  # the code before streamed rounds
        return
    _timed(RoundPageStore, "save", "row_seconds", "rows_written", lambda _, *args: 1)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--report", required=True)
    parser.add_argument("--timer", action="store_true", help="fire the timer first")
    parser.add_argument("--planner", action="store_true", help="deliver the planner queue until it is empty")
    parser.add_argument("--message-lease", type=int, default=300)
    parser.add_argument("--deadline", type=float, default=3600.0)
    args = parser.parse_args()
    instrument()
    from sim.host import LocalHost

    options: dict[str, Any] = {}
    if "message_lease_seconds" in inspect.signature(LocalHost).parameters:
        options["message_lease_seconds"] = args.message_lease
    host = LocalHost(**options)
    started = time.monotonic()
    if args.timer:
        if "run_planner" in inspect.signature(host.fire_timer).parameters:
            host.fire_timer(run_planner=False)
        else:
            host.fire_timer()  # before fan-out: the timer plans every pair itself
    timer_seconds = time.monotonic() - started
    if args.planner and hasattr(host, "run_planner"):
        host.run_planner(deadline_seconds=args.deadline)
    report = {
        **STATS,
        "timer_seconds": timer_seconds,
        "seconds": time.monotonic() - started,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "planner_runs": getattr(host.report, "planner_runs", 0),
    }
    with open(args.report, "w", encoding="utf-8") as out:
        json.dump(report, out)


if __name__ == "__main__":
    main()
