"""Plain-text tables and a progress line for the CLI (no colour codes, readable in any log).

Widths are counted in terminal columns (`wcwidth`), not characters, so names in CJK or with combining marks keep
their columns aligned.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from typing import TextIO

from wcwidth import wcswidth

MAX_CELL_COLUMNS = 80


def table(headers: Sequence[str], rows: Sequence[Sequence[object]], *, out: TextIO | None = None) -> None:
    """Print rows under headers with aligned columns; numbers are right-aligned."""
    out = out or sys.stdout
    cells = [[_cell(value) for value in row] for row in rows]
    widths = [max([columns(header), *(columns(row[i]) for row in cells)]) for i, header in enumerate(headers)]
    numeric = [all(isinstance(row[i], int | float) for row in rows) and bool(rows) for i in range(len(headers))]

    def line(values: Sequence[str]) -> str:
        parts = [_pad(value, w, right=num) for value, w, num in zip(values, widths, numeric, strict=True)]
        return "  ".join(parts).rstrip()

    print(line(list(headers)), file=out)
    print("  ".join("-" * w for w in widths), file=out)
    for row in cells:
        print(line(row), file=out)


def columns(text: str) -> int:
    """Terminal columns `text` takes (a CJK character takes two); unprintable characters count as one."""
    width = wcswidth(text)
    return width if width >= 0 else len(text)


def _pad(text: str, width: int, *, right: bool) -> str:
    fill = " " * max(0, width - columns(text))
    return fill + text if right else text + fill


def _cell(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.1f}"
    text = "".join(ch if ch.isprintable() else " " for ch in str(value))
    if columns(text) <= MAX_CELL_COLUMNS:
        return text
    while columns(text) > MAX_CELL_COLUMNS - 1:
        text = text[:-1]
    return text + "…"


class Progress:
    """`label  [#####.....]  120/500  detail`, redrawn in place on a terminal, every few seconds in a log."""

    def __init__(self, label: str, total: int, *, out: TextIO | None = None, interval: float = 5.0) -> None:
        self.label, self.total, self.done = label, total, 0
        self.out = out or sys.stderr
        self.tty = self.out.isatty()
        self.interval = 0.1 if self.tty else interval
        self._last = 0.0

    def advance(self, count: int = 1, detail: str = "") -> None:
        self.done += count
        now = time.monotonic()
        if now - self._last >= self.interval or self.done >= self.total:
            self._last = now
            self._draw(detail)

    def _draw(self, detail: str) -> None:
        total = max(self.total, self.done, 1)
        filled = int(30 * self.done / total)
        text = f"{self.label}  [{'#' * filled}{'.' * (30 - filled)}]  {self.done}/{total}  {detail}".rstrip()
        if self.tty:
            print("\r" + text, end="", file=self.out, flush=True)
        else:
            print(text, file=self.out, flush=True)

    def finish(self) -> None:
        if self.tty:
            print(file=self.out)


class Ticker:
    """`label  detail` for work whose total is unknown (a round's pages), redrawn in place on a terminal, every few
    seconds in a log."""

    def __init__(self, label: str, *, out: TextIO | None = None, interval: float = 5.0) -> None:
        self.label = label
        self.out = out or sys.stderr
        self.tty = self.out.isatty()
        self.interval = 0.1 if self.tty else interval
        self._last = 0.0
        self._drawn = False

    def update(self, detail: str, *, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last < self.interval:
            return
        self._last = now
        self._drawn = True
        text = f"{self.label}  {detail}"
        if self.tty:
            print("\r" + text.ljust(79), end="", file=self.out, flush=True)
        else:
            print(text, file=self.out, flush=True)

    def finish(self) -> None:
        if self.tty and self._drawn:
            print(file=self.out)
