"""Source changes + state rows + pair policy → an ordered plan of contact ops (pure).

Like a DNS-as-code plan: desired state is computed, diffed against what was applied, and the result checked
against the pair's delete thresholds before anything is queued.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sync.contract.ops import KIND_ORDER, ContactOp, OpKind
from sync.contract.pairs import TenantPair
from sync.contract.summaries import StateSummary
from sync.contract.vocabulary import ContactStatus, ObjectKind
from sync.core.group_mapping import GroupMapper
from sync.core.group_scope import decide_group_scope
from sync.core.managers import ManagerLinks, partial_contact
from sync.core.mapping import ContactMapper, Mapped
from sync.core.scope import ScopeDecision, decide_scope
from sync.core.source import DeltaRound, SourceUser

# Below this many managed contacts the percentage threshold is not applied: deleting 1 of 5 is 20%.
MIN_CONTACTS_FOR_PERCENT_GATE = 10


@dataclass
class Skip:
    source_id: str
    reason: str
    name: str


def removal_key(source_id: str) -> str:
    """How the gate's window names a removed contact: short, so a day of removals fits in one table row."""
    return hashlib.sha256(source_id.lower().encode()).hexdigest()[:12]


@dataclass(frozen=True)
class RemovalWindow:
    """What the pair's queued plans removed over the last `hours` (sync.state.removals keeps it): the safety gate
    counts these with a plan's own removals, so many small plans cannot remove what one large one may not. A contact
    removed again in the window (a hidden leaver shown by hand and hidden again) is counted once."""

    hours: int = 0  # 0: no window known (the gate is per plan only)
    hidden: int = 0  # contacts hidden in the window
    deleted: int = 0  # contacts deleted in the window (they no longer count as managed)
    keys: frozenset[str] = frozenset()  # `removal_key` of each contact counted (all, or the first few thousand)

    @property
    def removed(self) -> int:
        return self.hidden + self.deleted


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
    ops_left_out: Counter[str] = field(default_factory=Counter)  # merged ops not kept (`merge`), by kind
    skips_left_out: Counter[str] = field(default_factory=Counter)  # merged skips not kept, by reason
    kind: ObjectKind = ObjectKind.USER  # the objects this plan is about (a run plans users and groups apart)
    window: RemovalWindow = field(default_factory=RemovalWindow)  # what the pair removed lately

    def count(self, kind: OpKind) -> int:
        return sum(1 for op in self.ops if op.kind is kind) + self.ops_left_out[kind.value]

    @property
    def skipped_by_reason(self) -> Counter[str]:
        return Counter(skip.reason for skip in self.skips) + self.skips_left_out

    def merge(self, other: Plan, *, keep_ops: bool = True) -> None:
        """Add another page's plan to this one (the plan of a run that planned several pages). Without `keep_ops`
        only the counts are kept: a 100,000-user round's ops do not all stay in memory."""
        if keep_ops:
            self.ops.extend(other.ops)
            self.skips.extend(other.skips)
        else:
            self.ops_left_out.update(op.kind.value for op in other.ops)
            self.skips_left_out.update(skip.reason for skip in other.skips)
        self.ops_left_out.update(other.ops_left_out)
        self.skips_left_out.update(other.skips_left_out)
        self.unchanged += other.unchanged
        self.managed = self.managed or other.managed
        self.window = self.window if self.window.hours else other.window
        self.kept.update(other.kept)
        self.warnings.update(other.warnings)

    def counts(self) -> dict[str, int]:
        counts = {kind.value: self.count(kind) for kind in OpKind}
        counts["unchanged"] = self.unchanged
        counts.update({f"skipped_{reason}": n for reason, n in sorted(self.skipped_by_reason.items())})
        counts.update({f"kept_{status}": n for status, n in sorted(self.kept.items())})
        if self.kind is ObjectKind.GROUP:  # a run's counts hold both: users' as they always were, groups' prefixed
            return {f"groups_{name}": n for name, n in counts.items()}
        return counts


@dataclass(frozen=True)
class SendLedger:
    """Which `queued` rows of a streamed round may have no message on the queue.

    A page's creates are marked `queued` (with the round and page) before they are sent, and the page's checkpoint
    is saved only after every one was sent. So a row marked by the round in progress at its checkpoint page or later,
    or by an abandoned round at or after the page it stopped at, may have been marked and never sent (a crash, a
    timeout): re-planning sends its create again. A row marked by an earlier page of this round was sent: a second
    appearance of the user in the same round, or the restart of an abandoned round, does not send it twice. Rows
    queued by a round that completed are not known here: a full round sends those again (their message may have
    outlived the queue's 7-day time to live while Exchange held it back)."""

    round_id: str = ""
    confirmed_pages: int = 0  # this round's pages 0 .. confirmed_pages - 1 are on the queue
    abandoned: Mapping[str, int] = field(default_factory=dict)  # round id -> first page not known to be queued

    def unsent(self, row: StateSummary) -> bool:
        if not row.queued_round:
            return False
        if row.queued_round == self.round_id:
            return row.queued_page >= self.confirmed_pages
        first = self.abandoned.get(row.queued_round)
        return first is not None and row.queued_page >= first

    def known_sent(self, row: StateSummary) -> bool:
        """Marked by a page of this round, or of an abandoned one, whose checkpoint was saved: its create is on the
        queue, so even a full round does not send it twice."""
        if not row.queued_round:
            return False
        if row.queued_round == self.round_id:
            return row.queued_page < self.confirmed_pages
        first = self.abandoned.get(row.queued_round)
        return first is not None and row.queued_page < first


@dataclass(frozen=True)
class EarlierPages:
    """What the pages of a streamed round before this one decided (sync.state.round_pages keeps it)."""

    seen: Collection[str] = ()  # every id they showed
    leaving: Mapping[str, str] = field(default_factory=dict)  # removals held back for the round's end: id -> reason
    placed: Collection[str] = ()  # ids that got a create, update or restore


@dataclass(frozen=True)
class Baseline:
    """What a page is planned against: the pair's state rows of the page's kind, and what the run knows beside the
    page. A full round sweeps every row of `state`, so it must hold the rows of that kind only."""

    state: Mapping[str, StateSummary]
    memberships: Mapping[str, frozenset[str]] | None = None  # each user's tracked groups, nested included (group scoping)
    hidden_ids: frozenset[str] | None = None  # whom the source's Exchange hides (None: Graph's showInAddressList decides)
    managed: int | None = None  # the pair's managed contacts for the gate's percentage (users and groups); None: `state`'s
    window: RemovalWindow = field(default_factory=RemovalWindow)  # what the pair removed in its gate's window
    adopted: frozenset[str] = frozenset()  # source ids whose contacts `python -m sync adopt` took over


@dataclass(frozen=True)
class PlanOptions:
    """How a run plans: the version and run id its ops carry, and the rules it plans by."""

    version: int
    run_id: str
    retry_kept: bool = False  # re-plan conflict/failed rows (a full round does)
    now: datetime | None = None  # decides which hidden contacts have outlived `deletion.grace_days` (None: none purged)
    ledger: SendLedger = field(default_factory=SendLedger)  # which queued creates may never have reached the queue
    kind: ObjectKind = ObjectKind.USER  # the page's objects: users, or groups
    sweep_reason: str = "not_in_source"  # why a full round removes a contact whose object it did not show


def plan_pair(pair: TenantPair, round_: DeltaRound, baseline: Baseline, options: PlanOptions) -> Plan:
    """Every op needed to bring the target in line with a whole round (a round of one page: `plan_page`'s last)."""
    return plan_page(pair, round_, baseline, options, last=True)


def plan_page(
    pair: TenantPair,
    page: DeltaRound,
    baseline: Baseline,
    options: PlanOptions,
    *,
    last: bool,
    earlier: EarlierPages | None = None,
) -> Plan:
    """The ops of one page of a round (`page.full` says whether the round is full).

    Every page decides its own users: creates, updates and restores, and removals (which the caller may hold back
    until the round ends). The `last` page also does what needs the whole round, in the order a one-page round
    always did: the removals `earlier` pages held back (unless this page shows the user again), users the source's
    Exchange hides without a Graph change, the full round's sweep of users no page showed, then the mapping (a
    Manager is linked only to a contact that stays), manager link fix-ups, and staged deletes past their grace.
    `options.ledger` says which queued creates may never have reached the queue (see `SendLedger`).

    `options.kind` says what the page's objects are: users, or groups (`page.users` then holds groups, scoped and
    mapped by sync.core.group_scope and sync.core.group_mapping; the rules from here on are the same)."""
    state, hidden_ids, now = baseline.state, baseline.hidden_ids, options.now
    earlier = earlier or EarlierPages()
    planner = _Planner(pair, state, options, full=page.full)
    if baseline.managed is not None:
        planner.plan.managed = baseline.managed
    planner.plan.window = baseline.window
    planner.adopted = baseline.adopted
    in_scope = planner.decide(page, baseline.memberships, hidden_ids)
    here = set(page.users) | set(page.removed)
    if last:
        for source_id, reason in earlier.leaving.items():
            if source_id not in here:
                planner.remove(source_id, state.get(source_id), reason)
        seen = here | set(earlier.seen)
        if hidden_ids:
            # Hidden in the source's Exchange since the last run, without any change Graph would report.
            for source_id, row in state.items():
                if source_id.lower() in hidden_ids and source_id not in seen:
                    planner.remove(source_id, row, "left_scope:hidden_from_gal")
        if page.full:
            # A full round shows every user that exists: a contact whose user it did not show has lost its source.
            for source_id, row in state.items():
                if source_id not in seen:
                    planner.remove(source_id, row, options.sweep_reason)
        links = planner.map(in_scope)
        touched = seen | planner.decided | {op.source_id for op in planner.plan.ops}
        for fix in links.fixups(touched=touched):
            planner.emit(OpKind.UPDATE, fix.source_id, fix.reason, partial_contact(fix), partial=True,
                         manager_id=fix.manager_id)
        if pair.deletion.mode == "hide_then_delete" and now is not None:
            placed = {op.source_id for op in planner.plan.ops} | set(earlier.placed)
            _purge_expired(planner, pair, state, now, placed | {i for i in state if planner.hides_adopted(i)})
    else:
        planner.map(in_scope, leaving=earlier.leaving.keys())
    planner.plan.ops.sort(key=lambda op: (KIND_ORDER[op.kind], op.source_id))
    return planner.plan


class _Planner:
    """The decisions of one plan (`plan_page`), kept together: ops emitted, users whose removal is decided."""

    def __init__(self, pair: TenantPair, state: Mapping[str, StateSummary], options: PlanOptions, *, full: bool) -> None:
        self.pair, self.state, self.version, self.run_id = pair, state, options.version, options.run_id
        self.retry_kept, self.ledger, self.kind = options.retry_kept, options.ledger, options.kind
        kind = options.kind
        self.plan = Plan(pair.id, options.run_id, options.version, full,
                         managed=sum(1 for row in state.values() if row.managed), kind=kind)
        self.mapper: ContactMapper | GroupMapper = GroupMapper(pair) if kind is ObjectKind.GROUP else ContactMapper(pair)
        self.decided: set[str] = set()
        self.adopted: frozenset[str] = frozenset()

    def emit(self, kind: OpKind, source_id: str, reason: str, contact: dict[str, object] | None = None,
             digest: str = "", *, partial: bool = False, manager_id: str = "") -> None:
        self.plan.ops.append(ContactOp(self.pair.id, self.run_id, kind, source_id, self.version, reason, contact,
                                       digest, partial, manager_id, object_kind=self.kind,
                                       generation=self.pair.generation))

    def remove(self, source_id: str, row: StateSummary | None, reason: str) -> None:
        """The user is gone or out of scope: delete its contact, or hide it when deletes are staged (once)."""
        if row is None or not row.live or source_id in self.decided:
            return
        self.decided.add(source_id)
        if row.status is ContactStatus.RELEASED:
            return  # not ours any more: neither deleted nor hidden (invariant 1)
        if self.pair.deletion.mode == "delete" and not self.hides_adopted(source_id):
            self.emit(OpKind.DELETE, source_id, reason)
        elif row.status is not ContactStatus.HIDDEN:
            self.emit(OpKind.HIDE, source_id, reason)

    def hides_adopted(self, source_id: str) -> bool:
        """A contact `python -m sync adopt` took over was the target's before ctcs: its leaver is hidden, never
        deleted, unless the pair's `deletion.adopted` says to follow `deletion.mode`."""
        return source_id in self.adopted and self.pair.deletion.adopted == "hide"

    def decide(self, page: DeltaRound, memberships: Mapping[str, frozenset[str]] | None,
               hidden_ids: frozenset[str] | None) -> list[tuple[str, SourceUser, str]]:
        """Scope every user of the page; removals for those out of scope or removed. Returns the users in scope,
        to be mapped once removals are known (Manager depends on them)."""
        in_scope: list[tuple[str, SourceUser, str]] = []
        for source_id, user in page.users.items():
            row = self.state.get(source_id)
            groups = memberships.get(source_id, frozenset()) if memberships else frozenset()
            hidden = None if hidden_ids is None else source_id.lower() in hidden_ids
            decision = self._scope(user, groups, hidden)
            if not decision.in_scope:
                assert decision.reason is not None
                if row is not None and row.live:
                    self.remove(source_id, row, f"left_scope:{decision.reason}")
                else:
                    self.plan.skips.append(Skip(source_id, decision.reason, str(user.get("displayName") or "")))
                continue
            in_scope.append((source_id, user, decision.address))
        for source_id, reason in page.removed.items():
            self.remove(source_id, self.state.get(source_id), f"removed:{reason}")
        return in_scope

    def _scope(self, obj: SourceUser, groups: frozenset[str], hidden: bool | None) -> ScopeDecision:
        if self.kind is ObjectKind.GROUP:
            return decide_group_scope(self.pair, obj, hidden)
        return decide_scope(self.pair, obj, groups, hidden)

    def map(self, in_scope: list[tuple[str, SourceUser, str]], *, leaving: Collection[str] = ()) -> ManagerLinks:
        links = ManagerLinks.build(enabled=self.mapper.links_managers, full=self.plan.full, state=self.state,
                                   leaving=self.decided | set(leaving))
        for source_id, user, address in in_scope:
            manager_id = links.manager_of(source_id, user)
            mapped = self.mapper.map(user, address, manager=links.desired(manager_id))
            for warning in mapped.warnings:
                self.plan.warnings[warning.split(":", 1)[0]] += 1
            placed = _place(self.plan, self.state.get(source_id), mapped, retry_kept=self.retry_kept,
                            manager_id=manager_id, ledger=self.ledger)
            if placed is not None:
                self.emit(placed[0], source_id, placed[1], mapped.contact, mapped.hash, manager_id=manager_id)
        return links


def _place(
    plan: Plan, row: StateSummary | None, mapped: Mapped, *, retry_kept: bool, manager_id: str, ledger: SendLedger
) -> tuple[OpKind, str] | None:
    """The op (kind, reason) one in-scope user's contact needs, or None (counted as unchanged or kept).
    A changed manager id alone makes an update too (the worker then sends nothing), so the state row learns
    whom later link fix-ups must follow."""
    same = row is not None and row.hash == mapped.hash and row.manager_id == manager_id
    if row is None or not row.live:
        return OpKind.CREATE, "new" if row is None else "returned"
    if row.status is ContactStatus.RELEASED:
        plan.kept[ContactStatus.RELEASED.value] += 1  # an admin took the contact over: never written again
        return None
    if row.status is ContactStatus.HIDDEN:
        return OpKind.RESTORE, "returned"
    if row.status is ContactStatus.QUEUED:
        # Its create is on the queue: leave it, unless the user changed since, a full round re-checks (not twice in
        # one round), or the page that marked it never finished sending.
        if same and ledger.unsent(row):
            return OpKind.CREATE, "resent"
        if same and (not retry_kept or ledger.known_sent(row)):
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
    planner: _Planner, pair: TenantPair, state: Mapping[str, StateSummary], now: datetime, placed: Collection[str]
) -> None:
    """Hidden contacts past their grace period are deleted (the safety gate counts them like any delete).
    A hidden user who came back in this round (`placed`: it already has a restore op) is left alone."""
    cutoff = now - timedelta(days=pair.deletion.grace_days)
    for source_id, row in state.items():
        if row.status is ContactStatus.HIDDEN and row.hidden_at is not None and row.hidden_at <= cutoff and source_id not in placed:
            planner.emit(OpKind.DELETE, source_id, f"grace_expired:{pair.deletion.grace_days}d")


def unsafe_reason(plan: Plan, pair: TenantPair, *, earlier_removals: int = 0) -> str | None:
    """Why the plan's removals (deletes and hides) exceed the pair's thresholds, or None when they do not.
    A reason stops the run before anything is queued and quarantines the pair (invariant 5). `earlier_removals`:
    what the same run queued before (a groups round counts the users round's removals: one limit per pair).

    The limits hold per plan and over the pair's window (`plan.window`: `deletion.window_hours`): the plan's removals
    plus those queued in the window may not pass them either (the same run's earlier removals are in the window
    already, once queued). The window's percentage is of the contacts managed when it began: those managed now plus
    those deleted in it."""
    own = sum(1 for op in plan.ops if op.kind.removes)
    removals = own + earlier_removals
    verb = "deletes" if pair.deletion.mode == "delete" else "removes (hides or deletes)"
    over = _over_limits(removals, plan.managed, pair)
    if over:
        return f"plan {verb} {over}"
    window = plan.window
    if not window.hours or not window.removed or not own:
        return None
    again = sum(1 for op in plan.ops if op.kind.removes and removal_key(op.source_id) in window.keys)
    over = _over_limits(own + window.removed - again, plan.managed + window.deleted, pair)
    if over:
        return (f"over the last {window.hours} h (deletion.window_hours) the pair {verb} {over}: "
                f"{own} in this plan, {window.removed - again} more queued earlier in the window")
    return None


def _over_limits(removals: int, managed: int, pair: TenantPair) -> str | None:
    limits = pair.deletion
    if removals > limits.max_deletes:
        return f"{removals} contacts, more than deletion.max_deletes ({limits.max_deletes})"
    if managed >= MIN_CONTACTS_FOR_PERCENT_GATE and removals * 100 > limits.max_delete_percent * managed:
        percent = removals * 100 / managed
        return (f"{removals} of {managed} contacts ({percent:.1f}%), more than "
                f"deletion.max_delete_percent ({limits.max_delete_percent:g}%)")
    return None
