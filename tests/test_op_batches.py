"""Batches of ops: a large plan is packed into few queue messages (each within the 64 KiB limit), and the worker or the
CLI's drain splits a batch into single-op messages before applying anything."""

from __future__ import annotations

import base64
import dataclasses
import json

import pytest

from sync.app.admin.drain import drain
from sync.app.planner.run import run_pair
from sync.app.wiring.runtime import Runtime
from sync.app.worker.delivery import deliver
from sync.contract.ops import (
    MAX_BATCH_BYTES,
    ContactOp,
    OpKind,
    decode_batch,
    encode_batches,
    is_batch,
    pair_of_message,
)
from sync.contract.vocabulary import RunTrigger
from sync.errors import BadOpMessage
from tests.support.factories import make_pair, make_user
from tests.support.memory_source import MemorySource
from tests.support.memory_target import MemoryTarget

PAIR = make_pair()


def op(n: int, *, name: str = "User", pair_id: str = PAIR.id) -> ContactOp:
    return ContactOp(pair_id, "run-1", OpKind.CREATE, f"user-{n}", 1_000 + n, "new", {"DisplayName": f"{name} {n}"}, "h")


def test_batches_keep_every_op_in_order_within_the_message_limit() -> None:
    ops = [op(n, name="山田 Zoë " * (n % 40)) for n in range(700)]
    batches = list(encode_batches(ops))
    assert len(batches) < 20
    for batch in batches:
        assert len(batch.encode("utf-8")) <= MAX_BATCH_BYTES
        assert len(base64.b64encode(batch.encode("utf-8"))) < 64 * 1024, "fits a queue message as the host reads it"
        assert is_batch(batch) and pair_of_message(batch) == PAIR.id
    assert [o for batch in batches for o in decode_batch(batch)] == ops
    assert not is_batch(ops[0].to_json()) and pair_of_message(ops[0].to_json()) == PAIR.id


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ('{"schema":1,"batch":[]}', "holds no operation"),
        ('{"schema":1,"batch":{}}', "must be"),
        ('{"schema":1,"batch":[1]}', "must be a JSON object"),
        ('{"schema":1,"batch":[],"extra":1}', "must be"),
    ],
)
def test_a_malformed_batch_is_refused(body: str, message: str) -> None:
    with pytest.raises(BadOpMessage, match=message):
        decode_batch(body)


def test_a_batch_never_mixes_pairs() -> None:
    [batch] = encode_batches([op(1), op(2, pair_id="other-pair")])
    with pytest.raises(BadOpMessage, match="mixes pairs"):
        decode_batch(batch)
    assert pair_of_message(batch) is None


@pytest.fixture
def rt(memory_runtime: Runtime, source: MemorySource) -> Runtime:
    memory_runtime.stores.pairs.add(PAIR)
    for n in range(60):
        source.add(make_user(n))
    return memory_runtime


def test_a_large_plan_goes_out_in_batches_that_the_drain_splits(rt: Runtime, target: MemoryTarget) -> None:
    result = run_pair(rt, PAIR.id, trigger=RunTrigger.CLI)
    messages = rt.stores.ops.approximate_count()
    assert result.queued == 60 and 1 <= messages <= 2, "about 55 ops of these users fit one message"
    report = drain(rt, pair_id=PAIR.id, concurrency=1)  # the in-memory target is not meant for threads
    assert report.split == messages and report.outcomes == {"created": 60}
    assert len(target.contacts()) == 60


def test_the_worker_splits_a_batch_before_applying_anything(rt: Runtime, target: MemoryTarget) -> None:
    generation = rt.stores.pairs.get(PAIR.id).generation  # planned for the pair as stored (else it is discarded)
    ops = [dataclasses.replace(op(n), generation=generation) for n in range(3)]
    [batch] = encode_batches(ops)
    assert deliver(rt, batch, dequeue_count=1) == "split"
    assert target.calls == {} and rt.stores.ops.approximate_count() == 3
    bodies = [json.loads(m.content) for m in rt.stores.ops.peek_all()]
    assert sorted(b["source_id"] for b in bodies) == ["user-0", "user-1", "user-2"]
    assert deliver(rt, '{"schema":1,"batch":[]}', dequeue_count=1) == "bad"
    assert rt.stores.poison.approximate_count() == 1
