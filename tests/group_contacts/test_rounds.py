"""Groups rounds inside the streamed machinery: a users round handed on over several invocations is followed by
the groups round only once its last page is queued, and a groups round that dies between marking its creates and
saving its deltaLink sends them again on the next run (invariants 2 and 4)."""

from __future__ import annotations

from typing import Any

import pytest

from sync.app.admin.drain import drain
from sync.app.planner.rounds import Invocation
from sync.app.planner.run import run_pair
from sync.contract.vocabulary import RunTrigger
from sync.state.queues import OpQueue

from .conftest import PAIR_ID, GroupContacts


def test_the_groups_round_follows_the_last_page_of_a_streamed_users_round(gc: GroupContacts) -> None:
    users = [gc.user(f"user{i}") for i in range(5)]
    team = gc.unified("Falcon", f"falcon@{gc.source.domain}")
    gc.source.directory.page_size = 2
    gc.use_pair(objects=["users", "groups"])
    outcomes = []
    for _ in range(10):
        result = run_pair(gc.rt, PAIR_ID, trigger=RunTrigger.TIMER, invocation=Invocation(budget_seconds=0))
        outcomes.append(result.outcome)
        if result.outcome != "continued":
            break
        assert "groups_create" not in result.run.counts  # no groups round while the users round goes on
        assert not gc.rt.stores.pair_state.get(PAIR_ID).groups_delta_link
    assert outcomes == ["continued", "continued", "planned"]
    assert result.run.counts["groups_create"] == 1
    drain(gc.rt, concurrency=8)
    assert set(gc.contacts()) == {*users, team}


def test_a_groups_round_that_dies_after_marking_its_creates_sends_them_on_the_next_run(
    gc: GroupContacts, monkeypatch: pytest.MonkeyPatch
) -> None:
    team = gc.unified("Falcon", f"falcon@{gc.source.domain}")
    gc.use_pair(objects=["groups"])
    real_send = OpQueue.send_all

    def dies(self: OpQueue, ops: Any) -> Any:
        raise ConnectionError("the invocation died while sending")

    monkeypatch.setattr(OpQueue, "send_all", dies)
    result = run_pair(gc.rt, PAIR_ID, trigger=RunTrigger.CLI)
    assert result.outcome == "failed"
    assert gc.rt.stores.contacts.get(PAIR_ID, team).status == "queued"  # marked, never sent
    status = gc.rt.stores.pair_state.get(PAIR_ID)
    assert status.groups_round and not status.groups_delta_link

    monkeypatch.setattr(OpQueue, "send_all", real_send)
    result = gc.run()
    assert result.run.counts["groups_create"] == 1
    assert set(gc.contacts()) == {team}
    status = gc.rt.stores.pair_state.get(PAIR_ID)
    assert not status.groups_round and status.groups_delta_link
    assert gc.run().run.counts["groups_create"] == 0  # and never twice
