"""A few threads, shared by the whole process, for storage requests that can go out together (a page's queue
messages, its ContactState transactions). The storage SDK clients are thread-safe and pool their connections, so
several requests in flight cost no new connection; one shared pool keeps the thread count bounded however many
stores and runs a process has."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")
THREADS = 8  # within the SDK's connection pool (10 per host), so connections are reused, never opened per request

_lock = threading.Lock()
_pool: ThreadPoolExecutor | None = None


def _shared() -> ThreadPoolExecutor:
    global _pool
    with _lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=THREADS, thread_name_prefix="ctcs-storage")
        return _pool


def run_all(calls: Sequence[Callable[[], T]]) -> list[T]:
    """Run every call, several at once; wait for all of them, then raise the first error if any failed. The calls
    must not themselves wait on this pool."""
    if len(calls) <= 1:
        return [call() for call in calls]
    futures: list[Future[T]] = [_shared().submit(call) for call in calls]
    errors = [future.exception() for future in futures]  # waits for every one before judging any
    first = next((error for error in errors if error is not None), None)
    if first is not None:
        raise first
    return [future.result() for future in futures]
