"""Two pages' writes at once, checkpoints strictly in page order, nothing checkpointed after a failed page."""

from __future__ import annotations

import threading
import time

import pytest

from sync.app.planner.page_writer import PageWriter


def test_checkpoints_follow_page_order_even_when_a_later_page_writes_faster() -> None:
    writer = PageWriter()
    done: list[str] = []
    lock = threading.Lock()

    def writes(page: int, seconds: float) -> None:
        time.sleep(seconds)
        with lock:
            done.append(f"wrote {page}")

    def checkpoint(page: int) -> None:
        with lock:
            done.append(f"checkpoint {page}")

    for page, seconds in enumerate([0.3, 0.0, 0.2, 0.0]):
        writer.submit(lambda p=page, s=seconds: writes(p, s), lambda p=page: checkpoint(p))  # type: ignore[misc]
    writer.flush()
    writer.close()
    checkpoints = [entry for entry in done if entry.startswith("checkpoint")]
    assert checkpoints == ["checkpoint 0", "checkpoint 1", "checkpoint 2", "checkpoint 3"]
    assert done.index("wrote 1") < done.index("wrote 0"), "page 1 wrote while page 0 was still writing"
    for page in range(4):
        assert done.index(f"wrote {page}") < done.index(f"checkpoint {page}")


def test_nothing_after_a_failed_page_is_checkpointed() -> None:
    writer = PageWriter()
    checkpoints: list[int] = []

    def fail() -> None:
        time.sleep(0.1)
        raise ConnectionError("queue unreachable")

    writer.submit(lambda: None, lambda: checkpoints.append(0))
    writer.submit(fail, lambda: checkpoints.append(1))
    with pytest.raises(ConnectionError):
        writer.submit(lambda: None, lambda: checkpoints.append(2))
        writer.submit(lambda: None, lambda: checkpoints.append(3))
        writer.flush()
    writer.close()
    assert checkpoints == [0]
