"""Source changes + state rows + pair policy → an ordered plan of contact ops (pure).

Like a DNS-as-code plan: desired state is computed, diffed against what was applied, and the result checked
against the pair's delete thresholds before anything is queued.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field

from sync.errors import UnsafePlan
from sync.mapping import ContactMapper
from sync.ops import KIND_ORDER, ContactOp, OpKind
from sync.pairs import TenantPair
from sync.scope import decide_scope
from sync.source import DeltaRound

# Below this many managed contacts the percentage threshold is not applied: deleting 1 of 5 is 20%.
MIN_CONTACTS_FOR_PERCENT_GATE = 10


@dataclass(slots=True)
class StateSummary:
    """What planning needs to know of one ContactState row."""

    status: str  # ok | conflict | failed | deleted
    hash: str
    version: int
    guid: str = ""

    @property
    def live(self) -> bool:
        """A contact exists (or may exist) in the target for this user."""
        return self.status != "deleted"


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
) -> Plan:
    """Every op needed to bring the target in line with the round. `retry_kept` re-plans conflict/failed rows;
    `memberships` gives each user's tracked groups (nested included) when the pair scopes by group."""
    plan = Plan(pair.id, run_id, version, round_.full, managed=sum(1 for row in state.values() if row.live))
    mapper = ContactMapper(pair)

    def emit(kind: OpKind, source_id: str, reason: str, contact: dict[str, object] | None = None, digest: str = "") -> None:
        plan.ops.append(ContactOp(pair.id, run_id, kind, source_id, version, reason, contact, digest))

    for source_id, user in round_.users.items():
        row = state.get(source_id)
        decision = decide_scope(pair, user, memberships.get(source_id, frozenset()) if memberships else frozenset())
        if not decision.in_scope:
            assert decision.reason is not None
            if row is not None and row.live:
                emit(OpKind.DELETE, source_id, f"left_scope:{decision.reason}")
            else:
                plan.skips.append(Skip(source_id, decision.reason, str(user.get("displayName") or "")))
            continue
        mapped = mapper.map(user, decision.address)
        for warning in mapped.warnings:
            plan.warnings[warning.split(":", 1)[0]] += 1
        if row is None or not row.live:
            emit(OpKind.CREATE, source_id, "new" if row is None else "returned", mapped.contact, mapped.hash)
        elif row.status in ("conflict", "failed") and not retry_kept and row.hash == mapped.hash:
            plan.kept[row.status] += 1
        elif row.hash == mapped.hash and row.status == "ok":
            plan.unchanged += 1
        else:
            emit(OpKind.UPDATE, source_id, "changed" if row.status == "ok" else f"retry_{row.status}", mapped.contact, mapped.hash)

    for source_id, reason in round_.removed.items():
        row = state.get(source_id)
        if row is not None and row.live:
            emit(OpKind.DELETE, source_id, f"removed:{reason}")

    if round_.full:
        # A full round shows every user that exists: a contact whose user it did not show has lost its source.
        for source_id, row in state.items():
            if row.live and source_id not in round_.users and source_id not in round_.removed:
                emit(OpKind.DELETE, source_id, "not_in_source")

    plan.ops.sort(key=lambda op: (KIND_ORDER[op.kind], op.source_id))
    return plan


def unsafe_reason(plan: Plan, pair: TenantPair) -> str | None:
    """Why the plan's deletes exceed the pair's thresholds, or None when they do not."""
    deletes = plan.count(OpKind.DELETE)
    limits = pair.deletion
    if deletes > limits.max_deletes:
        return f"plan deletes {deletes} contacts, more than deletion.max_deletes ({limits.max_deletes})"
    if plan.managed >= MIN_CONTACTS_FOR_PERCENT_GATE and deletes * 100 > limits.max_delete_percent * plan.managed:
        percent = deletes * 100 / plan.managed
        return (
            f"plan deletes {deletes} of {plan.managed} contacts ({percent:.1f}%), more than "
            f"deletion.max_delete_percent ({limits.max_delete_percent:g}%)"
        )
    return None


def raise_if_unsafe(plan: Plan, pair: TenantPair) -> None:
    reason = unsafe_reason(plan, pair)
    if reason is not None:
        raise UnsafePlan(reason)
