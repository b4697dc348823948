"""A planning round of one pair, streamed: read a page, plan it, queue its ops, save the checkpoint; page after page.

    page k:  read (the next page is already on its way) → plan (pure, sync.core.plan.plan_page) → mark the creates
             `queued` (with round and page) → send the ops → record what the page saw → checkpoint: the round's
             link becomes page k's nextLink, in PairState, with the lease renewed. The writes of two pages may be
             under way at once; checkpoints are saved in page order (sync.app.planner.page_writer).
    last:    the page with the deltaLink also does what needs the whole round: the removals earlier pages held back,
             users hidden in the source's Exchange, the full round's sweep, manager link fix-ups, expired staged
             deletes; the safety gate counts all of it; then the ops are queued and the deltaLink saved (invariant 4)

Nothing a page decides is lost if the invocation dies: its checkpoint moves only after its ops are on the queue, and
a resumed round re-plans the page with the same version, so the ops it sends again are the very same ops (the worker
applies an op once), and creates marked but never sent are sent (`SendLedger`). Removals wait for the last page, so
a mass removal spread over many pages is stopped whole (invariant 5). A budget (`CTCS_PLANNER_BUDGET_SECONDS`) stops
an invocation after the page it is on; the caller hands the rest of the round to the next one.

A checkpoint whose nextLink Graph no longer accepts (expired, reset) restarts the round: the round is abandoned, with
the page it had reached noted so its unsent creates are still sent, and a new round starts from the deltaLink (a full
one from scratch). A deltaLink that expired turns the round full, as before.

Every write goes through the round's sink (sync.app.planner.sinks): a run's `StoreSink`, or the dry run's `DrySink`
(`python -m sync plan`), which plans the same pages the same way and writes nothing.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

from sync.app.planner import group_round
from sync.app.planner.group_contacts import split_rows
from sync.app.planner.page_writer import PageWriter
from sync.app.planner.sinks import Sink
from sync.app.wiring.runtime import Runtime
from sync.contract.ops import ContactOp, OpKind
from sync.contract.pairs import TenantPair
from sync.contract.summaries import StateSummary
from sync.contract.vocabulary import ContactStatus, RunOutcome
from sync.core.plan import (
    Baseline,
    EarlierPages,
    Plan,
    PlanOptions,
    RemovalWindow,
    SendLedger,
    plan_page,
    unsafe_reason,
)
from sync.core.source import DeltaPage, DeltaRound, Source
from sync.errors import DeltaTokenExpired, SourceError
from sync.state.entities import iso, now_utc
from sync.state.groups import GroupScopeState
from sync.state.ownership import adopted_ids, with_released
from sync.state.pair_state import MAX_ABANDONED, PairStatus, RoundState
from sync.state.round_pages import record_of
from sync.state.runs import RunRecord

log = logging.getLogger("ctcs.planning")

MAX_RESTARTS = 2  # expired checkpoints one invocation restarts its round for; one more fails the run
OnPage = Callable[["RoundProgress"], None]


@dataclass(frozen=True)
class Invocation:
    """How far one planner invocation goes on its round, and what it hands back."""

    budget_seconds: float | None = None  # stop after the page on which this ran out (None: read the whole round)
    keep_ops: bool = True  # the result's plan keeps every op (the CLI shows them); else counts only, whatever the size
    on_page: OnPage | None = None  # told after every page (the CLI's progress)


@dataclass
class RoundProgress:
    """What one invocation did to its pair's round (run_pair turns it into the run's record)."""

    round_id: str
    full: bool
    plan: Plan  # the pages this invocation planned, merged (ops kept only when asked)
    pages: int = 0
    users: int = 0  # objects its pages held
    queued: int = 0  # ops it queued
    requests: int = 0  # Graph requests it made
    finished: bool = False  # the round's last page is queued (or the round was stopped by the safety gate)
    quarantine_reason: str = ""
    round_queued: int = 0  # ops the whole round queued, over all its invocations
    deletes_allowed: bool = False  # the round passes the safety gate once (allow_deletes, on any of its runs)

    @property
    def outcome(self) -> RunOutcome:
        if self.quarantine_reason:
            return RunOutcome.QUARANTINED
        if not self.finished:
            return RunOutcome.CONTINUED
        return RunOutcome.PLANNED if self.round_queued else RunOutcome.NO_CHANGES


def new_round_id() -> str:
    return f"{datetime.now(UTC):%Y%m%dT%H%M%S}-{secrets.token_hex(4)}"


def version_now() -> int:
    return time.time_ns() // 1000


@dataclass
class StreamedRound:
    """One invocation's work on a pair's round (it holds the pair's lease)."""

    rt: Runtime
    pair: TenantPair
    run: RunRecord
    select: tuple[str, ...]
    definition: str
    sink: Sink  # where its writes go: StoreSink for a run, DrySink for the dry run (sync.app.planner.sinks)
    full: bool = False
    allow_deletes: bool = False
    invocation: Invocation = field(default_factory=Invocation)
    started: float = field(default_factory=time.monotonic)
    _state: dict[str, StateSummary] = field(default_factory=dict)
    _hidden: frozenset[str] | None = None
    _window: RemovalWindow = field(default_factory=RemovalWindow)  # what the pair removed in its gate's window
    _adopted: frozenset[str] = frozenset()  # users whose contacts `python -m sync adopt` took over
    _groups: group_round.GroupRound | None = None
    _leaving_here: dict[str, str] = field(default_factory=dict)  # removals this invocation's pages held back
    _current: RoundState | None = None  # the round as far as this invocation has planned it
    group_rows: dict[str, StateSummary] = field(default_factory=dict)  # groups' rows: the groups round plans those

    @property
    def hidden(self) -> frozenset[str] | None:
        """Whom the source's Exchange hides (None: not granted), as read when the round started."""
        return self._hidden

    # -- the round to work on ------------------------------------------------------------------------------------
    def run_round(self) -> RoundProgress:
        stores = self.rt.stores
        status = stores.pair_state.get(self.pair.id).for_generation(self.pair.generation)
        round_ = self._round_to_work_on(status)
        progress = RoundProgress(round_.round_id, round_.full, Plan(self.pair.id, self.run.run_id, round_.version,
                                                                  round_.full))
        # A users round sees users' rows only: its full-round sweep must not take group contacts for vanished users.
        marks = stores.ownership.marks(self.pair)  # released contacts stay released when their rows are lost
        self._state, self.group_rows = split_rows(with_released(stores.contacts.summaries(self.pair.id), marks))
        self._adopted = adopted_ids(marks)
        self._hidden = self.rt.hidden_ids(self.pair)
        self._window = stores.removals.window(self.pair, self.pair.deletion.window_hours)
        try:
            source = self.rt.open_source(self.pair)
            stored_groups = group_round.load(stores.groups, self.pair)
            restarts = 0
            while True:
                self._groups = self._group_scoping(source, round_, stored_groups, progress)
                try:
                    return self._read(source, round_, stored_groups, progress)
                except DeltaTokenExpired as expired:
                    restarts += 1
                    if restarts > MAX_RESTARTS:
                        raise
                    round_ = self._after_expiry(self._current or round_, status, expired)
                    progress.round_id, progress.full = round_.round_id, round_.full
        finally:  # a run that fails part way still says which round it worked on, and how far it got
            self.run.round_id, self.run.full, self.run.pages = progress.round_id, progress.full, progress.pages
            self.run.graph_requests = progress.requests

    def _round_to_work_on(self, status: PairStatus) -> RoundState:
        """The round in progress, or a new one (saved, so a crash before its first checkpoint resumes it)."""
        stale = status.definition_hash not in ("", self.definition)
        stored = group_round.load(self.rt.stores.groups, self.pair)
        want_full = self.full or status.force_full or stale or group_round.needs_full_round(self.pair, stored)
        continues = self.sink.continues  # the dry run plans a new round from the deltaLink
        abandoned = dict(status.abandoned) if continues else {}
        current = status.round if continues else None
        if current is not None and (current.definition != self.definition or (want_full and not current.full)):
            log.warning("pair %s: round %s is given up at page %d (%s)", self.pair.id, current.round_id, current.page,
                        "the pair's scope or mapping changed" if current.definition != self.definition
                        else "a full round was asked for")
            abandoned[current.round_id] = current.page
            current = None
        if current is None:
            full = want_full or not status.delta_link
            current = RoundState(
                round_id=new_round_id(), full=full, link="" if full else status.delta_link, version=version_now(),
                definition=self.definition, trigger=self.run.trigger.value, allow_deletes=self.allow_deletes,
                full_request_seen=status.full_requested_at, started_at=iso(now_utc()),
                abandoned=_trimmed(abandoned),
            )
            self.sink.begin_round(current)
        elif self.allow_deletes and not current.allow_deletes:
            current = replace(current, allow_deletes=True)
            self.sink.checkpoint(current)
        return current

    def _after_expiry(self, round_: RoundState, status: PairStatus, expired: DeltaTokenExpired) -> RoundState:
        if round_.page == 0 and round_.full:
            raise expired  # even a fresh full round is refused: a failed run, not a loop
        if round_.page == 0:
            log.warning("pair %s: delta token no longer valid (%s); starting a full round", self.pair.id, expired)
            restarted = replace(round_, full=True, link="")
        else:
            log.warning("pair %s: the checkpoint of round %s (page %d) is no longer valid (%s); the round starts again",
                        self.pair.id, round_.round_id, round_.page, expired)
            full = round_.full or not status.delta_link
            restarted = replace(
                round_, round_id=new_round_id(), full=full, link="" if full else status.delta_link, page=0,
                version=version_now(), started_at=iso(now_utc()), checkpoint_at="", requests=0, counts={},
                abandoned=_trimmed({**round_.abandoned, round_.round_id: round_.page}),
            )
        self.sink.begin_round(restarted)
        return restarted

    def _group_scoping(self, source: Source, round_: RoundState, stored: GroupScopeState | None,
                       progress: RoundProgress) -> group_round.GroupRound | None:
        """The round's group memberships: read once when the round starts, stashed for its later invocations."""
        if not group_round.uses_groups(self.pair):
            return None
        stores = self.rt.stores
        groups = group_round.resume(stores.groups, self.pair, round_.round_id) if round_.page > 0 else None
        if groups is None:
            groups = group_round.begin(source, self.pair, stored, full=round_.full)
            assert groups is not None
            self.sink.keep_groups(round_.round_id, groups)
            progress.requests += groups.requests
        return groups

    # -- pages ---------------------------------------------------------------------------------------------------
    def _read(self, source: Source, round_: RoundState, stored_groups: GroupScopeState | None,
              progress: RoundProgress) -> RoundProgress:
        writer = PageWriter()
        self._current = round_
        try:
            with contextlib.closing(source.read_pages(round_.link or None, self.select)) as pages:
                for page in pages:
                    progress.requests += page.requests
                    progress.pages += 1
                    progress.users += len(page.objects)
                    if page.last:
                        writer.flush()  # the pages before are recorded and checkpointed: the last page reads them
                        self._finish(source, round_, page, stored_groups, progress)
                        if self.invocation.on_page is not None:
                            self.invocation.on_page(progress)
                        return progress
                    round_ = self._current = self._page(round_, page, progress, writer)
                    if self.invocation.on_page is not None:
                        self.invocation.on_page(progress)
                    if self.invocation.budget_seconds is not None and time.monotonic() - self.started >= self.invocation.budget_seconds:
                        writer.flush()
                        log.info("pair %s: round %s handed on at page %d after %.0f s", self.pair.id,
                                 round_.round_id, round_.page, time.monotonic() - self.started)
                        return progress
        finally:
            writer.close()
        raise SourceError("the source ended a round without its deltaLink")

    def _page(self, round_: RoundState, page: DeltaPage, progress: RoundProgress, writer: PageWriter) -> RoundState:
        """Plan a page that is not the last and start its writes (its removals are held back); returns the round as
        its checkpoint will say once the writes are done."""
        delta = page.as_round(full=round_.full)
        plan = self._plan(round_, delta, last=False, earlier=EarlierPages(leaving=self._leaving_here))
        held = {op.source_id: op.reason for op in plan.ops if op.kind.removes}
        plan.ops = [op for op in plan.ops if not op.kind.removes]
        here = set(delta.users) | set(delta.removed)
        for source_id in here:
            self._leaving_here.pop(source_id, None)
        self._leaving_here.update(held)
        self._remember_creates(round_, plan.ops)
        record = record_of(round_.page, here, held, {op.source_id for op in plan.ops})
        counts = Counter(round_.counts)
        counts.update({"queued": len(plan.ops), "pages": 1, "users": len(page.objects)})
        advanced = round_.next_page(page.next_link or "", requests=round_.requests + page.requests, counts=counts)

        def writes() -> None:
            self.sink.queue(plan.ops, round_id=round_.round_id, page=round_.page)
            self.sink.record_page(round_.round_id, record)

        writer.submit(writes, lambda: self.sink.checkpoint(advanced))
        progress.queued += len(plan.ops)
        progress.plan.merge(plan, keep_ops=self.invocation.keep_ops)
        return advanced

    def _finish(self, source: Source, round_: RoundState, page: DeltaPage,
                stored_groups: GroupScopeState | None, progress: RoundProgress) -> None:
        """The last page: plan it with the whole round's knowledge, gate, queue, and close the round."""
        delta = page.as_round(full=round_.full)
        earlier = self.sink.earlier_pages(round_.round_id, round_.page)
        if self._groups is not None and not round_.full:
            seen = earlier.seen | set(delta.users) | set(delta.removed)
            extra, requests = group_round.membership_only_users(
                source, self.pair, stored_groups, self._groups, self._state, seen=seen, select=self.select)
            for user in extra:
                delta.add_user(user)
            progress.requests += requests
        plan = self._plan(round_, delta, last=True,
                          earlier=EarlierPages(earlier.seen, earlier.leaving, earlier.placed))
        reason = unsafe_reason(plan, self.pair)
        progress.finished = True
        progress.deletes_allowed = self.allow_deletes or round_.allow_deletes
        if reason and not progress.deletes_allowed:
            # Invariant 5: no removal is queued and the deltaLink stays, so release re-plans the same changes.
            self.sink.stop_round(reason, abandoned=_trimmed({**round_.abandoned, round_.round_id: round_.page}))
            progress.quarantine_reason = reason
            progress.plan.merge(plan, keep_ops=self.invocation.keep_ops)
            return
        self._queue(round_, plan.ops, progress)
        progress.plan.merge(plan, keep_ops=self.invocation.keep_ops)
        progress.round_queued = int(round_.counts.get("queued", 0)) + len(plan.ops)
        self.sink.finish_round(round_, outcome=progress.outcome, delta_link=page.delta_link or "",
                               definition=self.definition)

    def _plan(self, round_: RoundState, delta: DeltaRound, *, last: bool, earlier: EarlierPages) -> Plan:
        baseline = Baseline(self._state, memberships=self._groups.memberships if self._groups else None,
                            hidden_ids=self._hidden, window=self._window, adopted=self._adopted)
        options = PlanOptions(round_.version + round_.page, self.run.run_id, retry_kept=round_.full,
                              now=datetime.now(UTC), ledger=SendLedger(round_.round_id, round_.page, round_.abandoned))
        return plan_page(self.pair, delta, baseline, options, last=last, earlier=earlier)

    def _queue(self, round_: RoundState, ops: list[ContactOp], progress: RoundProgress) -> None:
        self._remember_creates(round_, ops)
        self.sink.queue(ops, round_id=round_.round_id, page=round_.page)  # creates marked, then every op sent
        progress.queued += len(ops)

    def _remember_creates(self, round_: RoundState, ops: list[ContactOp]) -> None:
        """What the table says once the creates are marked, for a later page of this invocation that shows the
        user again."""
        for op in ops:
            if op.kind is not OpKind.CREATE:
                continue
            row = self._state.get(op.source_id)
            self._state[op.source_id] = StateSummary(
                ContactStatus.QUEUED, op.hash, row.version if row else 0, row.guid if row else "",
                manager_id=op.manager_id, queued_round=round_.round_id, queued_page=round_.page,
            )


def _trimmed(abandoned: Mapping[str, int]) -> dict[str, int]:
    """The most recent abandoned rounds (round ids sort by time)."""
    return dict(sorted(abandoned.items())[-MAX_ABANDONED:])
