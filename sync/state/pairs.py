"""Table TenantPairs: the pair definitions (secret references only, never values)."""

from __future__ import annotations

import json

from azure.core import MatchConditions
from azure.core.exceptions import ResourceNotFoundError
from azure.data.tables import TableClient, UpdateMode

from sync.contract.pairs import TenantPair, parse_pair
from sync.errors import PairNotFound, PairValidationError
from sync.state.entities import iso, now_utc

PARTITION = "pair"


class PairStore:
    def __init__(self, table: TableClient) -> None:
        self.table = table

    def add(self, pair: TenantPair, *, replace: bool = False) -> bool:
        """Store a pair; returns True when it replaced an existing one. Refuses a second pair for the same tenants."""
        for other in self.list():
            if other.id != pair.id and (other.source.tenant_id.lower(), other.target.tenant_id.lower()) == (
                pair.source.tenant_id.lower(),
                pair.target.tenant_id.lower(),
            ):
                raise PairValidationError(
                    [
                        f"source.tenant_id/target.tenant_id: pair {other.id!r} already syncs this source tenant into "
                        "this target tenant; two pairs would fight over the same contacts"
                    ],
                    where=f"pair {pair.id!r}",
                )
        exists = self._exists(pair.id)
        if exists and not replace:
            raise PairValidationError(
                [f"id: a pair {pair.id!r} already exists (remove it first, or add with --replace)"],
                where=f"pair {pair.id!r}",
            )
        self.table.upsert_entity(self._entity(pair), mode=UpdateMode.REPLACE)
        return exists

    def get(self, pair_id: str) -> TenantPair:
        try:
            entity = self.table.get_entity(PARTITION, pair_id)
        except ResourceNotFoundError:
            raise PairNotFound(pair_id) from None
        return parse_pair(json.loads(entity["definition"]), where=f"stored pair {pair_id!r}")

    def list(self) -> list[TenantPair]:
        entities = self.table.query_entities(f"PartitionKey eq '{PARTITION}'", select=["RowKey", "definition"])
        return [parse_pair(json.loads(e["definition"]), where=f"stored pair {e['RowKey']!r}") for e in entities]

    def set_enabled(self, pair_id: str, enabled: bool) -> TenantPair:
        entity = self._entity_of(pair_id)
        data = json.loads(entity["definition"])
        data["enabled"] = enabled
        pair = parse_pair(data)
        self.table.update_entity(
            self._entity(pair), mode=UpdateMode.REPLACE, etag=entity.metadata["etag"], match_condition=MatchConditions.IfNotModified
        )
        return pair

    def remove(self, pair_id: str) -> None:
        self._entity_of(pair_id)
        self.table.delete_entity(PARTITION, pair_id)

    def _exists(self, pair_id: str) -> bool:
        try:
            self.table.get_entity(PARTITION, pair_id, select=["RowKey"])
        except ResourceNotFoundError:
            return False
        return True

    def _entity_of(self, pair_id: str):  # type: ignore[no-untyped-def]
        try:
            return self.table.get_entity(PARTITION, pair_id)
        except ResourceNotFoundError:
            raise PairNotFound(pair_id) from None

    @staticmethod
    def _entity(pair: TenantPair) -> dict[str, object]:
        return {
            "PartitionKey": PARTITION,
            "RowKey": pair.id,
            "definition": pair.to_json(),
            "enabled": pair.enabled,
            "source_tenant": pair.source.tenant_id.lower(),
            "target_tenant": pair.target.tenant_id.lower(),
            "updated_at": iso(now_utc()),
        }
