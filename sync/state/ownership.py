"""Who owns a contact beyond ContactState: contacts an admin took over (`released`) and contacts `python -m sync
adopt` took over from the target (`adopted`), in the PairState table.

A row is keyed by the target tenant (PartitionKey `ownership~<target tenant id>`) and the source tenant and source
object id (RowKey `<source tenant id>~<source object id>`): the contact's anchor, never the pair id. So it survives a
lost ContactState table and a pair's remove and add, and a pair planning the same two tenants again under another
id reads the same marks. A released contact is never adopted or written again until an admin hands it back
(`python -m sync handback`), which removes its mark; an adopted contact's leaver is hidden, not deleted
(`deletion.adopted`).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from azure.core.exceptions import ResourceNotFoundError
from azure.data.tables import TableClient, TableEntity, UpdateMode

from sync.contract.pairs import TenantPair
from sync.contract.summaries import StateSummary
from sync.contract.vocabulary import ContactStatus, ObjectKind
from sync.state.entities import iso, now_utc, quote, text

PARTITION_PREFIX = "ownership~"


class MarkKind(StrEnum):
    RELEASED = "released"  # an admin took the contact over (cleared or overwrote the anchor)
    ADOPTED = "adopted"  # `python -m sync adopt` took an existing target contact over for a source user


@dataclass(frozen=True)
class Mark:
    source_id: str
    kind: MarkKind
    pair_id: str = ""  # the pair that recorded it (the key does not depend on it)
    guid: str = ""  # the contact in the target
    name: str = ""
    address: str = ""  # its ExternalEmailAddress as ctcs last knew it
    why: str = ""  # in admin words
    at: str = ""


def _partition(pair: TenantPair) -> str:
    return PARTITION_PREFIX + pair.target.tenant_id.lower()


def _key(pair: TenantPair, source_id: str) -> str:
    return f"{pair.source.tenant_id.lower()}~{source_id.lower()}"


def _mark(entity: TableEntity) -> Mark:
    return Mark(str(entity.get("source_id") or entity["RowKey"].split("~", 1)[-1]), MarkKind(entity["kind"]),
                str(entity.get("pair_id") or ""), str(entity.get("guid") or ""), str(entity.get("name") or ""),
                str(entity.get("address") or ""), str(entity.get("why") or ""), str(entity.get("at") or ""))


class OwnershipStore:
    def __init__(self, table: TableClient) -> None:
        self.table = table

    def marks(self, pair: TenantPair) -> dict[str, Mark]:
        """Every mark of the pair's two tenants, by source id (one query of the target tenant's partition)."""
        prefix = f"{pair.source.tenant_id.lower()}~"
        query = f"PartitionKey eq '{quote(_partition(pair))}' and RowKey gt '{quote(prefix)}' and RowKey lt '{quote(prefix)}\x7f'"
        return {mark.source_id: mark for mark in map(_mark, self.table.query_entities(query))}

    def get(self, pair: TenantPair, source_id: str) -> Mark | None:
        try:
            return _mark(self.table.get_entity(_partition(pair), _key(pair, source_id)))
        except ResourceNotFoundError:
            return None

    def record(self, pair: TenantPair, mark: Mark) -> None:
        self.table.upsert_entity(
            {"PartitionKey": _partition(pair), "RowKey": _key(pair, mark.source_id), "source_id": mark.source_id,
             "kind": mark.kind.value, "pair_id": pair.id, "guid": mark.guid, "name": text(mark.name, 256),
             "address": text(mark.address, 512), "why": text(mark.why, 1000), "at": mark.at or iso(now_utc())},
            mode=UpdateMode.REPLACE,
        )

    def released(self, pair: TenantPair, source_id: str, *, guid: str, why: str, name: str = "",
                 address: str = "") -> None:
        """ctcs learned the contact was taken over: record it (again: the latest word stays)."""
        self.record(pair, Mark(source_id, MarkKind.RELEASED, pair.id, guid, name, address, why))

    def forget(self, pair: TenantPair, source_id: str) -> None:
        try:
            self.table.delete_entity(_partition(pair), _key(pair, source_id))
        except ResourceNotFoundError:
            return


def with_released(state: dict[str, StateSummary], marks: dict[str, Mark]) -> dict[str, StateSummary]:
    """The rows planning reads, with every released mark as a `released` row: a lost or re-added pair's state then
    plans no create for it (and no removal), as the lost row would have."""
    for source_id, mark in marks.items():
        if mark.kind is MarkKind.RELEASED:
            row = state.get(source_id)
            state[source_id] = StateSummary(ContactStatus.RELEASED, row.hash if row else "", row.version if row else 0,
                                            mark.guid, kind=row.kind if row else ObjectKind.USER)
    return state


def adopted_ids(marks: dict[str, Mark]) -> frozenset[str]:
    return frozenset(source_id for source_id, mark in marks.items() if mark.kind is MarkKind.ADOPTED)
