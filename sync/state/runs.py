"""Table SyncRuns: one row per run of a pair, newest first."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime

from azure.data.tables import TableClient, UpdateMode

from sync.contract.vocabulary import RunOutcome, RunTrigger
from sync.state.entities import inverted_key, iso, quote, text


@dataclass
class RunRecord:
    pair_id: str
    run_id: str
    trigger: RunTrigger
    started: datetime
    outcome: RunOutcome = RunOutcome.RUNNING
    full: bool = False
    seconds: float = 0.0
    counts: dict[str, int] = field(default_factory=dict)
    error: str = ""
    graph_requests: int = 0
    round_id: str = ""  # the planning round this run worked on (a long round spans several runs)
    pages: int = 0  # pages of the round this run planned

    def __post_init__(self) -> None:
        self.trigger, self.outcome = RunTrigger(self.trigger), RunOutcome(self.outcome)  # tables give back strings

    @property
    def row_key(self) -> str:
        return inverted_key(self.started)


class RunStore:
    def __init__(self, table: TableClient) -> None:
        self.table = table

    def save(self, run: RunRecord) -> None:
        self.table.upsert_entity(
            {
                "PartitionKey": run.pair_id,
                "RowKey": run.row_key,
                "run_id": run.run_id,
                "trigger": run.trigger.value,
                "started": iso(run.started),
                "outcome": run.outcome.value,
                "full": run.full,
                "seconds": round(run.seconds, 3),
                "counts": json.dumps(run.counts, sort_keys=True),
                "error": text(run.error, 4000),
                "graph_requests": run.graph_requests,
                "round_id": run.round_id,
                "pages": run.pages,
            },
            mode=UpdateMode.REPLACE,
        )

    def recent(self, pair_id: str, limit: int = 10) -> list[RunRecord]:
        entities = self.table.query_entities(f"PartitionKey eq '{quote(pair_id)}'", results_per_page=limit)
        runs = []
        for entity in entities:
            runs.append(
                RunRecord(
                    pair_id=pair_id,
                    run_id=entity.get("run_id", ""),
                    trigger=RunTrigger(entity.get("trigger") or RunTrigger.TIMER),
                    started=datetime.fromisoformat(entity["started"]),
                    outcome=RunOutcome(entity.get("outcome") or RunOutcome.RUNNING),
                    full=bool(entity.get("full")),
                    seconds=float(entity.get("seconds", 0.0)),
                    counts=json.loads(entity.get("counts") or "{}"),
                    error=entity.get("error", ""),
                    graph_requests=int(entity.get("graph_requests", 0)),
                    round_id=entity.get("round_id", ""),
                    pages=int(entity.get("pages", 0)),
                )
            )
            if len(runs) >= limit:
                break
        return runs

    def forget_pair(self, pair_id: str) -> None:
        for entity in self.table.query_entities(f"PartitionKey eq '{quote(pair_id)}'", select=["RowKey"]):
            self.table.delete_entity(pair_id, entity["RowKey"])
