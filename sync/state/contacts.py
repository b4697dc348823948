"""Table ContactState: one row per source user of a pair — what was applied, at which version, and how it went.

A worker claims a row (ETag-guarded) before it touches Exchange and commits it afterwards with the claim's
ETag, so two ops for one user never interleave: the second waits (is retried) until the first has committed,
and an op older than the committed version is dropped (invariant 3).
"""

from __future__ import annotations

import functools
import json
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from azure.core import MatchConditions
from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError
from azure.data.tables import TableClient, TableEntity, UpdateMode

from sync.contract.ops import ContactOp
from sync.contract.summaries import StateSummary
from sync.contract.vocabulary import ContactStatus, ObjectKind
from sync.state.entities import as_int, int64, iso, now_utc, quote, text
from sync.state.parallel import run_all

SUMMARY_COLUMNS = ["RowKey", "status", "hash", "version", "guid", "hidden_at", "manager_id", "manager_set",
                   "queued_round", "queued_page", "kind"]
NOTES_SUFFIX = "~delivery"  # partition of the delivery notes beside a pair's rows
POISONED_OP_SUFFIX = ":poisoned"  # last_op of a row whose op ended in the poison queue
TRANSACTION_SIZE = 100  # entities per Table Storage batch (same partition)


@dataclass
class ContactRow:
    pair_id: str
    source_id: str
    status: ContactStatus | None = None  # None: no op has committed for this user yet
    hash: str = ""
    version: int = 0
    guid: str = ""
    applied: dict[str, Any] = field(default_factory=dict)
    last_error: str = ""
    hidden_at: str = ""
    manager_id: str = ""  # the source id of the user's manager, as the last applied op planned it
    manager_set: bool = False  # the applied contact's Manager names the manager's contact
    last_op: str = ""
    last_run_id: str = ""
    updated_at: str = ""
    claim_version: int = 0
    claim_until: str = ""
    repaired_at: str = ""  # when a reconcile round last repaired this user's contact or row
    repair: str = ""  # ... and what it repaired, in admin words
    etag: str | None = None  # None: the row does not exist yet
    kind: ObjectKind = ObjectKind.USER  # column `kind`, written for groups only (a row without one is a user's)

    def claimed_by_other(self, version: int, now: datetime) -> bool:
        return bool(
            self.claim_version
            and self.claim_version != version
            and self.claim_until
            and datetime.fromisoformat(self.claim_until) > now
        )


class ClaimLost(Exception):
    """The row changed between read and write: re-read and decide again."""


@dataclass(frozen=True)
class RowUpdate:
    """What an op's outcome writes into its user's row (`ContactStateStore.commit`)."""

    status: ContactStatus | None  # None: the row still has no outcome (a fix-up found nothing to fix)
    version: int
    hash: str
    guid: str
    applied: Mapping[str, Any] | None  # the contact as applied; None or {} when there is none
    error: str = ""
    hidden_at: str = ""
    manager_id: str = ""  # the source id of the user's manager, as planned
    manager_set: bool = False  # the applied contact's Manager names the manager's contact
    kind: ObjectKind = ObjectKind.USER


def _json_column(value: Mapping[str, Any]) -> str:
    """A contact as a row's `applied` column: compact JSON, cut to what a string property holds."""
    return text(json.dumps(value, ensure_ascii=False, separators=(",", ":")))


@dataclass(frozen=True)
class Correction:
    """What a reconcile corrects in one row, named by what it found: made only by the constructors below, which turn
    domain values into the row's columns; `ContactStateStore.correct` merges it into a row the reconcile read,
    `add_corrected` writes rows that did not exist. Every correction says when it was made (`updated_at`,
    `repaired_at`) and what it repaired, in admin words (`repair`), so status can tell it."""

    columns: Mapping[str, Any]

    @classmethod
    def drift_set_back(cls, applied: Mapping[str, Any], *, shown_again: bool, repair: str, at: str) -> Correction:
        """The contact was changed by hand: what the target holds now counts as applied and the hash is cleared, so
        the round sends only what differs from the source. `shown_again`: a staged delete shown again by hand now
        counts as a shown contact (status `ok`)."""
        columns = {"updated_at": at, "applied": _json_column(applied), "hash": "", "repaired_at": at, "repair": repair}
        if shown_again:
            columns["status"] = ContactStatus.OK.value
        return cls(columns)

    @classmethod
    def deleted_by_hand(cls, *, repair: str, at: str) -> Correction:
        """The contact is gone from the target: a tombstone (no Guid, nothing applied, no hash), so the round
        creates it again."""
        return cls({"updated_at": at, "status": ContactStatus.DELETED.value, "guid": "", "applied": "", "hash": "",
                    "repaired_at": at, "repair": repair})

    @classmethod
    def released(cls, why: str, *, run_id: str, at: str) -> Correction:
        """The contact lost this pair's anchor (an admin took it over): `released`, never written again; `why` is
        both its last error and the repair told."""
        return cls({"updated_at": at, "status": ContactStatus.RELEASED.value, "last_error": why, "repaired_at": at,
                    "repair": why, "last_op": "reconcile:released", "last_run_id": run_id})

    @classmethod
    def handed_back(cls, *, at: str) -> Correction:
        """An admin handed a released contact back (`python -m sync handback`): a tombstone, so the next round's
        create finds the contact by its anchor again and sets every value from the source."""
        return cls({"updated_at": at, "status": ContactStatus.DELETED.value, "guid": "", "applied": "", "hash": "",
                    "last_error": "", "repaired_at": at, "repair": "handed back by an admin; managed again",
                    "last_op": "handback"})

    @classmethod
    def adopted(cls, *, at: str) -> Correction:
        """`python -m sync adopt` wrote this pair's anchor on an existing contact: a tombstone, so the next round's
        create finds the contact by its anchor and sets every value from the source."""
        return cls({"updated_at": at, "status": ContactStatus.DELETED.value, "guid": "", "applied": "", "hash": "",
                    "last_error": "", "repaired_at": at, "repair": "adopted by an admin; managed from now on",
                    "last_op": "adopt"})

    @classmethod
    def rebuilt(cls, *, guid: str, applied: Mapping[str, Any], hash: str, hidden: bool, repair: str,
                at: str) -> Correction:
        """A row rebuilt from the target's contact `guid` (lost, or naming another contact): `applied` is what the
        contact holds, `hash` its hash; `hidden`: hidden by a staged delete (status `hidden`, since `at`)."""
        status = ContactStatus.HIDDEN if hidden else ContactStatus.OK
        return cls({"updated_at": at, "status": status.value, "guid": guid, "applied": _json_column(applied),
                    "hash": hash, "hidden_at": at if hidden else "", "last_error": "", "repaired_at": at,
                    "last_op": "reconcile:rebuilt", "repair": repair})


def _kind_column(kind: ObjectKind) -> dict[str, str]:
    """The `kind` column as a row carries it: only groups' rows have one, so users' rows stay as they always were."""
    return {"kind": kind.value} if kind is not ObjectKind.USER else {}


def _row(pair_id: str, entity: TableEntity) -> ContactRow:
    applied = entity.get("applied") or ""
    return ContactRow(
        pair_id=pair_id,
        source_id=entity["RowKey"],
        status=ContactStatus(entity["status"]) if entity.get("status") else None,
        hash=entity.get("hash", ""),
        version=as_int(entity.get("version")),
        guid=entity.get("guid", ""),
        applied=json.loads(applied) if applied else {},
        last_error=entity.get("last_error", ""),
        hidden_at=entity.get("hidden_at", ""),
        manager_id=entity.get("manager_id", ""),
        manager_set=bool(entity.get("manager_set", False)),
        last_op=entity.get("last_op", ""),
        last_run_id=entity.get("last_run_id", ""),
        updated_at=entity.get("updated_at", ""),
        claim_version=as_int(entity.get("claim_version")),
        claim_until=entity.get("claim_until", ""),
        repaired_at=entity.get("repaired_at", ""),
        repair=entity.get("repair", ""),
        etag=entity.metadata.get("etag"),
        kind=ObjectKind(entity.get("kind") or ObjectKind.USER),
    )


class ContactStateStore:
    def __init__(self, table: TableClient) -> None:
        self.table = table

    def summaries(self, pair_id: str) -> dict[str, StateSummary]:
        """Every row of a pair, only the columns planning needs (one paged query)."""
        entities = self.table.query_entities(
            f"PartitionKey eq '{quote(pair_id)}'", select=SUMMARY_COLUMNS, results_per_page=1000
        )
        return {
            e["RowKey"]: StateSummary(
                e.get("status", ""),
                e.get("hash", ""),
                as_int(e.get("version")),
                e.get("guid", ""),
                datetime.fromisoformat(e["hidden_at"]) if e.get("hidden_at") else None,
                e.get("manager_id") or "",
                bool(e.get("manager_set", False)),
                e.get("queued_round") or "",
                as_int(e.get("queued_page")),
                ObjectKind(e.get("kind") or ObjectKind.USER),
            )
            for e in entities
            if e.get("status")
        }

    def summaries_of(self, pair_id: str, source_ids: Iterable[str]) -> dict[str, StateSummary]:
        """The planning view of a few rows (provisioning one user), read one by one."""
        found = {}
        for source_id in dict.fromkeys(source_ids):
            row = self.get(pair_id, source_id)
            if row.status:
                hidden_at = datetime.fromisoformat(row.hidden_at) if row.hidden_at else None
                found[source_id] = StateSummary(row.status, row.hash, row.version, row.guid, hidden_at, row.manager_id,
                                                row.manager_set, kind=row.kind)
        return found

    def is_empty(self, pair_id: str) -> bool:
        """The pair has no row at all (a new or re-added pair, or a lost table): one request for one row."""
        pages = self.table.query_entities(f"PartitionKey eq '{quote(pair_id)}'", select=["RowKey"],
                                          results_per_page=1).by_page()
        first = next(pages, None)
        return first is None or next(iter(first), None) is None

    def pending_ids(self, pair_id: str) -> list[str]:
        """Rows an op has claimed before any op committed (no status yet)."""
        entities = self.table.query_entities(f"PartitionKey eq '{quote(pair_id)}'", select=["RowKey", "status"])
        return [e["RowKey"] for e in entities if not e.get("status")]

    def get(self, pair_id: str, source_id: str) -> ContactRow:
        try:
            return _row(pair_id, self.table.get_entity(pair_id, source_id))
        except ResourceNotFoundError:
            return ContactRow(pair_id, source_id)

    def rows(self, pair_id: str, *, status: str | None = None) -> Iterator[ContactRow]:
        query = f"PartitionKey eq '{quote(pair_id)}'"
        if status:
            query += f" and status eq '{quote(status)}'"
        for entity in self.table.query_entities(query):
            yield _row(pair_id, entity)

    def status_counts(self, pair_id: str) -> Counter[str]:
        """Rows per status ("pending": claimed by an op that has not committed yet), and under "poisoned" how many
        of the `failed` rows are ops that ended in the poison queue (one paged query). Groups' rows are counted
        apart, under `groups_<status>` (and `groups_poisoned`)."""
        entities = self.table.query_entities(f"PartitionKey eq '{quote(pair_id)}'", select=["status", "last_op", "kind"])
        counts: Counter[str] = Counter()
        for entity in entities:
            status = entity.get("status") or "pending"
            prefix = "groups_" if entity.get("kind") == ObjectKind.GROUP else ""
            counts[prefix + status] += 1
            if status == ContactStatus.FAILED and str(entity.get("last_op") or "").endswith(POISONED_OP_SUFFIX):
                counts[prefix + "poisoned"] += 1
        return counts

    def claim(self, row: ContactRow, version: int, seconds: int, *, now: datetime | None = None) -> ContactRow:
        """Mark the row as being worked on by the op with `version`; `ClaimLost` when it changed meanwhile."""
        now = now or now_utc()
        claim_until = iso(now + timedelta(seconds=seconds))
        fields = {
            "PartitionKey": row.pair_id,
            "RowKey": row.source_id,
            "claim_version": int64(version),
            "claim_until": claim_until,
        }
        try:
            if row.etag is None:
                metadata = self.table.create_entity(fields)
            else:
                metadata = self.table.update_entity(
                    fields, mode=UpdateMode.MERGE, etag=row.etag, match_condition=MatchConditions.IfNotModified
                )
        except (ResourceExistsError, ResourceModifiedError):
            raise ClaimLost(row.source_id) from None
        row.claim_version, row.claim_until, row.etag = version, claim_until, metadata["etag"]
        return row

    def commit(self, row: ContactRow, update: RowUpdate, *, op: str, run_id: str) -> None:
        """Record the outcome of the op that holds the claim, releasing it. `ClaimLost` if the claim was taken."""
        applied = update.applied
        entity = {
            "PartitionKey": row.pair_id,
            "RowKey": row.source_id,
            "status": update.status.value if update.status else "",
            "hash": update.hash,
            "version": int64(update.version),
            "guid": update.guid,
            "applied": _json_column(applied) if applied else "",
            "last_error": text(update.error, 2000),
            "hidden_at": update.hidden_at,
            "manager_id": update.manager_id,
            "manager_set": update.manager_set,
            "last_op": op,
            "last_run_id": run_id,
            "updated_at": iso(now_utc()),
            "claim_version": int64(0),
            "claim_until": "",
            "repaired_at": row.repaired_at,  # REPLACE keeps only what is written: the last repair stays told
            "repair": row.repair,
            **_kind_column(update.kind),
        }
        try:
            self.table.update_entity(
                entity, mode=UpdateMode.REPLACE, etag=row.etag, match_condition=MatchConditions.IfNotModified
            )
        except (ResourceModifiedError, ResourceNotFoundError):
            raise ClaimLost(row.source_id) from None

    def release(self, row: ContactRow) -> None:
        """Give up the claim without recording an outcome (the op failed or must wait): the row is left as it was
        committed, and another op for the user may claim it at once. Nothing happens if the claim was taken."""
        if row.etag is None:
            return
        fields = {"PartitionKey": row.pair_id, "RowKey": row.source_id, "claim_version": int64(0), "claim_until": ""}
        try:
            self.table.update_entity(fields, mode=UpdateMode.MERGE, etag=row.etag,
                                     match_condition=MatchConditions.IfNotModified)
        except (ResourceModifiedError, ResourceNotFoundError):
            return
        row.claim_version, row.claim_until = 0, ""

    def mark_queued(self, pair_id: str, creates: Iterable[ContactOp], *, round_id: str = "", page: int = 0) -> int:
        """Before creates are queued, say so in their rows (status `queued`, the create's hash), so that a user
        removed while the create waits gets a delete planned. Merged in batches: the applied columns, version and
        claim are left as they are, so an op still in flight for the row is neither overtaken nor dropped.

        `round_id` and `page` say which page of which planning round marked the row: until that page's checkpoint
        is saved, its creates may not all have reached the queue, and a resumed round sends them again."""
        now = iso(now_utc())
        latest: dict[str, dict[str, Any]] = {}  # one entity per row: a transaction may not name a row twice
        for op in creates:
            latest[op.source_id] = {
                "PartitionKey": pair_id, "RowKey": op.source_id, "status": ContactStatus.QUEUED.value, "hash": op.hash,
                "manager_id": op.manager_id, "last_op": "create:queued", "last_run_id": op.run_id, "updated_at": now,
                "queued_round": round_id, "queued_page": page, **_kind_column(op.object_kind),
            }
        entities = list(latest.values())
        chunks = [entities[start:start + TRANSACTION_SIZE] for start in range(0, len(entities), TRANSACTION_SIZE)]
        submit_transactions(self.table, chunks)
        return len(entities)

    def correct(self, row: ContactRow, correction: Correction) -> bool:
        """Merge a reconcile's correction into a row it read (ETag-guarded; a row created since it was read is not
        overwritten). False when the row changed meanwhile or an op holds it: the next reconcile looks again."""
        return self.repair(row, correction.columns)

    def add_corrected(self, pair_id: str, corrections: Sequence[tuple[str, Correction]]) -> int:
        """Rows a reconcile rebuilt from the target, by source id (none existed when it read the table), merged in
        transactions of 100, four at a time."""
        return self.add_rows(pair_id, [{"RowKey": source_id, **correction.columns}
                                       for source_id, correction in corrections])

    def park_holder(self, row: ContactRow, *, guid: str, temporary_address: str) -> bool:
        """End an address move's claim on the row of the contact `guid` it parked on `temporary_address`. When the
        row names that contact and records what was applied to it, the temporary address counts as applied and the
        hash is cleared, so the contact's own op (or the next plan) sends the real address. ETag-guarded by the
        claim; False when the row changed meanwhile."""
        fields: dict[str, Any] = {"claim_version": int64(0), "claim_until": ""}
        if row.guid.lower() == guid.lower() and row.applied:
            fields["applied"] = _json_column({**row.applied, "ExternalEmailAddress": temporary_address})
            fields["hash"] = ""
        return self.repair(row, fields)

    def repair(self, row: ContactRow, fields: Mapping[str, Any]) -> bool:
        """Merge columns into a row that was read (ETag-guarded; a row created since it was read is not overwritten):
        what `correct` and `park_holder` write. False when the row changed meanwhile or an op holds it."""
        entity = {"PartitionKey": row.pair_id, "RowKey": row.source_id, **fields}
        try:
            if row.etag is None:
                self.table.create_entity(entity)
            else:
                self.table.update_entity(entity, mode=UpdateMode.MERGE, etag=row.etag,
                                         match_condition=MatchConditions.IfNotModified)
        except (ResourceExistsError, ResourceModifiedError, ResourceNotFoundError):
            return False
        return True

    def add_rows(self, pair_id: str, rows: Sequence[Mapping[str, Any]]) -> int:
        """Rows a reconcile rebuilt from the target (none existed when it read the table), merged in transactions of
        100, four at a time."""
        entities = [{"PartitionKey": pair_id, **row} for row in rows]
        chunks = [entities[start:start + TRANSACTION_SIZE] for start in range(0, len(entities), TRANSACTION_SIZE)]
        submit_transactions(self.table, chunks)
        return len(entities)

    def note_delivery_error(self, pair_id: str, source_id: str, version: int, error: str) -> None:
        """Keep why the last delivery of the op `version` for this user failed, so that an op that ends in the poison
        queue can say why. The note lives beside the row (partition `<pair>~delivery`), never in it: writing the row
        would change its ETag under the claim of an op being applied right now."""
        self.table.upsert_entity(
            {"PartitionKey": pair_id + NOTES_SUFFIX, "RowKey": source_id, "version": int64(version),
             "error": text(error, 2000), "noted_at": iso(now_utc())},
            mode=UpdateMode.REPLACE,
        )

    def delivery_error(self, pair_id: str, source_id: str, version: int) -> str:
        """The cause the last failed delivery of the op `version` noted ("" when none did)."""
        try:
            note = self.table.get_entity(pair_id + NOTES_SUFFIX, source_id)
        except ResourceNotFoundError:
            return ""
        return str(note.get("error") or "") if as_int(note.get("version")) == version else ""

    def record_failure(self, pair_id: str, source_id: str, *, error: str, op: str, run_id: str) -> None:
        """Mark a row failed without touching its applied state (poison handler: the op stays replayable)."""
        self.table.upsert_entity(
            {
                "PartitionKey": pair_id,
                "RowKey": source_id,
                "status": ContactStatus.FAILED.value,
                "last_error": text(error, 2000),
                "last_op": op,
                "last_run_id": run_id,
                "updated_at": iso(now_utc()),
                "claim_version": int64(0),
                "claim_until": "",
            },
            mode=UpdateMode.MERGE,
        )

    def forget_pair(self, pair_id: str) -> int:
        """Delete the pair's rows (and its delivery notes); the number of rows removed."""
        removed = 0
        for partition in (pair_id, pair_id + NOTES_SUFFIX):
            query = f"PartitionKey eq '{quote(partition)}'"
            for entity in self.table.query_entities(query, select=["PartitionKey", "RowKey"]):
                self.table.delete_entity(entity["PartitionKey"], entity["RowKey"])
                removed += partition == pair_id
        return removed


def submit_transactions(table: TableClient, chunks: Sequence[Sequence[TableEntity | dict[str, Any]]]) -> None:
    """Merge-upsert each chunk (up to 100 rows of one partition) as one transaction, several at once."""
    def submit(chunk: Sequence[TableEntity | dict[str, Any]]) -> None:
        table.submit_transaction([("upsert", entity, {"mode": UpdateMode.MERGE}) for entity in chunk])

    run_all([functools.partial(submit, chunk) for chunk in chunks])
