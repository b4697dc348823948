"""Planning runs and the in-process drain on Azurite with in-memory tenants: the deltaLink rule, the safety gate,
quarantine, leases, poison and replay."""

from __future__ import annotations

import pytest

from sync.app.admin.drain import drain
from sync.app.planner.run import preview, run_pair
from sync.app.wiring.runtime import Runtime
from sync.app.worker.delivery import record_poison, replay_poison
from sync.contract.ops import ContactOp, OpKind, decode_message
from sync.contract.vocabulary import RunTrigger
from sync.core.source import source_select
from sync.errors import TargetTransient
from tests.support.factories import make_pair, make_user
from tests.support.memory_source import MemorySource
from tests.support.memory_target import MemoryTarget

PAIR = make_pair()


@pytest.fixture
def rt(memory_runtime: Runtime, source: MemorySource) -> Runtime:
    memory_runtime.stores.pairs.add(PAIR)
    for n in range(20):
        source.add(make_user(n))
    return memory_runtime


def sync_once(rt: Runtime, **kwargs: object) -> str:
    result = run_pair(rt, PAIR.id, trigger=RunTrigger.CLI, **kwargs)  # type: ignore[arg-type]
    drain(rt, concurrency=4)
    return result.outcome


def test_first_run_creates_everyone_and_stores_the_delta_link(rt: Runtime, target: MemoryTarget) -> None:
    assert sync_once(rt) == "planned"
    assert len(target.contacts()) == 20
    assert rt.stores.pair_state.get(PAIR.id).delta_link == "mem:20"
    assert rt.stores.contacts.status_counts(PAIR.id) == {"ok": 20}
    [run] = rt.stores.runs.recent(PAIR.id)
    assert run.outcome == "planned" and run.full and run.counts["create"] == 20


def test_incremental_run_sees_only_changes(rt: Runtime, source: MemorySource, target: MemoryTarget) -> None:
    sync_once(rt)
    target.calls.clear()
    assert sync_once(rt) == "no_changes"
    assert sum(target.calls.values()) == 0
    first = str(make_user(0)["id"])
    source.update(first, jobTitle="Chief")
    source.remove(str(make_user(1)["id"]))
    sync_once(rt)
    assert len(target.contacts()) == 19
    # Each write checks that its contact still carries the anchor (the memory target shares no look-ups).
    assert dict(target.calls) == {"Get-Recipient": 2, "Set-Contact": 1, "Remove-MailContact": 1}


def test_queued_creates_are_marked_and_a_removal_before_the_worker_wins(
    rt: Runtime, source: MemorySource, target: MemoryTarget
) -> None:
    run_pair(rt, PAIR.id, trigger=RunTrigger.CLI)
    assert rt.stores.contacts.status_counts(PAIR.id) == {"queued": 20}
    late = str(make_user(3)["id"])
    source.remove(late)
    removal = run_pair(rt, PAIR.id, trigger=RunTrigger.CLI)
    assert removal.run.counts["delete"] == 1 and removal.run.counts["create"] == 0
    drain(rt, concurrency=1)
    assert len(target.contacts()) == 19
    assert not target.find_recipients(anchor_attribute=PAIR.contact.anchor_attribute, anchor=PAIR.anchor(late), address="", name="")
    assert rt.stores.contacts.status_counts(PAIR.id) == {"ok": 19, "deleted": 1}


def test_ops_that_never_reached_the_queue_are_sent_by_the_next_run(rt: Runtime, target: MemoryTarget) -> None:
    def unreachable(ops: object) -> int:
        raise ConnectionError("queue unreachable")

    rt.stores.ops.send_all = unreachable  # type: ignore[assignment,method-assign]
    assert run_pair(rt, PAIR.id, trigger=RunTrigger.CLI).outcome == "failed"
    del rt.stores.ops.send_all
    # The creates were marked queued, but the round's checkpoint never moved: the next run re-plans that page.
    status = rt.stores.pair_state.get(PAIR.id)
    assert status.round is not None and status.round.page == 0 and status.delta_link == ""
    assert rt.stores.contacts.status_counts(PAIR.id) == {"queued": 20}
    retry = run_pair(rt, PAIR.id, trigger=RunTrigger.CLI)
    assert retry.run.full and retry.run.counts["create"] == 20 and retry.run.round_id == status.round.round_id
    drain(rt, concurrency=2)
    assert len(target.contacts()) == 20


def test_preview_writes_nothing(rt: Runtime, target: MemoryTarget) -> None:
    result = preview(rt, PAIR.id)
    assert result.plan is not None and result.plan.count(OpKind.CREATE) == 20
    assert rt.stores.ops.approximate_count() == 0
    assert rt.stores.pair_state.get(PAIR.id).delta_link == ""
    assert rt.stores.runs.recent(PAIR.id) == []


def test_mass_removal_quarantines_and_allow_deletes_releases_once(
    rt: Runtime, source: MemorySource, target: MemoryTarget
) -> None:
    sync_once(rt)
    link = rt.stores.pair_state.get(PAIR.id).delta_link
    for n in range(12):  # 60% of the users leave
        source.update(str(make_user(n)["id"]), accountEnabled=False)
    assert sync_once(rt) == "quarantined"
    assert len(target.contacts()) == 20
    status = rt.stores.pair_state.get(PAIR.id)
    assert status.quarantined and "12 of 20 contacts" in status.quarantine_reason
    assert status.delta_link == link  # invariant 4: nothing queued, link kept
    assert run_pair(rt, PAIR.id, trigger=RunTrigger.TIMER).outcome == "quarantined"  # stays stopped
    assert sync_once(rt, allow_deletes=True) == "planned"
    assert len(target.contacts()) == 8
    assert not rt.stores.pair_state.get(PAIR.id).quarantined


def test_expired_token_starts_a_full_round_that_sweeps(rt: Runtime, source: MemorySource, target: MemoryTarget) -> None:
    sync_once(rt)
    gone = str(make_user(3)["id"])
    del source.users[gone]  # deleted while the token was expiring: no removal will ever be reported
    source.expired = True
    sync_once(rt)
    assert len(target.contacts()) == 19
    assert rt.stores.runs.recent(PAIR.id)[0].full


def test_a_changed_mapping_forces_a_full_round(rt: Runtime, target: MemoryTarget) -> None:
    sync_once(rt)
    changed = make_pair(contact={"display_name": "{displayName} (Contoso)"})
    rt.stores.pairs.add(changed, replace=True)
    rt._pairs.clear()
    sync_once(rt)
    assert {c.params["DisplayName"] for c in target.contacts()} == {f"User {n} (Contoso)" for n in range(20)}


def test_lease_held_by_another_run_plans_nothing(rt: Runtime) -> None:
    rt.stores.pair_state.acquire_lease(PAIR.id, "someone-else", 600)
    result = run_pair(rt, PAIR.id, trigger=RunTrigger.TIMER)
    assert result.outcome == "lease_held" and rt.stores.ops.approximate_count() == 0


def test_a_failing_source_is_recorded_and_keeps_the_link(rt: Runtime, source: MemorySource) -> None:
    def broken(delta_link: str | None, select: tuple[str, ...]) -> None:
        raise ConnectionError("graph unreachable")

    source.read_round = broken  # type: ignore[assignment,method-assign]
    result = run_pair(rt, PAIR.id, trigger=RunTrigger.TIMER)
    assert result.outcome == "failed" and "graph unreachable" in result.run.error
    assert rt.stores.runs.recent(PAIR.id)[0].outcome == "failed"


def test_poisoned_op_is_recorded_and_replayed(rt: Runtime, target: MemoryTarget) -> None:
    run_pair(rt, PAIR.id, trigger=RunTrigger.CLI)
    target.break_address("user7@contoso.com", TargetTransient("BackendCommunicationException", status=400))
    report = drain(rt, concurrency=2, backoff=lambda attempt: 0)
    assert report.poisoned == 1 and report.outcomes["created"] == 19
    poisoned = [m for m in rt.stores.poison.peek_all()]
    assert len(poisoned) == 1
    assert rt.stores.contacts.status_counts(PAIR.id)["failed"] == 1
    assert replay_poison(rt, pair_id="other-pair") == 0
    target.break_address("user7@contoso.com", None)  # the admin fixed the cause
    assert replay_poison(rt, pair_id=PAIR.id) == 1
    drain(rt, concurrency=1)
    assert len(target.contacts()) == 20
    assert rt.stores.contacts.status_counts(PAIR.id) == {"ok": 20}


def test_bad_message_goes_straight_to_poison(rt: Runtime) -> None:
    rt.stores.ops.send_text("{not json")
    report = drain(rt, concurrency=1)
    assert report.poisoned == 1 and rt.stores.poison.approximate_count() == 1
    assert record_poison(rt, decode_message("{not json")) is None


def test_ops_of_a_removed_pair_are_dropped(rt: Runtime) -> None:
    op = ContactOp("gone-pair", "r", OpKind.DELETE, "u1", 5, "removed:deleted")
    rt.stores.ops.send(op)
    report = drain(rt, concurrency=1)
    assert report.outcomes == {"stale": 1} and report.poisoned == 0


def test_select_names_exactly_what_mapping_reads() -> None:
    pair = make_pair(contact={"display_name": "{displayName} - {employeeId}",
                              "attributes": {"CustomAttribute3": "{onPremisesExtensionAttributes.extensionAttribute3}"}})
    select = source_select(pair)
    assert "employeeId" in select and "onPremisesExtensionAttributes" in select and "source" not in select
    assert len(select) == len(set(select))
