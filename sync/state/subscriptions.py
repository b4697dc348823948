"""Each pair's Graph change-notification subscriptions, in the PairState table (partition `subscription`).

One row per pair and resource (RowKey `<pair>~<resource>`): Graph's subscription id, when it expires, how it stands
(`SubscriptionState`), the last error, and what its notifications did (accepted, rejected, the last one). The
`clientState` secret is kept only as its SHA-256 (`client_state_hash`): the notification route compares hashes, so
neither the table nor a log line ever holds the value (invariant 6), and a new subscription gets a new secret. The row
also keeps the `address_id` of the URL path token it was given (sync.core.notification_path; useless without the
app's key), which key made it (`key_id`, an HMAC of a constant: it says when the key changed, not what it is) and the
source tenant whose notifications it may carry (`tenant_id`).

Notifications that name no subscription of ours are counted in the row `~unmatched`. While the timer creates a
subscription, a row `~creating~<pair>~<address id>` says so for a few seconds: the route answers Graph's validation
handshake only while it is there (`creating`).
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from azure.core import MatchConditions
from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError
from azure.data.tables import TableClient, TableEntity, UpdateMode

from sync.contract.vocabulary import SubscriptionState
from sync.state.entities import as_int, iso, now_utc, text

PARTITION = "subscription"
# Counting is read, add, write under the row's ETag; a request that loses the race tries again after a random wait.
# Enough tries that a burst of concurrent requests loses no count (a lost count makes `status` lie).
COUNT_ATTEMPTS = 64
COUNT_BACKOFF_BASE = 0.002
COUNT_BACKOFF_MAX = 0.2
UNMATCHED = "~unmatched"
CREATING = "~creating~"


def hash_client_state(value: str) -> str:
    return hashlib.sha256(value.encode("utf-8")).hexdigest()


def _creating_key(pair_id: str, address_id: str) -> str:
    return f"{CREATING}{pair_id}~{address_id}"


@dataclass(frozen=True)
class Origin:
    """Where a new subscription's notifications come from and go to: its address id, key and source tenant."""

    address_id: str = ""
    key_id: str = ""
    tenant_id: str = ""


def _key(pair_id: str, resource: str) -> str:
    return f"{pair_id}~{resource}"


@dataclass(frozen=True)
class SubscriptionRow:
    pair_id: str
    resource: str  # "users" or "groups"
    subscription_id: str = ""
    client_state_hash: str = ""
    expires_at: str = ""
    state: str = SubscriptionState.ACTIVE.value
    created_at: str = ""
    renewed_at: str = ""
    error: str = ""
    accepted: int = 0
    rejected: int = 0
    last_notification_at: str = ""
    address_id: str = ""  # of the notification URL's path token this subscription was given
    key_id: str = ""  # which CTCS_NOTIFICATION_KEY made that token (an HMAC of a constant, not the key)
    tenant_id: str = ""  # the pair's source tenant, which every notification item must name

    def matches(self, client_state: object) -> bool:
        """Whether a notification's clientState is this subscription's secret (compared in constant time)."""
        if not isinstance(client_state, str) or not self.client_state_hash:
            return False
        try:
            presented = hash_client_state(client_state)
        except UnicodeEncodeError:  # not text (a lone surrogate): no secret of ours
            return False
        return hmac.compare_digest(presented, self.client_state_hash)

    @classmethod
    def _from(cls, entity: TableEntity) -> SubscriptionRow:
        return cls(
            pair_id=entity.get("pair_id", ""), resource=entity.get("resource", ""),
            subscription_id=entity.get("subscription_id", ""), client_state_hash=entity.get("client_state_hash", ""),
            expires_at=entity.get("expires_at", ""), state=entity.get("state", SubscriptionState.ACTIVE.value),
            created_at=entity.get("created_at", ""), renewed_at=entity.get("renewed_at", ""),
            error=entity.get("error", ""), accepted=as_int(entity.get("accepted")),
            rejected=as_int(entity.get("rejected")), last_notification_at=entity.get("last_notification_at", ""),
            address_id=entity.get("address_id", ""), key_id=entity.get("key_id", ""),
            tenant_id=entity.get("tenant_id", ""),
        )


class SubscriptionStore:
    def __init__(self, table: TableClient) -> None:
        self.table = table

    def all(self) -> list[SubscriptionRow]:
        return [SubscriptionRow._from(e) for e in self._entities() if not str(e["RowKey"]).startswith("~")]

    def of_pair(self, pair_id: str) -> list[SubscriptionRow]:
        return [row for row in self.all() if row.pair_id == pair_id]

    def get(self, pair_id: str, resource: str) -> SubscriptionRow | None:
        try:
            return SubscriptionRow._from(self.table.get_entity(PARTITION, _key(pair_id, resource)))
        except ResourceNotFoundError:
            return None

    def by_subscription_id(self) -> dict[str, SubscriptionRow]:
        """Every subscription of every pair by Graph's id: what the notification route checks items against."""
        return {row.subscription_id: row for row in self.all() if row.subscription_id}

    def _entities(self) -> Iterator[TableEntity]:
        yield from self.table.query_entities(f"PartitionKey eq '{PARTITION}'")

    # maintenance (the timer, the planner, the CLI) ---------------------------------------------------------------------
    def created(self, pair_id: str, resource: str, subscription_id: str, *, client_state: str, expires_at: str,
                origin: Origin | None = None) -> None:
        """A new subscription: its counters start again."""
        now = iso(now_utc())
        origin = origin or Origin()
        self.table.upsert_entity({
            "PartitionKey": PARTITION, "RowKey": _key(pair_id, resource), "pair_id": pair_id, "resource": resource,
            "subscription_id": subscription_id, "client_state_hash": hash_client_state(client_state),
            "expires_at": expires_at, "state": SubscriptionState.ACTIVE.value, "created_at": now, "renewed_at": now,
            "error": "", "accepted": 0, "rejected": 0, "last_notification_at": "", "address_id": origin.address_id,
            "key_id": origin.key_id, "tenant_id": origin.tenant_id.lower(),
        }, mode=UpdateMode.REPLACE)

    def begin_creating(self, pair_id: str, address_id: str, *, seconds: int) -> None:
        """The timer is about to create a subscription of this address id: Graph's handshake may be answered."""
        until = now_utc() + timedelta(seconds=seconds)
        self.table.upsert_entity({"PartitionKey": PARTITION, "RowKey": _creating_key(pair_id, address_id),
                                  "until": iso(until)}, mode=UpdateMode.REPLACE)

    def end_creating(self, pair_id: str, address_id: str) -> None:
        with contextlib.suppress(ResourceNotFoundError):
            self.table.delete_entity(PARTITION, _creating_key(pair_id, address_id))

    def creating(self, pair_id: str, address_id: str) -> bool:
        """Whether a subscription of this pair and address id is being created right now (one point read)."""
        try:
            entity = self.table.get_entity(PARTITION, _creating_key(pair_id, address_id))
        except ResourceNotFoundError:
            return False
        until = str(entity.get("until", ""))
        return bool(until) and datetime.fromisoformat(until) > now_utc()

    def renewed(self, pair_id: str, resource: str, *, expires_at: str) -> None:
        self._merge(pair_id, resource, expires_at=expires_at, renewed_at=iso(now_utc()),
                    state=SubscriptionState.ACTIVE.value, error="")

    def failed(self, pair_id: str, resource: str, error: str) -> None:
        """Creating or renewing failed: kept (with Graph's subscription, if one still exists) until the next try."""
        self._merge(pair_id, resource, state=SubscriptionState.FAILED.value, error=text(error, 1000))

    def mark(self, pair_id: str, resource: str, state: SubscriptionState) -> None:
        """A lifecycle notification asked for a renewal or said the subscription is gone."""
        self._merge(pair_id, resource, state=state.value)

    def drop(self, pair_id: str, resource: str) -> None:
        with contextlib.suppress(ResourceNotFoundError):
            self.table.delete_entity(PARTITION, _key(pair_id, resource))

    # the notification route ------------------------------------------------------------------------------------------
    def count(self, row: SubscriptionRow | None, *, accepted: int = 0, rejected: int = 0) -> None:
        """Add to a subscription's counters (None: the `~unmatched` row), guarded by the row's ETag so that
        notification requests handled at the same moment do not lose each other's counts."""
        key = UNMATCHED if row is None else _key(row.pair_id, row.resource)
        for attempt in range(COUNT_ATTEMPTS):
            if attempt:  # another request won the ETag race: wait a random moment, longer each time, and add again
                time.sleep(random.uniform(0, min(COUNT_BACKOFF_MAX, COUNT_BACKOFF_BASE * 2 ** attempt)))
            try:
                entity = self.table.get_entity(PARTITION, key)
            except ResourceNotFoundError:
                if row is not None:
                    return  # the subscription was dropped meanwhile
                with contextlib.suppress(ResourceExistsError):
                    self.table.create_entity({"PartitionKey": PARTITION, "RowKey": key, "accepted": 0, "rejected": 0})
                continue
            fields: dict[str, Any] = {
                "PartitionKey": PARTITION, "RowKey": key, "accepted": as_int(entity.get("accepted")) + accepted,
                "rejected": as_int(entity.get("rejected")) + rejected,
            }
            if accepted:
                fields["last_notification_at"] = iso(now_utc())
            try:
                self.table.update_entity(fields, mode=UpdateMode.MERGE, etag=entity.metadata["etag"],
                                         match_condition=MatchConditions.IfNotModified)
                return
            except (ResourceModifiedError, ResourceNotFoundError):
                continue

    def unmatched(self) -> int:
        """Notifications rejected because they named no subscription of ours."""
        try:
            return as_int(self.table.get_entity(PARTITION, UNMATCHED).get("rejected"))
        except ResourceNotFoundError:
            return 0

    def _merge(self, pair_id: str, resource: str, **fields: object) -> None:
        self.table.upsert_entity({"PartitionKey": PARTITION, "RowKey": _key(pair_id, resource), "pair_id": pair_id,
                                  "resource": resource, **fields}, mode=UpdateMode.MERGE)
