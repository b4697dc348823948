"""A message that always fails reaches the poison handler after maxDequeueCount deliveries; the handler records
the failure and keeps the op, and `python -m sync replay-poison` applies it once the fault is gone."""

from __future__ import annotations

import base64
import json
import logging

import pytest
from azure.core.exceptions import ResourceNotFoundError
from azure.functions.queue import QueueMessage

import function_app
from sync.cli import main as cli
from sync.contract.ops import ContactOp, OpKind
from sync.core.delivery_policy import MAX_DEQUEUE_COUNT

from .conftest import PAIR_ID, Sync


def first_sync(sync: Sync, users: int = 3) -> None:
    sync.add_users(users)
    sync.host.fire_timer()
    assert sync.host.drain_queue(deadline_seconds=30).completed == users


def test_an_op_that_always_fails_is_poisoned_recorded_and_replayable(sync: Sync, capsys: pytest.CaptureFixture[str]) -> None:
    first_sync(sync)
    user = sync.source.directory.users[0]
    sync.source.directory.update_user(user["id"], jobTitle="Chief")
    sync.host.fire_timer()
    # 503 with a Retry-After beyond ExchangeTarget's own budget: raised at once as TargetTransient, every time.
    sync.cloud.faults.inject("exchange", "unavailable", operation="Set-Contact", times=1000, retry_after="120")
    report = sync.host.drain_queue(deadline_seconds=30)
    assert report.failed_attempts == MAX_DEQUEUE_COUNT
    assert dict(report.dequeue_counts) == {1: 1, 2: 1, 3: 1, 4: 1, 5: 1}
    assert report.poisoned == 1 and report.poison_handled == 1 and report.left_in_queue == 0

    rt = sync.rt
    row = rt.stores.contacts.get(PAIR_ID, user["id"])
    assert row.status == "failed" and "every delivery" in row.last_error and row.last_op == "update:poisoned"
    assert "Set-Contact failed (HTTP 503)" in row.last_error, "the poisoned op names its cause, not only that it failed"
    [poison_run] = [run for run in rt.stores.runs.recent(PAIR_ID) if run.trigger == "poison"]
    assert poison_run.outcome == "failed" and user["id"] in poison_run.error and poison_run.counts == {"poisoned": 1}
    assert rt.stores.failed.approximate_count() == 1, "the op is kept for replay"
    assert rt.stores.poison.approximate_count() == 0

    assert cli.main(["replay-poison", "--pair", "other-pair"], runtime=lambda: rt) == 0
    assert rt.stores.failed.approximate_count() == 1  # another pair's replay leaves it alone
    sync.cloud.faults.clear()
    assert cli.main(["replay-poison", "--pair", PAIR_ID], runtime=lambda: rt) == 0
    assert "moved 1 failed operation(s)" in capsys.readouterr().out
    report = sync.host.drain_queue(deadline_seconds=30)
    assert report.completed == 1 and report.poisoned == 0 and report.left_in_queue == 0
    assert rt.stores.failed.approximate_count() == 0
    assert rt.stores.contacts.get(PAIR_ID, user["id"]).status == "ok"
    titles = {c["Title"] for c in sync.target.exchange.contacts() if c["CustomAttribute15"].endswith(user["id"])}
    assert titles == {"Chief"}


def test_a_bad_message_goes_straight_to_the_poison_queue_and_is_kept(sync: Sync) -> None:
    rt = sync.rt
    rt.stores.ops.send_text('{"schema": 1, "kind": "explode"}')
    report = sync.host.drain_queue(deadline_seconds=30)
    assert report.completed == 1 and report.failed_attempts == 0, "never retried: no delivery can fix it"
    assert report.poison_handled == 1
    [kept] = list(rt.stores.failed.peek_all())
    assert kept.content == '{"schema": 1, "kind": "explode"}'


def test_the_worker_reads_the_body_the_host_decodes(sync: Sync) -> None:
    """A message encoded twice reaches the function as base64 text: a bad message, poisoned as it came, no crash."""
    function_app.apply_contact_op(QueueMessage(id="m1", body=base64.b64encode(b"{}"), dequeue_count=1))
    [poisoned] = list(sync.rt.stores.poison.peek_all())
    assert poisoned.content == "e30="  # the undecoded text is not JSON either: it is poisoned as it came


@pytest.mark.parametrize("change", [
    {"version": 2**70},  # past Int64: no table can hold it
    {"version": "17"},
    {"source_id": 12345},
    {"kind": ["create"]},
])
def test_an_undecodable_op_is_poisoned_once_and_names_no_user(
    sync: Sync, change: dict[str, object], caplog: pytest.LogCaptureFixture
) -> None:
    """A message that cannot be decoded goes to the poison queue once, is kept once, marks no user failed and no log
    line names the user its untrusted body points at; the poison trigger never re-poisons it."""
    first_sync(sync)
    rt = sync.rt
    user = sync.source.directory.users[0]["id"]
    body = {"schema": 1, "pair_id": PAIR_ID, "run_id": "r1", "kind": "update", "source_id": user, "version": 7,
            "reason": "changed", "contact": {"Title": "x"}, **change}
    rt.stores.ops.send_text(json.dumps(body))
    caplog.set_level(logging.DEBUG, logger="ctcs")
    report = sync.host.drain_queue(deadline_seconds=30)
    caplog.set_level(logging.CRITICAL, logger="ctcs")
    assert report.failed_attempts == 0 and report.poisoned == 0, "never retried: no delivery can fix it"
    assert report.poison_handled == 1 and report.poison_failed == 0, "the poison trigger handled it once"
    assert [m.content for m in rt.stores.failed.peek_all()] == [json.dumps(body)], "kept once, as it came"
    assert rt.stores.poison.approximate_count() == 0
    assert rt.stores.poison_poison.approximate_count() == 0
    assert rt.stores.contacts.get(PAIR_ID, user).status == "ok"
    assert [run for run in rt.stores.runs.recent(PAIR_ID) if run.trigger == "poison"] == []
    named = [r.getMessage() for r in caplog.records if r.name.startswith("ctcs") and user in str(r.__dict__)]
    assert named == [], "no log line names the user the untrusted body points at"



def test_the_poison_trigger_keeps_the_op_on_its_last_delivery_even_when_recording_fails(sync: Sync) -> None:
    """Recording a poisoned op needs the ContactState table; when that fails the trigger raises (the host delivers
    it again) until its last delivery, where it keeps the op in `-failed` instead of re-poisoning it."""
    first_sync(sync)
    rt = sync.rt
    user = sync.source.directory.users[0]["id"]
    op = ContactOp(pair_id=PAIR_ID, run_id="r1", kind=OpKind.UPDATE, source_id=user, version=7, reason="changed",
                   contact={"Title": "x"}, generation=rt.stores.pairs.get(PAIR_ID).generation)  # the pair's own op
    rt.stores.contacts.table.delete_table()  # a real storage failure, not a stand-in
    with pytest.raises(ResourceNotFoundError):
        function_app.record_poisoned_op(QueueMessage(id="p1", body=op.to_json().encode(), dequeue_count=1))
    assert rt.stores.failed.approximate_count() == 0, "not kept twice: the retry will keep it"
    function_app.record_poisoned_op(QueueMessage(id="p1", body=op.to_json().encode(), dequeue_count=MAX_DEQUEUE_COUNT))
    assert [m.content for m in rt.stores.failed.peek_all()] == [op.to_json()]


def test_replay_poison_also_moves_what_an_older_poison_trigger_left_in_poison_poison(sync: Sync) -> None:
    rt = sync.rt
    op = ContactOp(pair_id=PAIR_ID, run_id="r1", kind=OpKind.DELETE, source_id="gone", version=7, reason="left")
    rt.stores.poison_poison.ensure().send_text(op.to_json())
    assert cli.main(["replay-poison", "--pair", PAIR_ID], runtime=lambda: rt) == 0
    assert [m.content for m in rt.stores.ops.peek_all()] == [op.to_json()]
    assert rt.stores.poison_poison.approximate_count() == 0
