"""Table PairState: per pair, the deltaLink, the planning lease, the quarantine (its kind and, for credentials, when
it is tested again) and the last run."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from datetime import datetime, timedelta

from azure.core import MatchConditions
from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError
from azure.data.tables import TableClient, TableEntity, UpdateMode

from sync.contract.vocabulary import QuarantineKind
from sync.errors import LeaseHeld
from sync.state.entities import as_int, iso, now_utc, text

PARTITION = "pair"


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
    quarantine_kind: str = ""  # QuarantineKind; a reason without a kind was written by the safety gate
    retest_at: str = ""  # credentials: when the timer tests the connection again
    failed_tests: int = 0  # credentials: connection tests failed since the quarantine began (1 = the first failure)

    @property
    def quarantined(self) -> bool:
        return bool(self.quarantine_reason)

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
        quarantine_kind=entity.get("quarantine_kind", ""),
        retest_at=entity.get("retest_at", ""),
        failed_tests=as_int(entity.get("failed_tests")),
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

    def quarantine(self, pair_id: str, reason: str) -> None:
        """The safety gate stopped the pair (kind `gate`): an admin releases it."""
        self._merge(pair_id, quarantine_reason=text(reason, 2000), quarantined_at=iso(now_utc()),
                    quarantine_kind=QuarantineKind.GATE.value, retest_at="", failed_tests=0)

    def quarantine_credentials(self, pair_id: str, reason: str, *, retest_at: datetime) -> bool:
        """Quarantine the pair because its credentials fail; True only for the caller that started it (several
        workers meet the same failure at once: one of them reports it)."""
        fields = {"quarantine_reason": text(reason, 2000), "quarantined_at": iso(now_utc()),
                  "quarantine_kind": QuarantineKind.CREDENTIALS.value, "retest_at": iso(retest_at), "failed_tests": 1}
        for _ in range(5):
            entity = self._entity(pair_id)
            if entity is not None and entity.get("quarantine_kind") == QuarantineKind.CREDENTIALS.value \
                    and entity.get("quarantine_reason"):
                return False
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

    def request_full_round(self, pair_id: str) -> None:
        """Drop the deltaLink so the next run reads every user (and sweeps what is gone)."""
        self._merge(pair_id, delta_link="", force_full=True, full_requested_at=iso(now_utc()))

    def forget(self, pair_id: str) -> None:
        with contextlib.suppress(ResourceNotFoundError):
            self.table.delete_entity(PARTITION, pair_id)

    def _merge(self, pair_id: str, **fields: object) -> None:
        self.table.upsert_entity({"PartitionKey": PARTITION, "RowKey": pair_id, **fields}, mode=UpdateMode.MERGE)
