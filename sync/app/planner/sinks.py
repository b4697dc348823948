"""Where a planning run's decisions go: one pipeline plans, the sink decides whether anything is written.

The streamed users round (sync.app.planner.rounds) and the groups round (sync.app.planner.group_contacts) read the
source and plan the same way for a run and for a dry run; every write they would make goes through a sink:

    StoreSink   a run, under the pair's lease: mark creates `queued`, send the ops, record each page, checkpoint
                the round (renewing the lease), quarantine at the safety gate, save the deltaLinks (invariant 4)
    DrySink     `python -m sync plan`: queues nothing and writes nothing (no mark, no op, no checkpoint, no lease, no
                deltaLink); it keeps in memory only what the round's last page needs of the pages before it

A dry run plans as a new round from the deltaLink: a round in progress is left to the runs, and creates that an
interrupted round may not have sent are shown as they stand (`continues` is False).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Protocol

from sync.app.planner import group_round
from sync.app.wiring.runtime import Runtime
from sync.contract.ops import ContactOp, OpKind
from sync.contract.pairs import TenantPair
from sync.contract.vocabulary import QuarantineKind, RunOutcome
from sync.state.pair_state import RoundState
from sync.state.round_pages import PageRecord, RoundSoFar
from sync.state.runs import RunRecord

log = logging.getLogger("ctcs.planning")


class Sink(Protocol):
    @property
    def continues(self) -> bool:
        """True: the round in progress is resumed, and creates an interrupted round may not have sent go out again.
        False (the dry run): a new round from the deltaLink, queued creates as they stand."""
        ...

    # -- the users round, page by page ---------------------------------------------------------------------------
    def begin_round(self, round_: RoundState) -> None:
        """A new round (or one restarted after an expired checkpoint): saved, other rounds' page records forgotten."""

    def keep_groups(self, round_id: str, groups: group_round.GroupRound) -> None:
        """The round's group scoping, for its later invocations."""

    def queue(self, ops: Sequence[ContactOp], *, round_id: str, page: int) -> None:
        """Mark the creates `queued` (with the round and page that marked them), then send every op."""

    def record_page(self, round_id: str, record: PageRecord) -> None:
        """What a page saw, for the round's last page."""

    def earlier_pages(self, round_id: str, before_page: int) -> RoundSoFar:
        """The pages of the round before `before_page`, folded."""
        ...

    def checkpoint(self, round_: RoundState) -> None:
        """The round as far as its queued pages (the lease renewed)."""

    def stop_round(self, reason: str, *, abandoned: Mapping[str, int]) -> None:
        """The safety gate stopped the round: quarantine the pair, drop the round, keep the deltaLink (invariant 5)."""

    def finish_round(self, round_: RoundState, *, outcome: RunOutcome, delta_link: str, definition: str) -> None:
        """The last page is queued: the round's group graph becomes current and its deltaLink is saved."""

    # -- a groups round, or the contacts of a kind the pair dropped ----------------------------------------------
    def quarantine(self, reason: str) -> None:
        """The safety gate stopped a round read and planned whole: nothing of it is queued."""

    def begin_groups_round(self, round_id: str) -> None:
        """The groups round's creates are about to be marked `queued`."""

    def finish_groups_round(self, *, delta_link: str, definition: str) -> None:
        """Every op of the groups round is queued: keep its deltaLink."""

    def drop_users(self, ops: Sequence[ContactOp], *, outcome: RunOutcome) -> None:
        """The pair's `objects` left users out: send the removals and drop the users deltaLink."""


class StoreSink:
    """A run's writes, under the pair's lease (`run.run_id` owns it)."""

    def __init__(self, rt: Runtime, pair: TenantPair, run: RunRecord) -> None:
        self.rt, self.pair, self.run = rt, pair, run

    @property
    def continues(self) -> bool:
        return True

    def begin_round(self, round_: RoundState) -> None:
        self.checkpoint(round_)
        self.rt.stores.round_pages.forget(self.pair.id, keep={round_.round_id})

    def keep_groups(self, round_id: str, groups: group_round.GroupRound) -> None:
        group_round.stash(self.rt.stores.groups, self.pair.id, round_id, groups)

    def queue(self, ops: Sequence[ContactOp], *, round_id: str, page: int) -> None:
        stores = self.rt.stores
        creates = [op for op in ops if op.kind is OpKind.CREATE]
        stores.contacts.mark_queued(self.pair.id, creates, round_id=round_id, page=page)
        stores.ops.send_all(ops)
        stores.removals.record(self.pair, ops)  # the safety gate's window counts them

    def record_page(self, round_id: str, record: PageRecord) -> None:
        self.rt.stores.round_pages.save(self.pair.id, round_id, record)

    def earlier_pages(self, round_id: str, before_page: int) -> RoundSoFar:
        return self.rt.stores.round_pages.load(self.pair.id, round_id, before_page=before_page)

    def checkpoint(self, round_: RoundState) -> None:
        self.rt.stores.pair_state.save_round(self.pair.id, self.run.run_id, round_,
                                             lease_seconds=self.rt.tuning.lease_seconds, generation=self.pair.generation)

    def stop_round(self, reason: str, *, abandoned: Mapping[str, int]) -> None:
        stores = self.rt.stores
        self.quarantine(reason)
        stores.pair_state.drop_round(self.pair.id, self.run.run_id, abandoned=abandoned)
        stores.round_pages.forget(self.pair.id)

    def finish_round(self, round_: RoundState, *, outcome: RunOutcome, delta_link: str, definition: str) -> None:
        stores = self.rt.stores
        group_round.promote(stores.groups, self.pair, round_.round_id)
        stores.pair_state.finish_round(
            self.pair.id, self.run.run_id, run_id=self.run.run_id, outcome=outcome, delta_link=delta_link,
            definition=definition, full_request_seen=round_.full_request_seen, generation=self.pair.generation,
        )
        stores.round_pages.forget(self.pair.id)

    def quarantine(self, reason: str) -> None:
        self.rt.stores.pair_state.quarantine(self.pair.id, reason)
        log.warning("pair %s quarantined: %s", self.pair.id, reason,
                    extra={"pair_id": self.pair.id, "run_id": self.run.run_id,
                           "outcome": RunOutcome.QUARANTINED.value, "quarantine_kind": QuarantineKind.GATE.value,
                           "reason": reason})

    def begin_groups_round(self, round_id: str) -> None:
        self.rt.stores.pair_state.begin_groups_round(self.pair.id, self.run.run_id, round_id,
                                                     generation=self.pair.generation)

    def finish_groups_round(self, *, delta_link: str, definition: str) -> None:
        self.rt.stores.pair_state.finish_groups_round(self.pair.id, self.run.run_id, delta_link=delta_link,
                                                      definition=definition, generation=self.pair.generation)

    def drop_users(self, ops: Sequence[ContactOp], *, outcome: RunOutcome) -> None:
        self.rt.stores.ops.send_all(ops)
        self.rt.stores.removals.record(self.pair, ops)
        self.rt.stores.pair_state.record_run(self.pair.id, run_id=self.run.run_id, outcome=outcome, delta_link="")


class DrySink:
    """The dry run: nothing is written anywhere; the pages a round planned are remembered for its last page."""

    def __init__(self) -> None:
        self._pages: dict[str, list[PageRecord]] = {}

    @property
    def continues(self) -> bool:
        return False

    def begin_round(self, round_: RoundState) -> None:
        self._pages = {round_.round_id: []}

    def keep_groups(self, round_id: str, groups: group_round.GroupRound) -> None:
        pass

    def queue(self, ops: Sequence[ContactOp], *, round_id: str, page: int) -> None:
        pass

    def record_page(self, round_id: str, record: PageRecord) -> None:
        self._pages.setdefault(round_id, []).append(record)

    def earlier_pages(self, round_id: str, before_page: int) -> RoundSoFar:
        folded = RoundSoFar()
        for record in sorted(self._pages.get(round_id, []), key=lambda record: record.page):
            if record.page < before_page:
                folded.add(record)
        return folded

    def checkpoint(self, round_: RoundState) -> None:
        pass

    def stop_round(self, reason: str, *, abandoned: Mapping[str, int]) -> None:
        pass

    def finish_round(self, round_: RoundState, *, outcome: RunOutcome, delta_link: str, definition: str) -> None:
        pass

    def quarantine(self, reason: str) -> None:
        pass

    def begin_groups_round(self, round_id: str) -> None:
        pass

    def finish_groups_round(self, *, delta_link: str, definition: str) -> None:
        pass

    def drop_users(self, ops: Sequence[ContactOp], *, outcome: RunOutcome) -> None:
        pass
