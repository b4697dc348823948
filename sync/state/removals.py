"""What each pair's queued plans removed lately, in the PairState table (partition `removals`, RowKey the pair's
source and target tenant ids, `<source>~<target>`).

The safety gate (sync.core.plan.unsafe_reason) counts a plan's removals together with those queued over the pair's
window (`deletion.window_hours`), so twelve runs of 20 leavers each cannot remove what one run of 240 may not. One
row per pair holds hourly buckets (`buckets`: JSON, per hour the contacts hidden and deleted, each by a short hash
of its source id, so one contact removed twice in a window counts once), pruned to the longest window (30 days) on
every write; the pair's lease makes one run write it at a time. A grace-expired delete of a contact
already hidden is not counted again: its hide was. The row survives a lost ContactState table and a pair's
remove and add: it is keyed by the two tenants, not the pair id, so a pair added again for the same tenants (under
any id) inherits the window, and a new pair reusing an id for other tenants starts with an empty one. An admin's
`allow_deletes` release starts the window anew.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from azure.core.exceptions import ResourceNotFoundError
from azure.data.tables import TableClient, UpdateMode

from sync.contract.ops import ContactOp, OpKind
from sync.contract.pairs import TenantPair
from sync.core.plan import RemovalWindow, removal_key
from sync.state.entities import now_utc

PARTITION = "removals"
KEEP_HOURS = 24 * 30  # the longest window a pair may ask for
NOT_COUNTED_AGAIN = "grace_expired:"  # a staged delete's final delete: its hide was counted
MAX_KEYS = 1500  # contacts named in one pair's row (12 characters each); more are counted without a name


def _row_key(pair: TenantPair) -> str:
    return f"{pair.source.tenant_id.lower()}~{pair.target.tenant_id.lower()}"


def _hour(moment: datetime) -> str:
    return moment.replace(minute=0, second=0, microsecond=0).isoformat()


@dataclass
class _Bucket:
    """One hour of a pair's removals: the contacts hidden and deleted by `removal_key`, and how many more were
    counted without a key (past `MAX_KEYS`)."""

    hides: list[str] = field(default_factory=list)
    deletes: list[str] = field(default_factory=list)
    more_hides: int = 0
    more_deletes: int = 0

    def as_json(self) -> dict[str, Any]:
        return {"h": self.hides, "d": self.deletes, "n": [self.more_hides, self.more_deletes]}

    @classmethod
    def of(cls, data: dict[str, Any]) -> _Bucket:
        more = list(data.get("n") or [0, 0])
        return cls([str(k) for k in data.get("h") or []], [str(k) for k in data.get("d") or []],
                   int(more[0]), int(more[1]))


class RemovalLedger:
    def __init__(self, table: TableClient, clock: Callable[[], datetime] = now_utc) -> None:
        self.table = table
        self.clock = clock  # tests move it forward instead of waiting

    def _buckets(self, pair: TenantPair) -> dict[str, _Bucket]:
        try:
            entity = self.table.get_entity(PARTITION, _row_key(pair))
        except ResourceNotFoundError:
            return {}
        loaded = json.loads(str(entity.get("buckets") or "{}"))
        return {str(hour): _Bucket.of(data) for hour, data in loaded.items() if isinstance(data, dict)}

    def window(self, pair: TenantPair, hours: int) -> RemovalWindow:
        """The contacts removed in the pair's last `hours` (the current hour included), each counted once; an
        empty window for 0."""
        if hours <= 0:
            return RemovalWindow()
        since = _hour(self.clock() - timedelta(hours=hours - 1))
        hidden: set[str] = set()
        deleted: set[str] = set()
        more = 0
        more_deleted = 0
        for hour, bucket in self._buckets(pair).items():
            if hour >= since:
                hidden.update(bucket.hides)
                deleted.update(bucket.deletes)
                more += bucket.more_hides + bucket.more_deletes
                more_deleted += bucket.more_deletes
        return RemovalWindow(hours, len(hidden - deleted) + more - more_deleted, len(deleted) + more_deleted,
                             frozenset(hidden | deleted))

    def record(self, pair: TenantPair, ops: Iterable[ContactOp]) -> int:
        """Count the removals among ops just queued for the pair; the number counted."""
        hides = [removal_key(op.source_id) for op in ops if op.kind is OpKind.HIDE]
        deletes = [removal_key(op.source_id) for op in ops
                   if op.kind is OpKind.DELETE and not op.reason.startswith(NOT_COUNTED_AGAIN)]
        if not hides and not deletes:
            return 0
        now = self.clock()
        oldest = _hour(now - timedelta(hours=KEEP_HOURS))
        buckets = {hour: bucket for hour, bucket in self._buckets(pair).items() if hour >= oldest}
        room = MAX_KEYS - sum(len(b.hides) + len(b.deletes) for b in buckets.values())
        current = buckets.setdefault(_hour(now), _Bucket())
        for keys, named, kind in ((hides, current.hides, "hides"), (deletes, current.deletes, "deletes")):
            kept = keys[:max(room, 0)]
            named.extend(kept)
            room -= len(kept)
            if kind == "hides":
                current.more_hides += len(keys) - len(kept)
            else:
                current.more_deletes += len(keys) - len(kept)
        stored = {hour: bucket.as_json() for hour, bucket in buckets.items()}
        self.table.upsert_entity({"PartitionKey": PARTITION, "RowKey": _row_key(pair), "buckets": json.dumps(stored)},
                                 mode=UpdateMode.REPLACE)
        return len(hides) + len(deletes)

    def forget(self, pair: TenantPair) -> None:
        """Start the pair's window anew (an admin released the gate)."""
        try:
            self.table.delete_entity(PARTITION, _row_key(pair))
        except ResourceNotFoundError:
            return
