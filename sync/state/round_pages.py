"""What each page of a planning round saw, for the round's last step (in the PairState table, partition
`round|<pair id>`, RowKey `<round id>|<page>`).

The last page of a round needs to know the pages before it: which users they showed (a full round removes the
contacts of users it never showed), whose removals they held back (removals wait for the end of the round, so the
safety gate counts the whole round) and whom they gave an op (so a returning hidden user is not purged). One row per
page holds that, written after the page's ops are queued and before its checkpoint: one write per page, instead of
marking every ContactState row the page saw (the worker REPLACEs those rows when it applies an op, which would erase
such a mark and make a present user look gone).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field

from azure.core.exceptions import ResourceNotFoundError
from azure.data.tables import TableClient

from sync.state.entities import quote

PART_CHARS = 30_000  # characters per string property (64 KiB as UTF-16, with room)


@dataclass(frozen=True)
class PageRecord:
    page: int
    seen: frozenset[str]  # every object id on the page (users and removals)
    leaving: Mapping[str, str] = field(default_factory=dict)  # removals held back: id -> reason
    placed: frozenset[str] = frozenset()  # ids that got a create, update or restore on this page


@dataclass
class RoundSoFar:
    """The pages before the last one, folded: last occurrence wins, so a user removed on one page and back on a
    later one is not leaving."""

    seen: set[str] = field(default_factory=set)
    leaving: dict[str, str] = field(default_factory=dict)
    placed: set[str] = field(default_factory=set)

    def add(self, record: PageRecord) -> None:
        for source_id in record.seen:
            self.leaving.pop(source_id, None)
        self.seen |= record.seen
        self.leaving.update(record.leaving)
        self.placed |= record.placed


def _partition(pair_id: str) -> str:
    return f"round|{pair_id}"


def _cut(name: str, text: str) -> dict[str, str]:
    parts = [text[i : i + PART_CHARS] for i in range(0, len(text), PART_CHARS)] or [""]
    return {f"{name}{n}": part for n, part in enumerate(parts)}


def _joined(entity: Mapping[str, object], name: str) -> str:
    parts = sorted((int(key[len(name):]), str(value)) for key, value in entity.items()
                   if key.startswith(name) and key[len(name):].isdigit())
    return "".join(value for _, value in parts)


def _ids(text: str) -> frozenset[str]:
    return frozenset(part for part in text.split(",") if part)


class RoundPageStore:
    def __init__(self, table: TableClient) -> None:
        self.table = table

    def save(self, pair_id: str, round_id: str, record: PageRecord) -> None:
        entity: dict[str, object] = {"PartitionKey": _partition(pair_id), "RowKey": f"{round_id}|{record.page:06d}"}
        entity.update(_cut("s", ",".join(sorted(record.seen))))
        entity.update(_cut("l", json.dumps(dict(record.leaving), separators=(",", ":"), sort_keys=True)))
        entity.update(_cut("p", ",".join(sorted(record.placed))))
        self.table.upsert_entity(entity)

    def load(self, pair_id: str, round_id: str, *, before_page: int) -> RoundSoFar:
        """The round's pages 0 .. before_page - 1, folded in page order."""
        folded = RoundSoFar()
        query = (f"PartitionKey eq '{quote(_partition(pair_id))}' and RowKey ge '{quote(round_id)}|' "
                 f"and RowKey lt '{quote(round_id)}|~'")
        records = []
        for entity in self.table.query_entities(query):
            page = int(str(entity["RowKey"]).rsplit("|", 1)[1])
            if page < before_page:
                leaving = json.loads(_joined(entity, "l") or "{}")
                records.append(PageRecord(page, _ids(_joined(entity, "s")), leaving, _ids(_joined(entity, "p"))))
        for record in sorted(records, key=lambda r: r.page):
            folded.add(record)
        return folded

    def forget(self, pair_id: str, *, keep: Collection[str] = ()) -> int:
        """Delete the pair's page records, except those of the rounds in `keep`."""
        removed = 0
        rows = self.table.query_entities(f"PartitionKey eq '{quote(_partition(pair_id))}'", select=["RowKey"])
        doomed = [str(row["RowKey"]) for row in rows if str(row["RowKey"]).split("|", 1)[0] not in keep]
        for start in range(0, len(doomed), 100):
            chunk = doomed[start : start + 100]
            try:
                self.table.submit_transaction(
                    [("delete", {"PartitionKey": _partition(pair_id), "RowKey": key}) for key in chunk]
                )
            except Exception:  # a transaction fails whole (one row gone already): fall back to one by one
                for key in chunk:
                    with contextlib.suppress(ResourceNotFoundError):
                        self.table.delete_entity(_partition(pair_id), key)
            removed += len(chunk)
        return removed


def record_of(page: int, seen: Iterable[str], leaving: Mapping[str, str], placed: Iterable[str]) -> PageRecord:
    return PageRecord(page, frozenset(seen), dict(leaving), frozenset(placed))
