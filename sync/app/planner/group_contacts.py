"""Groups as contacts in a planning run: the pair's groups round, after its users round, under the same lease.

    read     groups/delta from the pair's own groups deltaLink (PairState `groups_delta_link`; membership scoping keeps
             its links in GroupMembership), every group when there is none, the groups section or mapping changed, a
             full round was asked for, or the link expired (then the full round sweeps groups that vanished)
    flags    hideFromAddressLists of the Microsoft 365 groups the round shows, 20 per JSON $batch (none when idle)
    plan     sync.core.plan with kind `group`: the users' rules (creates, updates, deletes, staged deletes, conflicts
             kept, queued creates not sent twice), against the pair's group rows only
    gate     the pair's limits count the users round's removals of this run and both kinds' managed contacts
    queue    mark creates `queued` under this round's id, send, then save the deltaLink (invariant 4); a run that dies
             in between leaves `groups_round` set, and the next groups round sends those creates again

A groups round is read and planned whole (not page by page like users): a tenant's groups are a few pages where its
users may be hundreds. A pair whose `objects` no longer include groups gets its group contacts removed (through
the gate) without reading Graph; one whose `objects` no longer include users, its user contacts.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol, runtime_checkable

from sync.app.planner.sinks import Sink
from sync.app.wiring.runtime import Runtime
from sync.contract.groupattrs import GROUP_SELECT
from sync.contract.ops import OpKind
from sync.contract.pairs import TenantPair
from sync.contract.summaries import StateSummary
from sync.contract.vocabulary import ObjectKind
from sync.core.group_scope import group_kind
from sync.core.plan import Baseline, Plan, PlanOptions, SendLedger, plan_pair, unsafe_reason
from sync.core.scope import mail_address
from sync.core.source import DeltaRound
from sync.errors import DeltaTokenExpired, SourceError
from sync.state.runs import RunRecord

log = logging.getLogger("ctcs.planning")

LEFT_OBJECTS = "left_scope:objects"  # the pair's `objects` no longer name this kind


class GroupContactSource(Protocol):
    requests: int

    def read_round(self, link: str | None) -> DeltaRound: ...

    def hide_flags(self, group_ids: list[str]) -> dict[str, bool]: ...

    def find_group(self, group_id: str) -> dict[str, Any] | None: ...


@runtime_checkable
class GroupContactCapable(Protocol):
    def group_contact_reader(self) -> GroupContactSource: ...


@dataclass
class KindRound:
    """What one kind's whole round did in a run (the groups round, or the removal of a kind the pair dropped)."""

    plan: Plan
    requests: int = 0
    queued: int = 0
    quarantine_reason: str = ""
    full: bool = False  # every group was read (first round, changed section, expired link, asked for)

    @property
    def removals(self) -> int:
        return self.plan.count(OpKind.DELETE) + self.plan.count(OpKind.HIDE)


def groups_definition(pair: TenantPair) -> str:
    """What decides a group's contact; a change makes the next groups round full."""
    relevant = (pair.groups.model_dump_json() + pair.contact.anchor_attribute + str(pair.contact.hidden_from_gal)
                + ",".join(GROUP_SELECT))
    return hashlib.sha256(relevant.encode()).hexdigest()[:16]


def split_rows(rows: Mapping[str, StateSummary]) -> tuple[dict[str, StateSummary], dict[str, StateSummary]]:
    """(users' rows, groups' rows)."""
    users = {key: row for key, row in rows.items() if row.kind is ObjectKind.USER}
    return users, {key: row for key, row in rows.items() if row.kind is ObjectKind.GROUP}


def managed_count(rows: Mapping[str, StateSummary]) -> int:
    return sum(1 for row in rows.values() if row.managed)


def needs_groups_round(pair: TenantPair, group_rows: Mapping[str, StateSummary]) -> bool:
    """A users-only pair without group contacts has no groups round: it runs and costs exactly as before."""
    return pair.syncs_groups or any(row.live for row in group_rows.values())


@dataclass(frozen=True)
class GroupsBaseline:
    """What a groups round is planned against: the pair's group rows, and what the run learned before it."""

    rows: Mapping[str, StateSummary]
    hidden: frozenset[str] | None  # whom the source's Exchange hides (None: not granted)
    managed: int  # the pair's managed contacts, users and groups together: one safety gate per pair
    earlier_removals: int = 0  # what the run's users round removed (the gate counts it too)


def run_groups_round(
    rt: Runtime, pair: TenantPair, run: RunRecord, baseline: GroupsBaseline, *, version: int, full: bool,
    allow_deletes: bool, sink: Sink,
) -> KindRound:
    """Read, plan, gate and queue the pair's groups round (with a `StoreSink` the caller holds the lease; a `DrySink`
    reads Graph and writes nothing)."""
    stores = rt.stores
    status = stores.pair_state.get(pair.id).for_generation(pair.generation)
    definition = groups_definition(pair)
    round_id = f"groups-{run.run_id}"
    requests = 0
    if pair.syncs_groups:
        reader = _reader(rt, pair)
        link = "" if full or status.groups_definition != definition else status.groups_delta_link
        delta = _read(reader, pair, link)
        requests = reader.requests
        sweep = "not_in_source"
    else:
        delta, sweep = DeltaRound(full=True, delta_link=status.groups_delta_link), LEFT_OBJECTS
    unsent = status.groups_round and sink.continues  # a groups round that died before its deltaLink was saved
    ledger = SendLedger(round_id, 0, {status.groups_round: 0} if unsent else {})
    window = stores.removals.window(pair, pair.deletion.window_hours)  # the users round's removals are in it
    plan = plan_pair(pair, delta, Baseline(baseline.rows, hidden_ids=baseline.hidden, managed=baseline.managed,
                                           window=window),
                     PlanOptions(version, run.run_id, retry_kept=delta.full, now=datetime.now(UTC), ledger=ledger,
                                 kind=ObjectKind.GROUP, sweep_reason=sweep))
    result = KindRound(plan, requests=requests, full=delta.full and pair.syncs_groups)
    reason = unsafe_reason(plan, pair, earlier_removals=baseline.earlier_removals)
    if reason and not allow_deletes:
        result.quarantine_reason = f"{reason} (groups round)"
        sink.quarantine(result.quarantine_reason)  # invariant 5: nothing queued, the deltaLink stays
        return result
    if any(op.kind is OpKind.CREATE for op in plan.ops):
        sink.begin_groups_round(round_id)
    if plan.ops:
        sink.queue(plan.ops, round_id=round_id, page=0)
    result.queued = len(plan.ops)
    sink.finish_groups_round(delta_link=delta.delta_link or "", definition=definition if pair.syncs_groups else "")
    return result


def drop_users(
    pair: TenantPair, run: RunRecord, user_rows: Mapping[str, StateSummary], *, version: int, allow_deletes: bool,
    managed: int, sink: Sink,
) -> KindRound:
    """A pair whose `objects` leave users out: their contacts go (through the gate), and the users deltaLink is
    dropped, so naming users again starts with a full round."""
    plan = plan_pair(pair, DeltaRound(full=True), Baseline(user_rows, managed=managed),
                     PlanOptions(version, run.run_id, sweep_reason=LEFT_OBJECTS))
    result = KindRound(plan)
    if not user_rows:
        return result  # a pair that never synced users: nothing to write
    reason = unsafe_reason(plan, pair)
    if reason and not allow_deletes:
        result.quarantine_reason = reason
        sink.quarantine(reason)
        return result
    sink.drop_users(plan.ops, outcome=run.outcome)
    result.queued = len(plan.ops)
    return result


def _reader(rt: Runtime, pair: TenantPair) -> GroupContactSource:
    source = rt.open_source(pair)
    if not isinstance(source, GroupContactCapable):
        raise SourceError(f"pair {pair.id}: the source cannot read groups (objects names \"groups\")")
    return source.group_contact_reader()


def _read(reader: GroupContactSource, pair: TenantPair, link: str) -> DeltaRound:
    """The groups round from `link` (or every group), with hideFromAddressLists of its Microsoft 365 groups."""
    try:
        delta = reader.read_round(link or None)
    except DeltaTokenExpired as expired:
        if not link:
            raise
        log.warning("pair %s: groups delta token no longer valid (%s); reading every group", pair.id, expired)
        delta = reader.read_round(None)
    unified = [group_id for group_id, group in delta.users.items()
               if group_kind(group) == "unified" and mail_address(group)]
    for group_id, hidden in reader.hide_flags(unified).items():
        delta.users[group_id] = {**delta.users[group_id], "hideFromAddressLists": hidden}
    return delta
