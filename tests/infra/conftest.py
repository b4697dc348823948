"""Shared fixtures of the infra tests; makes `infracheck` and `sync` importable whatever pytest's import mode."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
for path in (HERE, HERE.parents[1]):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from sync.settings import SETTINGS  # noqa: E402


@pytest.fixture(scope="session")
def declared() -> dict[str, str | None]:
    """Every app setting ctcs reads, with its default (sync/settings.py)."""
    return {setting.name: setting.default for setting in SETTINGS}
