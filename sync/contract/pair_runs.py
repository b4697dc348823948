"""A request to plan one pair: a message of the `pair-runs` queue (JSON, schema 1).

    {"schema": 1, "pair_id": "contoso-to-fabrikam", "kind": "plan", "trigger": "timer",
     "full": false, "allow_deletes": false, "round_id": "", "requested_at": "2026-11-26T14:00:00+00:00"}

The timer puts one `plan` request per due pair on the queue, the HTTP resync hands the rest of a long round over the
same way, and a planner invocation that runs out of time sends itself a `continue` request naming its round. Change
notifications send `plan` with trigger `notification` (delayed, one per burst); reconcile rounds will add a kind; a
planner that does not know a kind or trigger refuses the message (`BadRunRequest`) rather than guess. The round's checkpoint (its nextLink) is not in the message:
PairState holds it, so a late or repeated message can never take a round backwards. `generation` names the stored
life of the pair the request was made for (`sync.state.pairs`); it is left out for a pair stored before generations
existed, so a request without it belongs to such a pair, and the planner discards it for a pair added since.
`look_again` (left out when false) marks the one later look a notification run whose round found nothing asks for
(Graph's delta can lag the notification); such a run never asks for another.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from sync.contract.vocabulary import RunTrigger
from sync.errors import BadRunRequest

SCHEMA_VERSION = 1
MAX_REQUEST_CHARS = 2_000
_FIELDS = {"schema", "pair_id", "kind", "trigger", "full", "allow_deletes", "round_id", "requested_at",
           "generation", "look_again"}


class RunKind(StrEnum):
    PLAN = "plan"  # plan the pair: resume its round in progress, or start one
    CONTINUE = "continue"  # carry on round `round_id`; dropped when the pair has moved on to another round
    RECONCILE = "reconcile"  # compare the target's owned contacts with state and source, repair, plan a full round


@dataclass(frozen=True)
class PairRunRequest:
    pair_id: str
    kind: RunKind = RunKind.PLAN
    trigger: RunTrigger = RunTrigger.TIMER
    full: bool = False
    allow_deletes: bool = False
    round_id: str = ""
    requested_at: str = ""
    generation: str = ""  # the pair's generation when requested ("" = a pair stored before generations; left out)
    look_again: bool = False  # a notification run's second look (left out when false)

    def to_json(self) -> str:
        body: dict[str, Any] = {
            "schema": SCHEMA_VERSION, "pair_id": self.pair_id, "kind": self.kind.value, "trigger": self.trigger.value,
            "full": self.full, "allow_deletes": self.allow_deletes, "round_id": self.round_id,
            "requested_at": self.requested_at,
        }
        if self.generation:
            body["generation"] = self.generation
        if self.look_again:
            body["look_again"] = True
        return json.dumps(body, separators=(",", ":"))


def decode_run_request(text: str | bytes) -> PairRunRequest:
    """A `pair-runs` message back into a request; `BadRunRequest` names what is wrong."""
    if len(text) > MAX_REQUEST_CHARS:
        raise BadRunRequest(f"pair run request is {len(text)} characters, more than {MAX_REQUEST_CHARS}")
    try:
        body = json.loads(text)
    except (ValueError, RecursionError):
        raise BadRunRequest("pair run request is not JSON") from None
    if not isinstance(body, dict):
        raise BadRunRequest("pair run request must be a JSON object")
    if body.get("schema") != SCHEMA_VERSION:
        raise BadRunRequest(f"pair run request schema {body.get('schema')!r} is not supported (expected {SCHEMA_VERSION})")
    unknown = set(body) - _FIELDS
    if unknown:
        raise BadRunRequest(f"pair run request has unknown field(s): {', '.join(sorted(unknown))}")
    pair_id = body.get("pair_id")
    if not isinstance(pair_id, str) or not pair_id:
        raise BadRunRequest("pair run request needs a pair_id")
    try:
        kind = RunKind(body.get("kind", RunKind.PLAN.value))
        trigger = RunTrigger(body.get("trigger", RunTrigger.TIMER.value))
    except ValueError as error:
        raise BadRunRequest(f"pair run request: {error}") from None
    flags = {name: body.get(name, False) for name in ("full", "allow_deletes", "look_again")}
    if not all(isinstance(value, bool) for value in flags.values()):
        raise BadRunRequest("pair run request fields full, allow_deletes and look_again must be true or false")
    round_id, requested_at = body.get("round_id", ""), body.get("requested_at", "")
    if not isinstance(round_id, str) or not isinstance(requested_at, str):
        raise BadRunRequest("pair run request fields round_id and requested_at must be strings")
    if kind is RunKind.CONTINUE and not round_id:
        raise BadRunRequest("a continue request must name its round_id")
    generation = body.get("generation", "")
    if not isinstance(generation, str) or len(generation) > 128:
        raise BadRunRequest("pair run request field generation must be a string of at most 128 characters")
    return PairRunRequest(pair_id, kind, trigger, flags["full"], flags["allow_deletes"], round_id, requested_at,
                          generation, flags["look_again"])
