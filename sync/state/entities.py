"""Helpers for Table Storage entities: Int64 values, timestamps, inverted keys."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from azure.data.tables import EdmType, EntityProperty

MAX_TEXT = 30_000  # a string property holds at most 64 KiB (32K UTF-16 characters)


def int64(value: int) -> EntityProperty:
    return EntityProperty(value, EdmType.INT64)


def as_int(value: Any, default: int = 0) -> int:
    if isinstance(value, EntityProperty):
        value = value.value
    return int(value) if value is not None else default


def now_utc() -> datetime:
    return datetime.now(UTC)


def iso(moment: datetime | None) -> str:
    return moment.isoformat(timespec="seconds") if moment else ""


def text(value: str, limit: int = MAX_TEXT) -> str:
    return value if len(value) <= limit else value[: limit - 1] + "…"


def inverted_key(moment: datetime) -> str:
    """A RowKey that sorts newest first."""
    return f"{10**19 - int(moment.timestamp() * 1_000_000):019d}"


def quote(value: str) -> str:
    """A value inside a single-quoted OData filter literal."""
    return value.replace("'", "''")
