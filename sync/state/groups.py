"""Table GroupMembership: per pair (PartitionKey), the membership graph of its tracked groups and the groups deltaLinks.

Rows:
- `pending|<round id>`: the graph a planning round in progress works with, saved at its start and made `meta` by
  `promote` once the round's last page is queued (a round may span several invocations; until then `meta` stays).
- `meta`: the scope groups it was built for, the groups-delta batches (up to 50 group ids and their deltaLink each),
  and, per tracked group, the generation of its member rows; written LAST by `save`, so it switches atomically from
  one complete set of rows to the next (a crash mid-save leaves stray rows that the next save removes).
- `g|<group id>|<generation>|<n>`: one group's direct users and nested groups as JSON, cut into properties and rows
  that fit Table Storage's limits (64 KiB per property, 1 MiB per entity). Only groups that changed are rewritten.
"""

from __future__ import annotations

import contextlib
import json
import secrets
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from azure.core.exceptions import ResourceNotFoundError
from azure.data.tables import TableClient, UpdateMode

from sync.core.group_graph import GroupGraph, GroupNode
from sync.state.entities import iso, now_utc, quote

META = "meta"
PART_CHARS = 30_000  # characters per string property (64 KiB as UTF-16, with room)
PARTS_PER_ROW = 12  # 720 KB of UTF-16 per entity, under the 1 MiB limit


@dataclass
class DeltaBatch:
    """Up to 50 group ids read by one `groups/delta` request, and that round's deltaLink."""

    group_ids: tuple[str, ...]
    link: str


@dataclass
class GroupScopeState:
    roots: tuple[str, ...]
    graph: GroupGraph = field(default_factory=GroupGraph)
    batches: list[DeltaBatch] = field(default_factory=list)
    generations: dict[str, str] = field(default_factory=dict)
    rebuilt_at: str = ""


def _parts(text: str) -> list[str]:
    return [text[i : i + PART_CHARS] for i in range(0, len(text), PART_CHARS)] or [""]


def _joined(entity: Mapping[str, Any], prefix: str = "p") -> str:
    """The text cut into properties `<prefix>0`, `<prefix>1`, ... of an entity."""
    parts = [(int(k[len(prefix):]), v) for k, v in entity.items() if k.startswith(prefix) and k[len(prefix):].isdigit()]
    return "".join(value for _, value in sorted(parts))


def _member_key(row_key: str) -> tuple[str, str, str]:
    """(group id, generation, row index) of a `g|...` RowKey; empty strings for any other row."""
    parts = row_key.split("|")
    if len(parts) != 4 or parts[0] != "g":
        return "", "", ""
    return parts[1], parts[2], parts[3]


def _cut(text: str, prefix: str = "p") -> dict[str, str]:
    return {f"{prefix}{n}": part for n, part in enumerate(_parts(text))}


class GroupStore:
    """`table` is a callable so the table is only created for pairs that scope by group."""

    def __init__(self, table: Callable[[], TableClient]) -> None:
        self._open = table
        self._table: TableClient | None = None

    @property
    def table(self) -> TableClient:
        if self._table is None:
            self._table = self._open()
        return self._table

    def load(self, pair_id: str, *, meta_key: str = META) -> GroupScopeState | None:
        rows = list(self.table.query_entities(f"PartitionKey eq '{quote(pair_id)}'"))
        meta = next((row for row in rows if row["RowKey"] == meta_key), None)
        if meta is None:
            return None
        generations: dict[str, str] = json.loads(_joined(meta, "p") or "{}")
        state = GroupScopeState(
            roots=tuple(json.loads(meta.get("roots", "[]"))),
            batches=[DeltaBatch(tuple(ids), link) for ids, link in json.loads(_joined(meta, "b") or "[]")],
            generations=generations,
            rebuilt_at=meta.get("rebuilt_at", ""),
        )
        chunks: dict[str, list[tuple[int, str]]] = {}
        for row in rows:
            group_id, generation, index = _member_key(row["RowKey"])
            if group_id and generations.get(group_id) == generation:
                text = _joined(row, "p")
                chunks.setdefault(group_id, []).append((int(index), text))
        for group_id in generations:
            record = json.loads("".join(text for _, text in sorted(chunks.get(group_id, []))) or "{}")
            state.graph.nodes[group_id] = GroupNode(set(record.get("u", [])), set(record.get("g", [])), record.get("n", ""))
        return state

    def save(self, pair_id: str, state: GroupScopeState, *, changed: Iterable[str] | None = None,
             meta_key: str = META) -> None:
        """Write the groups in `changed` (every group when None), then the meta row (`meta_key`), then, for the
        current `meta`, drop stale rows (a pending graph keeps them: `meta` still needs them)."""
        rewrite = set(state.graph.nodes) if changed is None else set(changed) & set(state.graph.nodes)
        generation = secrets.token_hex(4)
        for group_id in sorted(rewrite):
            node = state.graph.nodes[group_id]
            record = json.dumps({"n": node.name, "u": sorted(node.users), "g": sorted(node.groups)}, separators=(",", ":"))
            parts = _parts(record)
            for index in range(0, len(parts), PARTS_PER_ROW):
                entity: dict[str, Any] = {"PartitionKey": pair_id, "RowKey": f"g|{group_id}|{generation}|{index // PARTS_PER_ROW}"}
                entity.update({f"p{n}": part for n, part in enumerate(parts[index : index + PARTS_PER_ROW])})
                self.table.upsert_entity(entity, mode=UpdateMode.REPLACE)
            state.generations[group_id] = generation
        state.generations = {gid: gen for gid, gen in state.generations.items() if gid in state.graph.nodes}
        meta: dict[str, Any] = {
            "PartitionKey": pair_id,
            "RowKey": meta_key,
            "roots": json.dumps(list(state.roots)),
            "rebuilt_at": state.rebuilt_at or iso(now_utc()),
            **_cut(json.dumps([[list(b.group_ids), b.link] for b in state.batches], separators=(",", ":")), "b"),
            **_cut(json.dumps(state.generations, separators=(",", ":")), "p"),
        }
        self.table.upsert_entity(meta, mode=UpdateMode.REPLACE)
        if rewrite and meta_key == META:
            self._drop_stale(pair_id, state.generations)

    def promote(self, pair_id: str, pending_key: str) -> bool:
        """Make a pending graph the current one: its meta row becomes `meta` (one write: the switch), then rows
        neither uses any more go. False when there is no such pending graph."""
        try:
            pending = self.table.get_entity(pair_id, pending_key)
        except ResourceNotFoundError:
            return False
        meta = {key: value for key, value in pending.items()}
        meta.update({"PartitionKey": pair_id, "RowKey": META})
        self.table.upsert_entity(meta, mode=UpdateMode.REPLACE)
        with contextlib.suppress(ResourceNotFoundError):
            self.table.delete_entity(pair_id, pending_key)
        self._drop_stale(pair_id, json.loads(_joined(meta, "p") or "{}"))
        for row in self.table.query_entities(f"PartitionKey eq '{quote(pair_id)}' and RowKey ge 'pending|' "
                                             f"and RowKey lt 'pending}}'", select=["RowKey"]):
            with contextlib.suppress(ResourceNotFoundError):
                self.table.delete_entity(pair_id, row["RowKey"])  # pending graphs of rounds given up
        return True

    def _drop_stale(self, pair_id: str, generations: dict[str, str]) -> None:
        query = f"PartitionKey eq '{quote(pair_id)}' and RowKey ge 'g|' and RowKey lt 'g}}'"
        for row in self.table.query_entities(query, select=["RowKey"]):
            group_id, generation, _ = _member_key(row["RowKey"])
            if generations.get(group_id) != generation:
                with contextlib.suppress(ResourceNotFoundError):
                    self.table.delete_entity(pair_id, row["RowKey"])

    def forget(self, pair_id: str) -> None:
        for row in self.table.query_entities(f"PartitionKey eq '{quote(pair_id)}'", select=["RowKey"]):
            with contextlib.suppress(ResourceNotFoundError):
                self.table.delete_entity(pair_id, row["RowKey"])
