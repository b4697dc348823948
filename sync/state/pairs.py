"""Table TenantPairs: the pair definitions (secret references only, never values), their generations, and one
claim per source tenant and target tenant.

A pair's *generation* names one stored life of its id: a new one on every add (and on an add after a remove), kept by
a `--replace` that leaves both tenants as they were, new when a replace changes the source or the target tenant.
Everything queued or checkpointed for a pair carries it, so a message of a removed pair can never be applied to a new
pair that reuses the id. A pair stored before generations existed has none (""), as have the messages of that release.

The rule "one pair per source tenant and target tenant" is held by a *claim* row (partition `claim`, RowKey
`<source tenant>|<target tenant>`), made with a create that fails when the row exists: of two adds at the same moment
only one gets the claim, whatever each saw before. The claim goes with the pair (`remove`), and moves when a replace
changes the tenants.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta

from azure.core import MatchConditions
from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError
from azure.data.tables import TableClient, TableEntity, UpdateMode

from sync.contract.pairs import ANCHOR_ATTRIBUTES, TenantPair, parse_pair
from sync.errors import PairNotFound, PairValidationError
from sync.state.entities import iso, now_utc

PARTITION = "pair"
CLAIMS = "claim"
ABANDONED_CLAIM = timedelta(minutes=5)  # a claim whose pair was never stored (a crashed add) may be taken after this


def new_generation() -> str:
    return uuid.uuid4().hex


def tenants_of(pair: TenantPair) -> tuple[str, str]:
    return pair.source.tenant_id.lower(), pair.target.tenant_id.lower()


def overlapping(pairs: Sequence[TenantPair]) -> list[list[str]]:
    """Ids of pairs that sync the same source tenant into the same target tenant (stored before the rule held)."""
    by_tenants: dict[tuple[str, str], list[str]] = {}
    for pair in pairs:
        by_tenants.setdefault(tenants_of(pair), []).append(pair.id)
    return [sorted(ids) for ids in by_tenants.values() if len(ids) > 1]


def anchor_clashes(pair: TenantPair, others: Sequence[TenantPair]) -> list[str]:
    """Problems (with field paths) where the pair maps a custom attribute another pair writing the same target keeps
    its anchor in, or keeps its anchor where another pair maps a value: that value could pass for an anchor."""
    problems = []
    target = pair.target.tenant_id.lower()
    for other in others:
        if other.id == pair.id or other.target.tenant_id.lower() != target:
            continue
        theirs = other.contact.anchor_attribute
        if theirs in pair.contact.attributes:
            problems.append(f"contact.attributes.{theirs}: pair {other.id!r} writes the same target tenant and keeps "
                            f"its anchor in {theirs}; map another attribute (a mapped value must never look like "
                            "another pair's anchor)")
        mine = pair.contact.anchor_attribute
        if mine in other.contact.attributes:
            problems.append(f"contact.anchor_attribute: pair {other.id!r} writes the same target tenant and maps "
                            f"{mine} in its contact.attributes; keep this pair's anchor in another of "
                            f"{ANCHOR_ATTRIBUTES[0]}..{ANCHOR_ATTRIBUTES[-1]}")
    return problems


class PairStore:
    def __init__(self, table: TableClient) -> None:
        self.table = table

    def add(self, pair: TenantPair, *, replace: bool = False) -> bool:
        """Store a pair; returns True when it replaced an existing one. Refuses a second pair for the same tenants
        (atomically, by the claim row) and a mapped attribute that holds another pair's anchor in the same target."""
        where = f"pair {pair.id!r}"
        others = [other for other in self.list() if other.id != pair.id]
        problems = [
            f"source.tenant_id/target.tenant_id: pair {other.id!r} already syncs this source tenant into this target "
            "tenant; two pairs would fight over the same contacts"
            for other in others if tenants_of(other) == tenants_of(pair)
        ] + anchor_clashes(pair, others)
        if problems:
            raise PairValidationError(problems, where=where)
        existing = self._entity_or_none(pair.id)
        if existing is not None and not replace:
            raise PairValidationError([f"id: a pair {pair.id!r} already exists (remove it first, or add with --replace)"],
                                      where=where)
        old = None if existing is None else self._pair_of(existing)
        keeps = old is not None and tenants_of(old) == tenants_of(pair)
        stored = pair.model_copy(update={"generation": old.generation if keeps and old else new_generation()})
        claimed = self._claim(stored)
        try:
            if existing is None:
                self.table.create_entity(self._entity(stored))
            else:
                self.table.update_entity(self._entity(stored), mode=UpdateMode.REPLACE, etag=existing.metadata["etag"],
                                         match_condition=MatchConditions.IfNotModified)
        except (ResourceExistsError, ResourceModifiedError, ResourceNotFoundError):
            if claimed:
                self._release_claim(stored)
            raise PairValidationError([f"id: pair {pair.id!r} was stored or changed by another add at the same moment; "
                                       "look at it (pairs show) and add again"], where=where) from None
        if old is not None and not keeps:
            self._release_claim(old)  # the replace moved the pair to other tenants: their claim is free again
        return existing is not None

    def get(self, pair_id: str) -> TenantPair:
        try:
            entity = self.table.get_entity(PARTITION, pair_id)
        except ResourceNotFoundError:
            raise PairNotFound(pair_id) from None
        return self._pair_of(entity)

    def generation_of(self, pair_id: str) -> str:
        """The stored pair's generation alone (a point read of one column); `PairNotFound` when it is gone."""
        try:
            entity = self.table.get_entity(PARTITION, pair_id, select=["RowKey", "generation"])
        except ResourceNotFoundError:
            raise PairNotFound(pair_id) from None
        return str(entity.get("generation") or "")

    def list(self) -> list[TenantPair]:
        entities = self.table.query_entities(f"PartitionKey eq '{PARTITION}'",
                                             select=["RowKey", "definition", "generation"])
        return [self._pair_of(entity) for entity in entities]

    def set_enabled(self, pair_id: str, enabled: bool) -> TenantPair:
        entity = self._entity_of(pair_id)
        data = json.loads(entity["definition"])
        data["enabled"] = enabled
        pair = parse_pair(data).model_copy(update={"generation": entity.get("generation", "")})
        self.table.update_entity(
            self._entity(pair), mode=UpdateMode.REPLACE, etag=entity.metadata["etag"], match_condition=MatchConditions.IfNotModified
        )
        return pair

    def remove(self, pair_id: str) -> None:
        pair = self._pair_of(self._entity_of(pair_id))
        self.table.delete_entity(PARTITION, pair_id)
        self._release_claim(pair)

    # the claim of a source tenant + target tenant ---------------------------------------------------------------------
    def _claim(self, pair: TenantPair) -> bool:
        """Hold the pair's tenants for it; True when this call made the claim (False: it was the pair's already).
        `PairValidationError` when another pair holds them."""
        key = "|".join(tenants_of(pair))
        row = {"PartitionKey": CLAIMS, "RowKey": key, "pair_id": pair.id, "claimed_at": iso(now_utc())}
        try:
            self.table.create_entity(row)
            return True
        except ResourceExistsError:
            pass
        claim = self.table.get_entity(CLAIMS, key)
        holder = str(claim.get("pair_id", ""))
        if holder == pair.id:
            return False
        if self._entity_or_none(holder) is None and _abandoned(claim):
            try:  # an add that crashed between its claim and its pair: take the claim over, unless someone else does
                self.table.update_entity(row, mode=UpdateMode.REPLACE, etag=claim.metadata["etag"],
                                         match_condition=MatchConditions.IfNotModified)
                return True
            except (ResourceModifiedError, ResourceNotFoundError):
                pass
        raise PairValidationError(
            [f"source.tenant_id/target.tenant_id: pair {holder!r} already syncs this source tenant into this target "
             "tenant (or is being added right now); two pairs would fight over the same contacts"],
            where=f"pair {pair.id!r}",
        )

    def _release_claim(self, pair: TenantPair) -> None:
        key = "|".join(tenants_of(pair))
        try:
            claim = self.table.get_entity(CLAIMS, key)
            if claim.get("pair_id") == pair.id:
                self.table.delete_entity(CLAIMS, key, etag=claim.metadata["etag"],
                                         match_condition=MatchConditions.IfNotModified)
        except (ResourceNotFoundError, ResourceModifiedError):
            pass  # gone already, or taken by another pair meanwhile: not ours to delete

    # rows -------------------------------------------------------------------------------------------------------------
    def _entity_or_none(self, pair_id: str) -> TableEntity | None:
        try:
            return self.table.get_entity(PARTITION, pair_id)
        except ResourceNotFoundError:
            return None

    def _entity_of(self, pair_id: str) -> TableEntity:
        entity = self._entity_or_none(pair_id)
        if entity is None:
            raise PairNotFound(pair_id)
        return entity

    @staticmethod
    def _pair_of(entity: TableEntity) -> TenantPair:
        pair = parse_pair(json.loads(entity["definition"]), where=f"stored pair {entity['RowKey']!r}")
        return pair.model_copy(update={"generation": str(entity.get("generation") or "")})

    @staticmethod
    def _entity(pair: TenantPair) -> dict[str, object]:
        return {
            "PartitionKey": PARTITION,
            "RowKey": pair.id,
            "definition": pair.to_json(),
            "generation": pair.generation,
            "enabled": pair.enabled,
            "source_tenant": pair.source.tenant_id.lower(),
            "target_tenant": pair.target.tenant_id.lower(),
            "updated_at": iso(now_utc()),
        }


def _abandoned(claim: TableEntity) -> bool:
    claimed_at = str(claim.get("claimed_at") or "")
    return not claimed_at or datetime.fromisoformat(claimed_at) + ABANDONED_CLAIM < now_utc()
