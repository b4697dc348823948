"""Table TargetState: what every worker instance must know about a target organisation, one row per kind.

    PartitionKey "quota", RowKey = organisation   the creation-quota pause (sync.core.quota.QuotaPause)
    PartitionKey "pace",  RowKey = organisation   the shared pace (sync.core.pacing.PaceState) and the instances
                                                  that reported in the last seconds, with when they did

Both rows are read and written with their ETag, so two instances never overwrite each other's news. The pace row
is touched about once a second per busy instance (a read and a conditional write), never once per call.
"""

from __future__ import annotations

import json
import time
from datetime import datetime
from typing import Any

from azure.core import MatchConditions
from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError
from azure.data.tables import TableClient, TableEntity, UpdateMode

from sync.core.pacing import PaceReport, PaceRules, PaceState, advance
from sync.core.quota import QuotaPause
from sync.state.entities import as_int, int64

QUOTA = "quota"
PACE = "pace"
# An instance that has not reported for this long no longer takes a share. Generous: a busy instance may report late
# (its storage calls slow), and counting one that left costs a little idle capacity, while forgetting one that is
# still calling pushes the others over the tenant's cap.
MEMBER_SECONDS = 30.0
WRITE_ATTEMPTS = 3


def _iso(moment: datetime | None) -> str:
    return moment.isoformat() if moment else ""  # to the microsecond: pauses in tests last a second or two


def _moment(value: Any) -> datetime | None:
    return datetime.fromisoformat(value) if isinstance(value, str) and value else None


def _key(organization: str) -> str:
    return organization.strip().lower()


class TargetStateStore:
    def __init__(self, table: TableClient) -> None:
        self.table = table

    # creation quota ----------------------------------------------------------------------------------------------
    def quota(self, organization: str) -> tuple[QuotaPause, str | None]:
        """The organisation's pause and the row's ETag (None: no row yet)."""
        try:
            entity = self.table.get_entity(QUOTA, _key(organization))
        except ResourceNotFoundError:
            return QuotaPause(), None
        return _pause(entity), entity.metadata.get("etag")

    def save_quota(self, organization: str, pause: QuotaPause, etag: str | None) -> bool:
        """Write the pause if the row is still as read (`etag`); False when another instance changed it first."""
        entity = {
            "PartitionKey": QUOTA, "RowKey": _key(organization),
            "reached_at": _iso(pause.reached_at), "resume_at": _iso(pause.resume_at), "step": int64(pause.step),
            "failed_after": float(pause.failed_after), "probe_until": _iso(pause.probe_until),
            "freed_min": float(pause.freed_min), "freed_max": float(pause.freed_max), "pauses": int64(pause.pauses),
            "last_freed_at": _iso(pause.last_freed_at),
        }
        try:
            if etag is None:
                self.table.create_entity(entity)
            else:
                self.table.update_entity(entity, mode=UpdateMode.REPLACE, etag=etag,
                                         match_condition=MatchConditions.IfNotModified)
        except (ResourceExistsError, ResourceModifiedError, ResourceNotFoundError):
            return False
        return True

    # pace ----------------------------------------------------------------------------------------------------------
    def pace(self, organization: str) -> tuple[PaceState | None, dict[str, float]]:
        """The shared pace (None before any instance reported) and the instances with when each last reported."""
        try:
            entity = self.table.get_entity(PACE, _key(organization))
        except ResourceNotFoundError:
            return None, {}
        return _pace(entity), _members(entity)

    def board(self, *, member_seconds: float = MEMBER_SECONDS) -> TablePaceBoard:
        return TablePaceBoard(self.table, member_seconds=member_seconds)


class TablePaceBoard:
    """`sync.core.pacing.PaceBoard` on the TargetState table."""

    def __init__(self, table: TableClient, *, member_seconds: float = MEMBER_SECONDS) -> None:
        self.table = table
        self.member_seconds = member_seconds

    def exchange(self, organization: str, instance: str, report: PaceReport, rules: PaceRules) -> tuple[PaceState, list[str]]:
        key = _key(organization)
        state, members = rules.initial(), {}
        for _ in range(WRITE_ATTEMPTS):
            try:
                entity: TableEntity | None = self.table.get_entity(PACE, key)
            except ResourceNotFoundError:
                entity = None
            now = time.time()
            state = _pace(entity) if entity is not None else rules.initial()
            members = {member: seen for member, seen in (_members(entity) if entity else {}).items()
                       if now - seen < self.member_seconds}
            members[instance] = now
            state = advance(state, report, rules)
            fields = {
                "PartitionKey": PACE, "RowKey": key, "limit": int64(state.limit), "ceiling": int64(state.ceiling),
                "calls": int64(state.calls), "throttled_until": float(state.throttled_until),
                "members": json.dumps(members, separators=(",", ":")),
            }
            try:
                if entity is None:
                    self.table.create_entity(fields)
                else:
                    self.table.update_entity(fields, mode=UpdateMode.REPLACE, etag=entity.metadata["etag"],
                                             match_condition=MatchConditions.IfNotModified)
            except (ResourceExistsError, ResourceModifiedError, ResourceNotFoundError):
                continue  # another instance reported at the same moment: read its news and apply ours on top
            break
        return state, sorted(members)


def _pause(entity: TableEntity) -> QuotaPause:
    return QuotaPause(
        reached_at=_moment(entity.get("reached_at")), resume_at=_moment(entity.get("resume_at")),
        step=as_int(entity.get("step")), failed_after=float(entity.get("failed_after") or 0.0),
        probe_until=_moment(entity.get("probe_until")), freed_min=float(entity.get("freed_min") or 0.0),
        freed_max=float(entity.get("freed_max") or 0.0), pauses=as_int(entity.get("pauses")),
        last_freed_at=_moment(entity.get("last_freed_at")),
    )


def _pace(entity: TableEntity) -> PaceState:
    return PaceState(limit=max(1, as_int(entity.get("limit"), 1)), ceiling=as_int(entity.get("ceiling")),
                     calls=as_int(entity.get("calls")), throttled_until=float(entity.get("throttled_until") or 0.0))


def _members(entity: TableEntity) -> dict[str, float]:
    try:
        raw = json.loads(entity.get("members") or "{}")
    except ValueError:
        return {}
    return {str(k): float(v) for k, v in raw.items() if isinstance(v, int | float)} if isinstance(raw, dict) else {}
