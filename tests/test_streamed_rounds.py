"""Streamed, checkpointed rounds on Azurite with an in-memory source that pages (sync.app.planner.rounds): a round planned page
by page over several invocations ends like one planned at once; an interrupted round resumes at its checkpoint and
sends what the interrupted page may not have sent, with the same versions; an expired checkpoint restarts the round;
removals wait for the last page, where the safety gate counts the whole round."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

from sync.app.admin.drain import drain
from sync.app.planner.rounds import Invocation
from sync.app.planner.run import RunResult, run_pair
from sync.app.wiring.runtime import Runtime
from sync.contract.ops import ContactOp, OpKind, decode_batch, decode_op, is_batch
from sync.contract.pair_runs import RunKind, decode_run_request
from sync.contract.vocabulary import RunOutcome, RunTrigger
from tests.support.factories import make_pair, make_user
from tests.support.memory_source import MemorySource
from tests.support.memory_target import MemoryTarget

PAIR = make_pair(deletion={"max_deletes": 10, "max_delete_percent": 100})
USERS = 20


@pytest.fixture
def paged(source: MemorySource) -> MemorySource:
    source.page_size = 4
    for n in range(USERS):
        source.add(make_user(n))
    return source


@pytest.fixture
def rt(memory_runtime: Runtime, paged: MemorySource) -> Runtime:
    memory_runtime.stores.pairs.add(PAIR)
    return memory_runtime


def step(rt: Runtime, **kwargs: Any) -> RunResult:
    """One planner invocation that stops after its first page (a budget of 0 s)."""
    return run_pair(rt, PAIR.id, trigger=RunTrigger.TIMER, invocation=Invocation(budget_seconds=0), **kwargs)


def until_done(rt: Runtime, **kwargs: Any) -> list[RunResult]:
    results = [step(rt, **kwargs)]
    while results[-1].outcome is RunOutcome.CONTINUED:
        results.append(step(rt, **kwargs))
    return results


def queued_ops(rt: Runtime) -> list[ContactOp]:
    """Every op on the queue (batches unpacked), taken off it."""
    ops: list[ContactOp] = []
    while messages := rt.stores.ops.receive(max_messages=32, visibility_timeout=60):
        for message in messages:
            ops += decode_batch(message.content) if is_batch(message.content) else [decode_op(message.content)]
            rt.stores.ops.delete(message)
    return ops


def test_a_round_over_many_invocations_ends_like_one_planned_at_once(
    rt: Runtime, paged: MemorySource, target: MemoryTarget
) -> None:
    results = until_done(rt)
    assert [r.outcome for r in results] == ["continued"] * 4 + ["planned"]
    assert [r.run.pages for r in results] == [1] * 5 and len({r.run.round_id for r in results}) == 1
    status = rt.stores.pair_state.get(PAIR.id)
    assert status.round is None and status.delta_link == f"mem:{USERS}"
    # Each invocation asked for the rest of the round on the pair-runs queue; the last one did not.
    requests = [decode_run_request(m.content) for m in rt.stores.pair_runs.client.peek_messages(max_messages=32)]
    assert [(r.kind, r.round_id) for r in requests] == [(RunKind.CONTINUE, results[0].run.round_id)] * 4
    ops = queued_ops(rt)
    assert sorted(op.source_id for op in ops) == sorted(str(make_user(n)["id"]) for n in range(USERS))
    assert len({op.version for op in ops}) == 5, "page k's ops carry the round's version + k"
    for op in ops:
        rt.stores.ops.send(op)
    drain(rt, concurrency=4)
    assert len(target.contacts()) == USERS
    assert rt.stores.contacts.status_counts(PAIR.id) == {"ok": USERS}
    paged.update(str(make_user(0)["id"]), jobTitle="Chief")
    nothing_else = run_pair(rt, PAIR.id, trigger=RunTrigger.TIMER)
    assert nothing_else.run.counts["update"] == 1 and not nothing_else.run.full


def test_an_interrupted_page_is_planned_again_and_loses_nothing(
    rt: Runtime, paged: MemorySource, target: MemoryTarget
) -> None:
    assert step(rt).outcome == "continued"  # page 0 is queued and checkpointed
    real_send = rt.stores.ops.send_all
    sent_before_the_crash: list[ContactOp] = []

    def crash_half_way(ops: list[ContactOp]) -> int:
        sent_before_the_crash.extend(ops[:2])
        real_send(ops[:2])
        raise ConnectionError("the invocation died while sending")

    rt.stores.ops.send_all = crash_half_way  # type: ignore[method-assign]
    assert step(rt).outcome == "failed"
    del rt.stores.ops.send_all
    assert rt.stores.pair_state.get(PAIR.id).round.page == 1  # type: ignore[union-attr]
    assert rt.stores.contacts.status_counts(PAIR.id) == {"queued": 8}, "page 1's creates were marked before the crash"
    results = until_done(rt)
    assert results[0].run.counts["create"] == 4, "page 1 is planned again: its marked creates are sent"
    ops = queued_ops(rt)
    by_user = Counter(op.source_id for op in ops)
    assert set(by_user) == {str(make_user(n)["id"]) for n in range(USERS)}, "nothing lost"
    twice = {user for user, n in by_user.items() if n > 1}
    assert twice == {op.source_id for op in sent_before_the_crash}
    for user in twice:  # sent again as the very same op: the worker applies it once
        assert len({(op.version, op.hash) for op in ops if op.source_id == user}) == 1
    for op in ops:
        rt.stores.ops.send(op)
    report = drain(rt, concurrency=4)
    # Each copy sent twice is applied once: the other is stale or, when the first copy's claim lapsed on a loaded
    # machine before it committed, adopts the very contact by its anchor. One contact per user either way (invariant 3).
    assert report.outcomes["created"] + report.outcomes.get("adopted", 0) == USERS
    assert sum(report.outcomes.values()) == USERS + len(twice) and not report.failed
    assert len(target.contacts()) == USERS


def test_an_expired_checkpoint_restarts_the_round(rt: Runtime, paged: MemorySource, target: MemoryTarget) -> None:
    first = step(rt)
    step(rt)
    paged.expire_pages()  # the checkpoint (a nextLink) is refused now: 400 syncStateNotFound
    results = until_done(rt)
    assert results[0].run.round_id != first.run.round_id, "a new round"
    assert rt.stores.pair_state.get(PAIR.id).delta_link == f"mem:{USERS}"
    ops = queued_ops(rt)
    assert {op.source_id for op in ops} == {str(make_user(n)["id"]) for n in range(USERS)}
    # The restarted full round re-sends the first round's creates only where they may be missing: none here.
    assert Counter(op.source_id for op in ops).most_common(1)[0][1] == 1
    for op in ops:
        rt.stores.ops.send(op)
    drain(rt, concurrency=4)
    assert len(target.contacts()) == USERS


def test_a_checkpoint_expiring_within_an_invocation_restarts_the_round_without_sending_twice(
    rt: Runtime, paged: MemorySource, target: MemoryTarget, caplog: pytest.LogCaptureFixture
) -> None:
    paged.expire_at_page(3)  # the nextLink of page 3 is refused while the run reads the round
    result = run_pair(rt, PAIR.id, trigger=RunTrigger.CLI)  # no budget: one invocation reads on
    assert result.outcome == "planned" and result.run.full
    assert "the round starts again" in caplog.text
    status = rt.stores.pair_state.get(PAIR.id)
    assert status.round is None and status.abandoned == {} and status.delta_link == f"mem:{USERS}"
    ops = queued_ops(rt)
    assert Counter(op.source_id for op in ops) == Counter({str(make_user(n)["id"]): 1 for n in range(USERS)}), (
        "pages 0-2 were queued before the restart: the new round knows them as sent")


def test_an_abandoned_rounds_unsent_creates_are_sent_by_the_next_round(
    rt: Runtime, paged: MemorySource, target: MemoryTarget
) -> None:
    step(rt)

    def crash(ops: list[ContactOp]) -> int:
        raise ConnectionError("the invocation died before sending")

    rt.stores.ops.send_all = crash  # type: ignore[method-assign]
    step(rt)  # page 1 marked its creates queued, sent nothing
    del rt.stores.ops.send_all
    paged.expire_pages()
    until_done(rt)
    ops = queued_ops(rt)
    assert {op.source_id for op in ops} == {str(make_user(n)["id"]) for n in range(USERS)}
    page_1 = {str(make_user(n)["id"]) for n in range(4, 8)}
    assert {op.reason for op in ops if op.source_id in page_1} == {"resent"}


def test_removals_wait_for_the_last_page_where_the_gate_counts_the_whole_round(
    rt: Runtime, paged: MemorySource, target: MemoryTarget
) -> None:
    until_done(rt)
    drain(rt, concurrency=4)
    for n in range(12):  # 12 leave, 3 per page over 4 pages: each page alone would pass max_deletes 10
        paged.remove(str(make_user(n)["id"]))
    paged.add(make_user(100))
    link = rt.stores.pair_state.get(PAIR.id).delta_link
    results = until_done(rt)
    assert [r.outcome for r in results] == ["continued"] * 3 + ["quarantined"]
    assert all(r.run.counts["delete"] == 0 for r in results[:-1]), "held back, not queued"
    assert "12 contacts" in results[-1].run.error
    assert len(target.contacts()) == USERS
    # Only removals wait: the newcomer's create went out with its page.
    assert [(op.kind, op.source_id) for op in queued_ops(rt)] == [(OpKind.CREATE, str(make_user(100)["id"]))]
    status = rt.stores.pair_state.get(PAIR.id)
    assert status.quarantined and status.delta_link == link and status.round is None
    released = until_done(rt, allow_deletes=True)
    assert released[-1].outcome == "planned" and released[-1].run.counts["delete"] == 12
    assert sum(r.run.counts["create"] for r in released) == 0, "the newcomer's create is on the queue already"
    drain(rt, concurrency=4)
    assert len(target.contacts()) == USERS - 12, "the newcomer's create was taken off the queue above"
    assert not rt.stores.pair_state.get(PAIR.id).quarantined


def test_the_full_round_sweep_happens_once_after_the_last_page(
    rt: Runtime, paged: MemorySource, target: MemoryTarget
) -> None:
    until_done(rt)
    drain(rt, concurrency=4)
    assert rt.stores.contacts.status_counts(PAIR.id) == {"ok": USERS}
    gone = [str(make_user(n)["id"]) for n in (3, 11)]
    for user_id in gone:
        del paged.users[user_id]  # deleted while the token was expiring: no removal is ever reported
    paged.expired = True
    results = until_done(rt)
    assert all(r.run.full for r in results) and len(results) == 5  # 18 users: 4 + 4 + 4 + 4 + 2
    assert [r.run.counts["delete"] for r in results] == [0, 0, 0, 0, 2]
    ops = queued_ops(rt)
    assert sorted(op.source_id for op in ops if op.kind is OpKind.DELETE) == sorted(gone)
    assert {op.reason for op in ops if op.kind is OpKind.DELETE} == {"not_in_source"}
    assert not [op for op in ops if op.kind is OpKind.CREATE], "the full round did not send the creates again"
