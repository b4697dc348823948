"""Table PairState: per pair, the deltaLink, the planning lease, the quarantine, the last run, and the planning
round in progress (its checkpoint).

A round that takes more than one invocation is carried by its `RoundState`: which round, whether it is full, the
link of the next page to read (the checkpoint), the page's index and the round's version base. Only the run holding
the pair's lease writes it (`save_round`, `finish_round`, `drop_round` check the lease and the row's ETag), and each
checkpoint renews the lease, so a crashed run frees the pair `CTCS_LEASE_SECONDS` after its last page.

The checkpoints (the deltaLinks, the round in progress, the abandoned rounds, the groups round) are stamped with the
pair's generation (`sync.state.pairs`) when written; a run reads them through `PairStatus.for_generation`, so those
of another generation (a removed pair whose id was reused) are ignored and the round starts afresh. A row without a
generation belongs to a pair stored before generations existed.

A quarantine has a kind (`gate`: the safety gate; `credentials`: the pair's sign-in or permissions fail) and, for
credentials, when the timer tests the connection again.
"""

from __future__ import annotations

import contextlib
import json
import logging
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from azure.core import MatchConditions
from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError
from azure.data.tables import TableClient, TableEntity, UpdateMode

from sync.contract.vocabulary import QuarantineKind
from sync.errors import LeaseHeld, LeaseLost
from sync.state.entities import as_int, int64, iso, now_utc, text

log = logging.getLogger("ctcs.state")

PARTITION = "pair"
MAX_ABANDONED = 8  # abandoned rounds remembered until a round completes (each one is a round id and a page)


@dataclass(frozen=True)
class RoundState:
    """A planning round in progress: enough to resume it from its checkpoint in another invocation.

    `link` is the link of page `page` (the next one to read): the deltaLink or "" (a full round) at page 0, then the
    nextLink of the page before. Page `p`'s ops carry version `version + p`, so a re-planned page sends exactly the
    ops it sent before. `abandoned` lists rounds given up before they finished (an expired checkpoint, a changed
    definition), each with the first page whose creates may not have reached the queue."""

    round_id: str
    full: bool
    link: str
    version: int
    page: int = 0
    definition: str = ""
    trigger: str = ""
    allow_deletes: bool = False
    full_request_seen: str = ""
    started_at: str = ""
    checkpoint_at: str = ""
    requests: int = 0
    counts: Mapping[str, int] = field(default_factory=dict)
    abandoned: Mapping[str, int] = field(default_factory=dict)

    def next_page(self, link: str, *, requests: int, counts: Mapping[str, int]) -> RoundState:
        """The round after one more page: its checkpoint moves to `link`."""
        return replace(self, link=link, page=self.page + 1, checkpoint_at=iso(now_utc()), requests=requests,
                       counts=dict(counts))

    def _columns(self) -> dict[str, Any]:
        return {
            "round_id": self.round_id, "round_full": self.full, "round_link": text(self.link), "round_page": self.page,
            "round_version": int64(self.version), "round_definition": self.definition, "round_trigger": self.trigger,
            "round_allow_deletes": self.allow_deletes, "round_full_request_seen": self.full_request_seen,
            "round_started_at": self.started_at, "round_checkpoint_at": self.checkpoint_at,
            "round_requests": self.requests, "round_counts": json.dumps(dict(self.counts), sort_keys=True),
            "round_abandoned": json.dumps(dict(self.abandoned), sort_keys=True),
        }

    @classmethod
    def _from(cls, entity: TableEntity) -> RoundState | None:
        if not entity.get("round_id"):
            return None
        return cls(
            round_id=entity["round_id"], full=bool(entity.get("round_full")), link=entity.get("round_link", ""),
            version=as_int(entity.get("round_version")), page=as_int(entity.get("round_page")),
            definition=entity.get("round_definition", ""), trigger=entity.get("round_trigger", ""),
            allow_deletes=bool(entity.get("round_allow_deletes")),
            full_request_seen=entity.get("round_full_request_seen", ""), started_at=entity.get("round_started_at", ""),
            checkpoint_at=entity.get("round_checkpoint_at", ""), requests=as_int(entity.get("round_requests")),
            counts=json.loads(entity.get("round_counts") or "{}"), abandoned=abandoned_of(entity),
        )


def abandoned_of(entity: TableEntity | None) -> dict[str, int]:
    """Rounds given up with creates that may be unsent (they outlive the round in progress until one finishes)."""
    if entity is None:
        return {}
    raw = json.loads(entity.get("round_abandoned") or "{}")
    return {str(key): int(value) for key, value in raw.items()}


NO_ROUND: dict[str, Any] = {
    "round_id": "", "round_full": False, "round_link": "", "round_page": 0, "round_version": int64(0),
    "round_definition": "", "round_trigger": "", "round_allow_deletes": False, "round_full_request_seen": "",
    "round_started_at": "", "round_checkpoint_at": "", "round_requests": 0, "round_counts": "{}",
}


@dataclass
class PairStatus:
    pair_id: str
    delta_link: str = ""
    last_run_id: str = ""
    last_run_at: str = ""
    last_outcome: str = ""
    quarantine_reason: str = ""
    quarantined_at: str = ""
    lease_owner: str = ""
    lease_until: str = ""
    force_full: bool = False  # next run must be a full round (--full asked for by the HTTP API)
    full_requested_at: str = ""  # when that full round was asked for: a run clears only a request it has seen
    definition_hash: str = ""  # scope + mapping of the last planned run; a change forces a full round
    round: RoundState | None = None  # the planning round in progress, if any
    abandoned: Mapping[str, int] = field(default_factory=dict)  # see RoundState.abandoned
    quarantine_kind: str = ""  # QuarantineKind; a reason without a kind was written by the safety gate
    retest_at: str = ""  # credentials: when the timer tests the connection again
    failed_tests: int = 0  # credentials: connection tests failed since the quarantine began (1 = the first failure)
    reconcile_at: str = ""  # when the last reconcile round looked at the target
    reconcile_run_id: str = ""
    reconcile_counts: Mapping[str, int] = field(default_factory=dict)  # what it repaired, per kind
    reconcile_due_at: str = ""  # when the timer asks for the next one ("" = not scheduled yet)
    groups_delta_link: str = ""  # groups-as-contacts: the groups/delta deltaLink (apart from membership scoping's)
    groups_definition: str = ""  # the groups section and mapping of the last groups round; a change: a full round
    groups_round: str = ""  # a groups round whose creates were marked and may not all be on the queue
    generation: str = ""  # the pair generation that wrote the checkpoints ("" = before generations existed)
    discarded_ops: int = 0  # ops of a replaced pair (another generation) the worker discarded for this id
    discarded_requests: int = 0  # pair-runs requests of a replaced pair the planner discarded for this id
    credentials_epoch: int = 0  # credentials quarantines lifted so far: a failure met before the last lift is stale

    def for_generation(self, generation: str) -> PairStatus:
        """The status as a run of `generation` may use it: checkpoints written by another generation are left out
        (a fresh start: no deltaLink, no round in progress, nothing abandoned, no definition to compare)."""
        if self.generation == generation:
            return self
        return replace(self, delta_link="", definition_hash="", round=None, abandoned={}, groups_delta_link="",
                       groups_definition="", groups_round="", generation=generation)

    @property
    def quarantined(self) -> bool:
        return bool(self.quarantine_reason)

    def lease_held(self, now: datetime) -> bool:
        return bool(self.lease_owner and self.lease_until and datetime.fromisoformat(self.lease_until) > now)
    @property
    def kind(self) -> QuarantineKind | None:
        if not self.quarantined:
            return None
        return QuarantineKind(self.quarantine_kind) if self.quarantine_kind else QuarantineKind.GATE

    @property
    def credentials_quarantined(self) -> bool:
        return self.kind is QuarantineKind.CREDENTIALS

    @property
    def gate_quarantined(self) -> bool:
        return self.kind is QuarantineKind.GATE


def _status(pair_id: str, entity: TableEntity | None) -> PairStatus:
    if entity is None:
        return PairStatus(pair_id)
    return PairStatus(
        pair_id=pair_id,
        delta_link=entity.get("delta_link", ""),
        last_run_id=entity.get("last_run_id", ""),
        last_run_at=entity.get("last_run_at", ""),
        last_outcome=entity.get("last_outcome", ""),
        quarantine_reason=entity.get("quarantine_reason", ""),
        quarantined_at=entity.get("quarantined_at", ""),
        lease_owner=entity.get("lease_owner", ""),
        lease_until=entity.get("lease_until", ""),
        force_full=bool(entity.get("force_full", False)),
        full_requested_at=entity.get("full_requested_at", ""),
        definition_hash=entity.get("definition_hash", ""),
        round=RoundState._from(entity),
        abandoned=abandoned_of(entity),
        quarantine_kind=entity.get("quarantine_kind", ""),
        retest_at=entity.get("retest_at", ""),
        failed_tests=as_int(entity.get("failed_tests")),
        credentials_epoch=as_int(entity.get("credentials_epoch")),
        reconcile_at=entity.get("reconcile_at", ""),
        reconcile_run_id=entity.get("reconcile_run_id", ""),
        reconcile_counts=json.loads(entity.get("reconcile_counts") or "{}"),
        reconcile_due_at=entity.get("reconcile_due_at", ""),
        groups_delta_link=entity.get("groups_delta_link", ""),
        groups_definition=entity.get("groups_definition", ""),
        groups_round=entity.get("groups_round", ""),
        generation=entity.get("generation", ""),
        discarded_ops=as_int(entity.get("discarded_ops")),
        discarded_requests=as_int(entity.get("discarded_requests")),
    )


class PairStateStore:
    def __init__(self, table: TableClient) -> None:
        self.table = table

    def _entity(self, pair_id: str) -> TableEntity | None:
        try:
            return self.table.get_entity(PARTITION, pair_id)
        except ResourceNotFoundError:
            return None

    def get(self, pair_id: str) -> PairStatus:
        return _status(pair_id, self._entity(pair_id))

    def acquire_lease(self, pair_id: str, owner: str, seconds: int, *, now: datetime | None = None) -> None:
        """Take the pair's planning lease, or raise `LeaseHeld` when another live run has it."""
        now = now or now_utc()
        fields = {"lease_owner": owner, "lease_until": iso(now + timedelta(seconds=seconds))}
        entity = self._entity(pair_id)
        try:
            if entity is None:
                self.table.create_entity({"PartitionKey": PARTITION, "RowKey": pair_id, **fields})
                return
            holder, until = entity.get("lease_owner", ""), entity.get("lease_until", "")
            if holder and holder != owner and until and datetime.fromisoformat(until) > now:
                raise LeaseHeld(f"pair {pair_id!r} is being planned by run {holder} until {until}")
            self.table.update_entity(
                {"PartitionKey": PARTITION, "RowKey": pair_id, **fields},
                mode=UpdateMode.MERGE,
                etag=entity.metadata["etag"],
                match_condition=MatchConditions.IfNotModified,
            )
        except (ResourceExistsError, ResourceModifiedError):
            raise LeaseHeld(f"pair {pair_id!r} was claimed by another run at the same moment") from None

    def release_lease(self, pair_id: str, owner: str) -> None:
        entity = self._entity(pair_id)
        if entity is not None and entity.get("lease_owner") == owner:
            self._merge(pair_id, lease_owner="", lease_until="")

    def record_run(
        self,
        pair_id: str,
        *,
        run_id: str,
        outcome: str,
        delta_link: str | None,
        definition: str | None = None,
        full_request_seen: str | None = None,
    ) -> None:
        """After a run: its outcome, and the new deltaLink once every change of the round is queued.

        A full round requested while this run was going (`request_full_round` after the run read the pair's state)
        is kept: the flag is cleared only when the request is the one the run saw (`full_request_seen`)."""
        fields: dict[str, object] = {"last_run_id": run_id, "last_run_at": iso(now_utc()), "last_outcome": outcome}
        if definition is not None:
            fields["definition_hash"] = definition
        if delta_link is None:
            self._merge(pair_id, **fields)
            return
        fields["delta_link"] = delta_link
        for _ in range(5):
            entity = self._entity(pair_id)
            if entity is None:
                self._merge(pair_id, **fields, force_full=False, full_requested_at="")
                return
            newer_request = full_request_seen is not None and entity.get("full_requested_at", "") != full_request_seen
            cleared = {} if newer_request and entity.get("force_full") else {"force_full": False, "full_requested_at": ""}
            try:
                self.table.update_entity(
                    {"PartitionKey": PARTITION, "RowKey": pair_id, **fields, **cleared}, mode=UpdateMode.MERGE,
                    etag=entity.metadata["etag"], match_condition=MatchConditions.IfNotModified,
                )
                return
            except (ResourceModifiedError, ResourceNotFoundError):
                continue  # changed meanwhile (a request, a lease): read again
        self._merge(pair_id, **fields)  # kept changing: keep the flag rather than lose a request

    # the round in progress: written only by the lease holder ---------------------------------------------------------
    def save_round(self, pair_id: str, owner: str, round_: RoundState, *, lease_seconds: int,
                   generation: str = "") -> None:
        """Store the round (a new one, or its next checkpoint) and renew the lease. `LeaseLost` if another run
        holds the pair now."""
        lease = {"lease_until": iso(now_utc() + timedelta(seconds=lease_seconds)), "generation": generation}
        self._merge_as_owner(pair_id, owner, lambda entity: {**round_._columns(), **lease})

    def drop_round(self, pair_id: str, owner: str, *, abandoned: Mapping[str, int] | None = None) -> None:
        """Forget the round in progress (a quarantined or restarted round). `abandoned`: the rounds whose creates
        may be unsent, kept until a round completes."""
        extra = {} if abandoned is None else {"round_abandoned": json.dumps(dict(abandoned), sort_keys=True)}
        self._merge_as_owner(pair_id, owner, lambda entity: {**NO_ROUND, **extra})

    def finish_round(
        self, pair_id: str, owner: str, *, run_id: str, outcome: str, delta_link: str, definition: str,
        full_request_seen: str, generation: str = "",
    ) -> None:
        """The round's last page is queued: save its deltaLink, forget the round and the abandoned ones (it re-planned
        everything they marked), and clear the full-round request it answered (not a newer one)."""

        def fields(entity: TableEntity) -> dict[str, Any]:
            newer_request = entity.get("full_requested_at", "") != full_request_seen
            cleared = {} if newer_request and entity.get("force_full") else {"force_full": False, "full_requested_at": ""}
            return {**NO_ROUND, "round_abandoned": "{}", "last_run_id": run_id, "last_run_at": iso(now_utc()),
                    "last_outcome": outcome, "definition_hash": definition, "delta_link": delta_link,
                    "generation": generation, **cleared}

        self._merge_as_owner(pair_id, owner, fields)

    def _merge_as_owner(self, pair_id: str, owner: str, fields: Callable[[TableEntity], dict[str, Any]]) -> None:
        """Merge `fields(entity)` into the pair's row if `owner` holds the lease, guarded by the row's ETag."""
        for _ in range(10):
            entity = self._entity(pair_id)
            if entity is None or entity.get("lease_owner") != owner:
                holder = "" if entity is None else entity.get("lease_owner", "")
                raise LeaseLost(f"pair {pair_id!r}: run {owner} no longer holds the lease (now: {holder or 'nobody'})")
            try:
                self.table.update_entity(
                    {"PartitionKey": PARTITION, "RowKey": pair_id, **fields(entity)}, mode=UpdateMode.MERGE,
                    etag=entity.metadata["etag"], match_condition=MatchConditions.IfNotModified,
                )
                return
            except (ResourceModifiedError, ResourceNotFoundError):
                continue  # changed meanwhile (a full-round request, a quarantine): read again
        raise LeaseLost(f"pair {pair_id!r}: its state kept changing while run {owner} saved its round")

    # groups-as-contacts: a groups round is planned and queued whole, after the users round, under the same lease ------
    def begin_groups_round(self, pair_id: str, owner: str, round_id: str, *, generation: str = "") -> None:
        """Its creates are about to be marked `queued`: until `finish_groups_round`, they may not be on the queue."""
        self._merge_as_owner(pair_id, owner, lambda entity: {"groups_round": round_id, "generation": generation})

    def finish_groups_round(self, pair_id: str, owner: str, *, delta_link: str, definition: str,
                            generation: str = "") -> None:
        """Every op of the groups round is queued: keep its deltaLink (invariant 4)."""
        self._merge_as_owner(pair_id, owner, lambda entity: {
            "groups_round": "", "groups_delta_link": text(delta_link), "groups_definition": definition,
            "generation": generation})

    def quarantine(self, pair_id: str, reason: str) -> None:
        """The safety gate stopped the pair (kind `gate`): an admin releases it."""
        self._merge(pair_id, quarantine_reason=text(reason, 2000), quarantined_at=iso(now_utc()),
                    quarantine_kind=QuarantineKind.GATE.value, retest_at="", failed_tests=0)

    def quarantine_credentials(self, pair_id: str, reason: str, *, retest_at: datetime, epoch: int | None = None) -> bool:
        """Quarantine the pair because its credentials fail; True only for the caller that started it (several
        workers meet the same failure at once: one of them reports it). `epoch` is the `credentials_epoch` the
        failed attempt began under: after a later lift the failure is stale and quarantines nothing."""
        fields = {"quarantine_reason": text(reason, 2000), "quarantined_at": iso(now_utc()),
                  "quarantine_kind": QuarantineKind.CREDENTIALS.value, "retest_at": iso(retest_at), "failed_tests": 1}
        for _ in range(5):
            entity = self._entity(pair_id)
            if entity is not None and entity.get("quarantine_kind") == QuarantineKind.CREDENTIALS.value \
                    and entity.get("quarantine_reason"):
                return False
            if entity is not None and epoch is not None and as_int(entity.get("credentials_epoch")) > epoch:
                return False  # lifted after the attempt began: the admin's fix is newer than this failure
            try:
                if entity is None:
                    self.table.create_entity({"PartitionKey": PARTITION, "RowKey": pair_id, **fields})
                else:
                    self.table.update_entity(
                        {"PartitionKey": PARTITION, "RowKey": pair_id, **fields}, mode=UpdateMode.MERGE,
                        etag=entity.metadata["etag"], match_condition=MatchConditions.IfNotModified,
                    )
                return True
            except (ResourceExistsError, ResourceModifiedError):
                continue  # someone else wrote meanwhile (perhaps the same quarantine): read again
        return False

    def schedule_retest(self, pair_id: str, *, reason: str, failed_tests: int, retest_at: datetime) -> None:
        """A connection test of a credentials quarantine failed again: keep the pair quarantined, test later."""
        self._merge(pair_id, quarantine_reason=text(reason, 2000), failed_tests=failed_tests, retest_at=iso(retest_at))

    def release_quarantine(self, pair_id: str) -> None:
        self._merge(pair_id, quarantine_reason="", quarantined_at="", quarantine_kind="", retest_at="", failed_tests=0)

    def lift_credentials_quarantine(self, pair_id: str) -> int:
        """A connection test passed: release the pair and count one more lift (its new `credentials_epoch`), so a
        failure that began before it cannot quarantine the pair again."""
        lifted = {"quarantine_reason": "", "quarantined_at": "", "quarantine_kind": "", "retest_at": "", "failed_tests": 0}
        epoch = 0

        def next_epoch(entity: TableEntity | None) -> dict[str, object]:
            nonlocal epoch
            epoch = as_int(None if entity is None else entity.get("credentials_epoch")) + 1
            return {**lifted, "credentials_epoch": epoch}

        if not self._write_guarded(pair_id, next_epoch, attempts=10):
            # Still contended: lift unguarded rather than leave the pair quarantined.
            self._merge(pair_id, **next_epoch(self._entity(pair_id)))
        return epoch

    def request_full_round(self, pair_id: str) -> None:
        """Drop the deltaLink so the next run reads every user (and sweeps what is gone)."""
        self._merge(pair_id, delta_link="", groups_delta_link="", force_full=True, full_requested_at=iso(now_utc()))

    def record_reconcile(self, pair_id: str, *, run_id: str, at: str, counts: Mapping[str, int], due_at: str) -> None:
        """The reconcile that just ran (status shows it) and when the next one is due."""
        self._merge(pair_id, reconcile_at=at, reconcile_run_id=run_id, reconcile_due_at=due_at,
                    reconcile_counts=json.dumps(dict(counts), sort_keys=True))

    def schedule_reconcile(self, pair_id: str, due_at: str) -> None:
        self._merge(pair_id, reconcile_due_at=due_at)

    def count_discarded(self, pair_id: str, what: str, count: int = 1) -> None:
        """`count` messages of a replaced pair (`what`: "ops" or "requests") were discarded for this pair id: status
        shows the total. ETag-guarded, so workers discarding at the same moment all count (each waits a random moment
        before reading again, so a burst of discards does not collide round after round)."""
        column = f"discarded_{what}"

        def counted(entity: TableEntity | None) -> dict[str, object]:
            return {column: as_int(None if entity is None else entity.get(column)) + count}

        if not self._write_guarded(pair_id, counted, attempts=100, pause=0.05):
            log.warning("pair %s: %d discarded message(s) could not be counted (the row kept changing)", pair_id, count)

    def forget(self, pair_id: str) -> None:
        with contextlib.suppress(ResourceNotFoundError):
            self.table.delete_entity(PARTITION, pair_id)

    # change notifications: one run per burst ---------------------------------------------------------------------
    def arm_notification_run(self, pair_id: str, *, pending_seconds: int, now: datetime | None = None) -> bool:
        """True for the one caller that should ask for the pair's notification run: none is pending. The mark
        (`notify_pending_until`) is guarded by the row's ETag, so notifications handled at the same moment on
        several instances arm it once. It lapses after `pending_seconds` in case the request was never sent."""
        now = now or now_utc()

        def armed(entity: TableEntity | None) -> dict[str, object] | None:
            pending = "" if entity is None else entity.get("notify_pending_until", "")
            if pending and datetime.fromisoformat(pending) > now:
                return None  # a run is asked for already
            return {"notify_pending_until": iso(now + timedelta(seconds=pending_seconds))}

        return self._write_guarded(pair_id, armed, attempts=5)

    def disarm_notification_run(self, pair_id: str) -> None:
        """The notification run is starting: notifications from now on ask for another run."""
        self._merge(pair_id, notify_pending_until="")

    def _write_guarded(self, pair_id: str, change: Callable[[TableEntity | None], dict[str, object] | None], *,
                       attempts: int, pause: float = 0.0) -> bool:
        """Read the pair's row, let `change` say what to merge into it (None: nothing, give up), and write that only
        if the row is still as read (created only if it was absent); read again when another writer came first
        (after a random pause of up to `pause` seconds, so a burst does not collide round after round). True once
        written; False when `change` said None or every attempt met another write."""
        for _ in range(attempts):
            entity = self._entity(pair_id)
            fields = change(entity)
            if fields is None:
                return False
            row = {"PartitionKey": PARTITION, "RowKey": pair_id, **fields}
            try:
                if entity is None:
                    self.table.create_entity(row)
                else:
                    self.table.update_entity(row, mode=UpdateMode.MERGE, etag=entity.metadata["etag"],
                                             match_condition=MatchConditions.IfNotModified)
                return True
            except (ResourceExistsError, ResourceModifiedError, ResourceNotFoundError):
                if pause:
                    time.sleep(random.uniform(0, pause))
        return False

    def _merge(self, pair_id: str, **fields: object) -> None:
        self.table.upsert_entity({"PartitionKey": PARTITION, "RowKey": pair_id, **fields}, mode=UpdateMode.MERGE)
