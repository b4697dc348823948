"""Generations of a pair id: in the op message and the pair-runs request, what a message without one (written by the
release before generations) means, and which checkpoints a run may use. Against Azurite, in-memory tenants."""

from __future__ import annotations

import json
from typing import Any

import pytest

from sync.app.planner.fanout import is_void
from sync.app.wiring.runtime import Runtime
from sync.app.worker.apply import Outcome
from sync.app.worker.delivery import deliver, handle_message, record_poison
from sync.contract.ops import ContactOp, OpKind, decode_message, decode_op, encode_batches
from sync.contract.pair_runs import PairRunRequest, RunKind, decode_run_request
from sync.core.mapping import ContactMapper
from sync.errors import BadOpMessage, BadRunRequest
from sync.state.pair_state import PairStatus, RoundState
from sync.state.pairs import PairStore
from sync.state.stores import Stores
from tests.support.factories import make_pair, make_user
from tests.support.memory_target import MemoryTarget


def _create(pair_id: str, user: dict[str, Any], version: int, generation: str = "") -> ContactOp:
    mapped = ContactMapper(make_pair(pair_id)).map(user, str(user["mail"]))
    return ContactOp(pair_id, "run", OpKind.CREATE, str(user["id"]), version, "new", mapped.contact, mapped.hash,
                     generation=generation)


def test_the_op_message_carries_the_generation_and_leaves_it_out_when_there_is_none() -> None:
    user = make_user(1)
    op = _create("contoso-to-fabrikam", user, 7, generation="0123abcd")
    assert json.loads(op.to_json())["generation"] == "0123abcd" and decode_op(op.to_json()) == op
    legacy = _create("contoso-to-fabrikam", user, 7)
    assert "generation" not in json.loads(legacy.to_json()) and decode_op(legacy.to_json()).generation == ""
    with pytest.raises(BadOpMessage, match="'generation'"):
        decode_op(json.dumps({**json.loads(op.to_json()), "generation": "no spaces allowed"}))


def test_the_run_request_carries_the_generation_and_a_plain_plan_without_one_still_runs() -> None:
    request = PairRunRequest("contoso-to-fabrikam", RunKind.RECONCILE, allow_deletes=True, generation="g2")
    assert decode_run_request(request.to_json()) == request
    assert "generation" not in json.loads(PairRunRequest("p-1").to_json())
    with pytest.raises(BadRunRequest, match="generation"):
        decode_run_request(json.dumps({"schema": 1, "pair_id": "p-1", "generation": 5}))
    assert not is_void(request, "g2") and is_void(request, "g3")
    assert not is_void(PairRunRequest("p-1"), "g3")  # what the timer asks anyway
    assert is_void(PairRunRequest("p-1", allow_deletes=True), "g3")  # never an old pair's --allow-deletes
    assert is_void(PairRunRequest("p-1", RunKind.CONTINUE, round_id="r"), "g3")
    assert not is_void(PairRunRequest("p-1", RunKind.CONTINUE, round_id="r"), "")  # a pair stored before generations


def test_an_op_without_a_generation_is_applied_to_a_pair_stored_before_generations_only(
    stores: Stores, memory_runtime: Runtime, target: MemoryTarget
) -> None:
    legacy = make_pair()
    row = PairStore._entity(legacy)
    del row["generation"]  # as the release before generations stored it
    stores.pairs.table.create_entity(row)
    _, applied = handle_message(memory_runtime, decode_message(_create(legacy.id, make_user(1), 1).to_json()))
    assert applied.outcome is Outcome.CREATED
    stores.pairs.remove(legacy.id)
    stores.pairs.add(make_pair())  # the id again: a new generation
    _, applied = handle_message(memory_runtime, decode_message(_create(legacy.id, make_user(2), 2).to_json()))
    assert applied.outcome is Outcome.DISCARDED and applied.detail == "discarded (pair replaced)"
    assert len(target.contacts()) == 1 and stores.pair_state.get(legacy.id).discarded_ops == 1
    current = stores.pairs.get(legacy.id).generation
    _, applied = handle_message(memory_runtime, decode_message(_create(legacy.id, make_user(3), 3, current).to_json()))
    assert applied.outcome is Outcome.CREATED


def test_checkpoints_of_another_generation_are_left_out() -> None:
    status = PairStatus("p-1", delta_link="https://graph/delta?token", definition_hash="abc", generation="g1",
                        round=RoundState("r1", full=False, link="https://graph/next", version=1, page=3),
                        abandoned={"r0": 2}, groups_delta_link="https://graph/groups", groups_round="groups-1",
                        quarantine_reason="kept", last_outcome="continued")
    assert status.for_generation("g1") is status
    fresh = status.for_generation("g2")
    assert (fresh.delta_link, fresh.round, dict(fresh.abandoned), fresh.groups_delta_link, fresh.groups_round,
            fresh.definition_hash) == ("", None, {}, "", "", "")
    assert fresh.quarantine_reason == "kept" and fresh.last_outcome == "continued"


def test_a_poisoned_op_of_a_replaced_pair_marks_no_row_of_the_new_one(stores: Stores, memory_runtime: Runtime) -> None:
    stores.pairs.add(make_pair())
    pair = stores.pairs.get("contoso-to-fabrikam")
    void = _create(pair.id, make_user(1), 1, generation="0ld0generation")
    assert record_poison(memory_runtime, decode_message(void.to_json()), error="TargetTransient: boom") is None
    assert stores.contacts.status_counts(pair.id) == {}
    current = _create(pair.id, make_user(2), 2, generation=pair.generation)
    assert record_poison(memory_runtime, decode_message(current.to_json()), error="TargetTransient: boom") == current
    assert stores.contacts.status_counts(pair.id) == {"failed": 1, "poisoned": 1}


def test_a_batch_of_a_replaced_pair_is_discarded_whole(stores: Stores, memory_runtime: Runtime) -> None:
    stores.pairs.add(make_pair())
    pair = stores.pairs.get("contoso-to-fabrikam")
    void = [_create(pair.id, make_user(n), n + 1, generation="0ld0generation") for n in range(40)]
    [batch] = encode_batches(void)
    assert deliver(memory_runtime, batch, dequeue_count=1) == "discarded"
    assert stores.ops.approximate_count() == 0 and stores.pair_state.get(pair.id).discarded_ops == 40
    current = [_create(pair.id, make_user(n), n + 1, generation=pair.generation) for n in range(3)]
    assert deliver(memory_runtime, next(encode_batches(current)), dequeue_count=1) == "split"
    assert stores.ops.approximate_count() == 3
