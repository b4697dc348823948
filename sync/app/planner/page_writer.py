"""Writing pages two at a time, checkpoints strictly in order.

A page's writes (mark its creates, send its ops, record what it saw) take Azure Storage a while; while they run, the
next page is already planned and its writes begun, so storage keeps up with Graph. What must stay in order stays in
order: a page's checkpoint is saved only after its own writes and the checkpoint of the page before it, so a saved
checkpoint always means "every page before it is on the queue". A page whose writes ran ahead of a checkpoint that
was never saved (a crash) is planned again on resume, with the same version (sync.core.plan.SendLedger).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

DEPTH = 2  # pages whose writes may be under way at once


class PageWriter:
    def __init__(self, depth: int = DEPTH) -> None:
        self._depth = depth
        self._pool = ThreadPoolExecutor(max_workers=depth, thread_name_prefix="ctcs-page")
        self._pending: deque[Future[None]] = deque()
        self._last: Future[None] | None = None

    def submit(self, writes: Callable[[], None], checkpoint: Callable[[], None]) -> None:
        """Start a page's writes; its checkpoint follows them and the previous page's checkpoint. Waits while
        `depth` pages are under way; raises the error of a page that failed (nothing after it is checkpointed)."""
        while len(self._pending) >= self._depth:
            self._pending.popleft().result()
        before = self._last

        def page() -> None:
            writes()
            if before is not None:
                before.result()  # raises if the page before failed: then this one is not checkpointed either
            checkpoint()

        self._last = self._pool.submit(page)
        self._pending.append(self._last)

    def flush(self) -> None:
        """Wait for every page under way; raise the first failure."""
        try:
            while self._pending:
                self._pending.popleft().result()
        finally:
            self._last = None

    def close(self) -> None:
        """Wait for what is under way (even after a failure elsewhere: a page half written is no harm, but a
        thread still writing after its run has ended would be), then stop the threads."""
        for future in self._pending:
            future.exception()
        self._pending.clear()
        self._pool.shutdown(wait=True)
