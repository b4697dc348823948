"""What each pair's queued plans removed lately, in the PairState table (partition `removals`, RowKey the pair id).

The safety gate (sync.core.plan.unsafe_reason) counts a plan's removals together with those queued over the pair's
window (`deletion.window_hours`), so twelve runs of 20 leavers each cannot remove what one run of 240 may not. One
row per pair holds hourly buckets (`buckets`: JSON `{"<hour>": [hides, deletes]}`), pruned to the longest window
(30 days) on every write; the pair's lease makes one run write it at a time. A grace-expired delete of a contact
already hidden is not counted again: its hide was. The row survives a lost ContactState table and a pair's
remove and add (same id); an admin's `allow_deletes` release starts the window anew.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta

from azure.core.exceptions import ResourceNotFoundError
from azure.data.tables import TableClient, UpdateMode

from sync.contract.ops import ContactOp, OpKind
from sync.core.plan import RemovalWindow
from sync.state.entities import now_utc

PARTITION = "removals"
KEEP_HOURS = 24 * 30  # the longest window a pair may ask for
NOT_COUNTED_AGAIN = "grace_expired:"  # a staged delete's final delete: its hide was counted


def _hour(moment: datetime) -> str:
    return moment.replace(minute=0, second=0, microsecond=0).isoformat()


class RemovalLedger:
    def __init__(self, table: TableClient, clock: Callable[[], datetime] = now_utc) -> None:
        self.table = table
        self.clock = clock  # tests move it forward instead of waiting

    def _buckets(self, pair_id: str) -> dict[str, list[int]]:
        try:
            entity = self.table.get_entity(PARTITION, pair_id)
        except ResourceNotFoundError:
            return {}
        loaded = json.loads(str(entity.get("buckets") or "{}"))
        return {str(hour): [int(n) for n in counts] for hour, counts in loaded.items()}

    def window(self, pair_id: str, hours: int) -> RemovalWindow:
        """The removals queued in the pair's last `hours` (the current hour included); an empty window for 0."""
        if hours <= 0:
            return RemovalWindow()
        since = _hour(self.clock() - timedelta(hours=hours - 1))
        hidden = deleted = 0
        for hour, (hides, deletes) in self._buckets(pair_id).items():
            if hour >= since:
                hidden, deleted = hidden + hides, deleted + deletes
        return RemovalWindow(hours, hidden, deleted)

    def record(self, pair_id: str, ops: Iterable[ContactOp]) -> int:
        """Count the removals among ops just queued for the pair; the number counted."""
        hides = deletes = 0
        for op in ops:
            if op.kind is OpKind.HIDE:
                hides += 1
            elif op.kind is OpKind.DELETE and not op.reason.startswith(NOT_COUNTED_AGAIN):
                deletes += 1
        if not hides and not deletes:
            return 0
        now = self.clock()
        oldest = _hour(now - timedelta(hours=KEEP_HOURS))
        buckets = {hour: counts for hour, counts in self._buckets(pair_id).items() if hour >= oldest}
        current = buckets.setdefault(_hour(now), [0, 0])
        current[0] += hides
        current[1] += deletes
        self.table.upsert_entity({"PartitionKey": PARTITION, "RowKey": pair_id, "buckets": json.dumps(buckets)},
                                 mode=UpdateMode.REPLACE)
        return hides + deletes

    def forget(self, pair_id: str) -> None:
        """Start the pair's window anew (an admin released the gate, or the pair was removed)."""
        try:
            self.table.delete_entity(PARTITION, pair_id)
        except ResourceNotFoundError:
            return
