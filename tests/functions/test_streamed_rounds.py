"""Streamed, checkpointed rounds through the Functions entry points against the simulated Graph (real msgraph-sdk over
loopback HTTPS, Azurite): an invocation plans what its budget allows and hands the rest on; a round interrupted after
some pages resumes from its checkpoint and ends like an uninterrupted one; an expired checkpoint restarts the round;
the full round's sweep comes once, after the last page, through the safety gate."""

from __future__ import annotations

import dataclasses
from collections import Counter

import pytest

from sync.contract.vocabulary import RunOutcome
from sync.state.runs import RunRecord
from tests.support.sim_pairs import sim_pair

from .conftest import PAIR_ID, SECRET, SECRET_ENV, Sync

PAGE = 5


@pytest.fixture
def paged(sync: Sync) -> Sync:
    """Graph pages of 5 users, and a planner budget of 0 s: every invocation plans one page and hands the rest on."""
    sync.source.directory.page_size = PAGE
    sync.rt.tuning = dataclasses.replace(sync.rt.tuning, planner_budget_seconds=0)
    return sync


def round_runs(sync: Sync) -> list[RunRecord]:
    return list(reversed(sync.rt.stores.runs.recent(PAIR_ID, limit=50)))


def creates(sync: Sync) -> int:
    return sync.cloud.counts[("exchange", "New-MailContact")]


def contacts_by_name(target_contacts: list[dict[str, object]]) -> Counter[str]:
    return Counter(str(c["DisplayName"]) for c in target_contacts)


def test_a_round_interrupted_after_some_pages_resumes_and_ends_like_an_uninterrupted_one(paged: Sync) -> None:
    sync = paged
    sync.add_users(23)  # 5 pages
    sync.host.fire_timer(run_planner=False)
    sync.host.run_planner(limit=2)  # two invocations, two pages, each handing the rest on
    status = sync.rt.stores.pair_state.get(PAIR_ID)
    assert status.round is not None and status.round.page == 2 and status.last_outcome == "continued"
    # The next invocation meets a Graph that asks for three minutes of patience: it fails, the checkpoint stays.
    sync.cloud.faults.inject("graph", "throttle", operation="delta", times=1, retry_after="180")
    sync.host.run_planner(limit=1)
    failed = round_runs(sync)[-1]
    assert failed.outcome == "failed" and "Retry-After 180" in failed.error
    assert sync.rt.stores.pair_state.get(PAIR_ID).round.page == 2  # type: ignore[union-attr]
    sync.host.fire_timer()  # a failed round is due again: it resumes from page 2, to the end
    runs = round_runs(sync)
    assert [run.outcome for run in runs] == ["continued"] * 2 + ["failed"] + ["continued"] * 2 + ["planned"]
    assert len({run.round_id for run in runs}) == 1 and sum(run.pages for run in runs) == 5
    assert sum(run.counts.get("create", 0) for run in runs) == 23
    status = sync.rt.stores.pair_state.get(PAIR_ID)
    assert status.round is None and status.delta_link
    sync.cloud.reset_counts()
    sync.host.drain_queue(deadline_seconds=60)
    assert sync.anchors() == sync.expected_anchors() and creates(sync) == 23
    assert sync.rt.stores.contacts.status_counts(PAIR_ID) == {"ok": 23}

    # The same users synced by a pair whose round ran in one go: the same contacts.
    twin = sim_pair(sync.cloud, secret=SECRET, secret_env=SECRET_ENV, pair_id="twin-pair")
    for user in sync.source.directory.users:
        twin.source.directory.add_user({
            **{k: v for k, v in user.items() if k != "id"},
            "mail": str(user["mail"]).replace(sync.source.domain, twin.source.domain),
            "userPrincipalName": str(user["userPrincipalName"]).replace(sync.source.domain, twin.source.domain),
        })
    sync.rt.stores.pairs.add(twin.pair)
    sync.rt.tuning = dataclasses.replace(sync.rt.tuning, planner_budget_seconds=240)
    sync.host.fire_timer()
    sync.host.drain_queue(deadline_seconds=60)
    [twin_run] = sync.rt.stores.runs.recent("twin-pair")
    assert twin_run.outcome == "planned" and twin_run.pages == 1
    assert contacts_by_name(twin.target.exchange.contacts()) == contacts_by_name(sync.target.exchange.contacts())
    # And an idle run after the long round costs what it always did: one Graph request, no Exchange request.
    sync.cloud.reset_counts()
    sync.host.fire_timer()
    assert sync.cloud.counts["graph"] == 2 and sync.cloud.counts["exchange"] == 0  # one per pair


def test_an_expired_checkpoint_restarts_the_round_cleanly(paged: Sync) -> None:
    sync = paged
    sync.add_users(17)  # 4 pages
    sync.host.fire_timer(run_planner=False)
    sync.host.run_planner(limit=2)
    first_round = sync.rt.stores.pair_state.get(PAIR_ID).round
    assert first_round is not None and first_round.page == 2
    sync.cloud.faults.inject("graph", "delta_expired", times=1)  # the checkpoint's nextLink: 400 syncStateNotFound
    sync.host.run_planner()
    runs = round_runs(sync)
    assert [run.round_id == first_round.round_id for run in runs] == [True, True] + [False] * (len(runs) - 2)
    assert runs[-1].outcome == "planned" and runs[-1].full
    status = sync.rt.stores.pair_state.get(PAIR_ID)
    assert status.round is None and status.abandoned == {} and status.delta_link
    assert list(sync.rt.stores.round_pages.table.query_entities(f"PartitionKey eq 'round|{PAIR_ID}'")) == []
    sync.cloud.reset_counts()
    report = sync.host.drain_queue(deadline_seconds=60)
    assert sync.anchors() == sync.expected_anchors()
    assert creates(sync) == 17, "each contact made once, though pages 0 and 1 were planned twice"
    assert report.completed >= 17 and sync.rt.stores.contacts.status_counts(PAIR_ID) == {"ok": 17}


def test_the_full_round_sweep_comes_once_after_the_last_page_through_the_gate(paged: Sync) -> None:
    sync = paged
    users = sync.add_users(20)
    sync.rt.tuning = dataclasses.replace(sync.rt.tuning, planner_budget_seconds=240)
    sync.host.fire_timer()
    sync.host.drain_queue(deadline_seconds=60)
    sync.rt.tuning = dataclasses.replace(sync.rt.tuning, planner_budget_seconds=0)
    for user_id in users[:3]:  # 15 % leave while the delta token expires: no removal is ever reported
        sync.source.directory.delete_user(user_id, permanent=True)
    sync.source.directory.expire_tokens()
    sync.host.fire_timer()
    runs = round_runs(sync)[1:]
    assert all(run.full for run in runs) and [run.outcome for run in runs][-1] == "quarantined"
    assert [run.counts.get("delete", 0) for run in runs] == [0] * (len(runs) - 1) + [3]
    assert "3 of 20 contacts (15.0%)" in runs[-1].error
    assert sync.rt.stores.ops.approximate_count() == 0 and len(sync.target.exchange.contacts()) == 20
    reply = sync.host.call_http("POST", f"/api/pairs/{PAIR_ID}/resync", {"allow_deletes": "true"})
    assert reply.status == 202 and reply.json["outcome"] == RunOutcome.CONTINUED, "one page per invocation"
    sync.host.run_planner()
    released = round_runs(sync)[-1]
    assert released.outcome == "planned" and released.counts["delete"] == 3
    sync.host.drain_queue(deadline_seconds=60)
    assert sync.anchors() == sync.expected_anchors() and len(sync.anchors()) == 17
    assert not sync.rt.stores.pair_state.get(PAIR_ID).quarantined
