"""Source changes + state rows + pair policy → an ordered plan of contact ops (pure).

Like a DNS-as-code plan: desired state is computed, diffed against what was applied, and the result checked
against the pair's delete thresholds before anything is queued.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sync.contract.ops import KIND_ORDER, ContactOp, OpKind
from sync.contract.pairs import TenantPair
from sync.contract.vocabulary import ContactStatus
from sync.core.managers import ManagerLinks, partial_contact
from sync.core.mapping import ContactMapper, Mapped
from sync.core.scope import decide_scope
from sync.core.source import DeltaRound, SourceUser

# Below this many managed contacts the percentage threshold is not applied: deleting 1 of 5 is 20%.
MIN_CONTACTS_FOR_PERCENT_GATE = 10


@dataclass(slots=True)
class StateSummary:
    """What planning needs to know of one ContactState row."""

    status: ContactStatus
    hash: str
    version: int
    guid: str = ""
    hidden_at: datetime | None = None  # when a staged delete hid the contact
    manager_id: str = ""  # the source id of the user's manager as last planned ("" = none)
    manager_set: bool = False  # the applied contact's Manager names the manager's contact

    def __post_init__(self) -> None:
        self.status = ContactStatus(self.status)  # a table gives back the plain string

    @property
    def live(self) -> bool:
        """A contact exists (or may exist) in the target for this user."""
        return self.status is not ContactStatus.DELETED

    @property
    def managed(self) -> bool:
        """A contact ctcs made (or tried to) exists for this user; a queued create does not count yet."""
        return self.live and self.status is not ContactStatus.QUEUED


@dataclass
class Skip:
    source_id: str
    reason: str
    name: str


@dataclass
class Plan:
    pair_id: str
    run_id: str
    version: int
    full: bool
    ops: list[ContactOp] = field(default_factory=list)
    skips: list[Skip] = field(default_factory=list)
    unchanged: int = 0
    kept: Counter[str] = field(default_factory=Counter)  # rows left alone on purpose (conflict, failed)
    warnings: Counter[str] = field(default_factory=Counter)
    managed: int = 0  # live contacts before this plan

    def count(self, kind: OpKind) -> int:
        return sum(1 for op in self.ops if op.kind is kind)

    @property
    def skipped_by_reason(self) -> Counter[str]:
        return Counter(skip.reason for skip in self.skips)

    def counts(self) -> dict[str, int]:
        counts = {kind.value: self.count(kind) for kind in OpKind}
        counts["unchanged"] = self.unchanged
        counts.update({f"skipped_{reason}": n for reason, n in sorted(self.skipped_by_reason.items())})
        counts.update({f"kept_{status}": n for status, n in sorted(self.kept.items())})
        return counts


def plan_pair(
    pair: TenantPair,
    round_: DeltaRound,
    state: Mapping[str, StateSummary],
    *,
    version: int,
    run_id: str,
    retry_kept: bool = False,
    memberships: Mapping[str, frozenset[str]] | None = None,
    now: datetime | None = None,
    hidden_ids: frozenset[str] | None = None,
) -> Plan:
    """Every op needed to bring the target in line with the round. `retry_kept` re-plans conflict/failed rows;
    `memberships` gives each user's tracked groups (nested included) when the pair scopes by group; `now`
    decides which hidden contacts have outlived `deletion.grace_days`; `hidden_ids` are the users the source's
    Exchange hides from its address lists (None: Graph's showInAddressList decides)."""
    plan = Plan(pair.id, run_id, version, round_.full, managed=sum(1 for row in state.values() if row.managed))
    mapper = ContactMapper(pair)

    def emit(kind: OpKind, source_id: str, reason: str, contact: dict[str, object] | None = None, digest: str = "",
             *, partial: bool = False, manager_id: str = "") -> None:
        plan.ops.append(ContactOp(pair.id, run_id, kind, source_id, version, reason, contact, digest, partial, manager_id))

    decided: set[str] = set()

    def remove(source_id: str, row: StateSummary | None, reason: str) -> None:
        """The user is gone or out of scope: delete its contact, or hide it when deletes are staged (once)."""
        if row is None or not row.live or source_id in decided:
            return
        decided.add(source_id)
        if pair.deletion.mode == "delete":
            emit(OpKind.DELETE, source_id, reason)
        elif row.status is not ContactStatus.HIDDEN:
            emit(OpKind.HIDE, source_id, reason)

    in_scope: list[tuple[str, SourceUser, str]] = []  # mapped once removals are known: Manager depends on them
    for source_id, user in round_.users.items():
        row = state.get(source_id)
        groups = memberships.get(source_id, frozenset()) if memberships else frozenset()
        hidden = None if hidden_ids is None else source_id.lower() in hidden_ids
        decision = decide_scope(pair, user, groups, hidden)
        if not decision.in_scope:
            assert decision.reason is not None
            if row is not None and row.live:
                remove(source_id, row, f"left_scope:{decision.reason}")
            else:
                plan.skips.append(Skip(source_id, decision.reason, str(user.get("displayName") or "")))
            continue
        in_scope.append((source_id, user, decision.address))

    for source_id, reason in round_.removed.items():
        remove(source_id, state.get(source_id), f"removed:{reason}")

    if hidden_ids:
        # Hidden in the source's Exchange since the last run, without any change Graph would report.
        for source_id, row in state.items():
            if source_id.lower() in hidden_ids and source_id not in round_.users:
                remove(source_id, row, "left_scope:hidden_from_gal")

    if round_.full:
        # A full round shows every user that exists: a contact whose user it did not show has lost its source.
        for source_id, row in state.items():
            if source_id not in round_.users and source_id not in round_.removed:
                remove(source_id, row, "not_in_source")

    links = ManagerLinks.build(enabled=mapper.links_managers, full=round_.full, state=state, leaving=decided)
    for source_id, user, address in in_scope:
        manager_id = links.manager_of(source_id, user)
        mapped = mapper.map(user, address, manager=links.desired(manager_id))
        for warning in mapped.warnings:
            plan.warnings[warning.split(":", 1)[0]] += 1
        placed = _place(plan, state.get(source_id), mapped, retry_kept=retry_kept, manager_id=manager_id)
        if placed is not None:
            emit(placed[0], source_id, placed[1], mapped.contact, mapped.hash, manager_id=manager_id)
    for fix in links.fixups(touched=set(round_.users) | decided | {op.source_id for op in plan.ops}):
        emit(OpKind.UPDATE, fix.source_id, fix.reason, partial_contact(fix), partial=True, manager_id=fix.manager_id)

    if pair.deletion.mode == "hide_then_delete" and now is not None:
        _purge_expired(plan, pair, state, now, emit)

    plan.ops.sort(key=lambda op: (KIND_ORDER[op.kind], op.source_id))
    return plan


def _place(
    plan: Plan, row: StateSummary | None, mapped: Mapped, *, retry_kept: bool, manager_id: str
) -> tuple[OpKind, str] | None:
    """The op (kind, reason) one in-scope user's contact needs, or None (counted as unchanged or kept).
    A changed manager id alone makes an update too (the worker then sends nothing), so the state row learns
    whom later link fix-ups must follow."""
    same = row is not None and row.hash == mapped.hash and row.manager_id == manager_id
    if row is None or not row.live:
        return OpKind.CREATE, "new" if row is None else "returned"
    if row.status is ContactStatus.HIDDEN:
        return OpKind.RESTORE, "returned"
    if row.status is ContactStatus.QUEUED:
        # Its create is still on the queue: leave it, unless the user changed since or a full round re-checks.
        if same and not retry_kept:
            plan.kept[ContactStatus.QUEUED.value] += 1
            return None
        return OpKind.CREATE, "changed" if not same else "requeued"
    if row.status.needs_attention and not retry_kept and same:
        plan.kept[row.status.value] += 1
        return None
    if same and row.status is ContactStatus.OK:
        plan.unchanged += 1
        return None
    return OpKind.UPDATE, "changed" if row.status is ContactStatus.OK else f"retry_{row.status.value}"


def _purge_expired(
    plan: Plan, pair: TenantPair, state: Mapping[str, StateSummary], now: datetime, emit: Callable[..., None]
) -> None:
    """Hidden contacts past their grace period are deleted (the safety gate counts them like any delete).
    A hidden user who came back in this round already has a restore op and is left alone."""
    cutoff = now - timedelta(days=pair.deletion.grace_days)
    touched = {op.source_id for op in plan.ops}
    for source_id, row in state.items():
        if row.status is ContactStatus.HIDDEN and row.hidden_at is not None and row.hidden_at <= cutoff and source_id not in touched:
            emit(OpKind.DELETE, source_id, f"grace_expired:{pair.deletion.grace_days}d")


def unsafe_reason(plan: Plan, pair: TenantPair) -> str | None:
    """Why the plan's removals (deletes and hides) exceed the pair's thresholds, or None when they do not.
    A reason stops the run before anything is queued and quarantines the pair (invariant 5)."""
    removals = sum(1 for op in plan.ops if op.kind.removes)
    limits = pair.deletion
    verb = "deletes" if pair.deletion.mode == "delete" else "removes (hides or deletes)"
    if removals > limits.max_deletes:
        return f"plan {verb} {removals} contacts, more than deletion.max_deletes ({limits.max_deletes})"
    if plan.managed >= MIN_CONTACTS_FOR_PERCENT_GATE and removals * 100 > limits.max_delete_percent * plan.managed:
        percent = removals * 100 / plan.managed
        return (
            f"plan {verb} {removals} of {plan.managed} contacts ({percent:.1f}%), more than "
            f"deletion.max_delete_percent ({limits.max_delete_percent:g}%)"
        )
    return None
