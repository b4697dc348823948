"""Plain-text tables and a progress line for the CLI (no colour codes, readable in any log)."""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from typing import TextIO


def table(headers: Sequence[str], rows: Sequence[Sequence[object]], *, out: TextIO | None = None) -> None:
    """Print rows under headers with aligned columns; numbers are right-aligned."""
    out = out or sys.stdout
    cells = [[_cell(value) for value in row] for row in rows]
    widths = [max([len(header), *(len(row[i]) for row in cells)]) for i, header in enumerate(headers)]
    numeric = [all(isinstance(row[i], int | float) for row in rows) and bool(rows) for i in range(len(headers))]

    def line(values: Sequence[str]) -> str:
        parts = [value.rjust(w) if num else value.ljust(w) for value, w, num in zip(values, widths, numeric, strict=True)]
        return "  ".join(parts).rstrip()

    print(line(list(headers)), file=out)
    print("  ".join("-" * w for w in widths), file=out)
    for row in cells:
        print(line(row), file=out)


def _cell(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.1f}"
    text = str(value).replace("\n", " ")
    return text if len(text) <= 80 else text[:79] + "…"


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
