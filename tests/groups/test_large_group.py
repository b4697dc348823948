"""A 1,200-member group spans twelve groups/delta pages (100 member entries each): every slice is merged before
scope is decided, on the first round and when hundreds of members change at once."""

from __future__ import annotations

from sync.app.planner.run import run_pair
from sync.contract.vocabulary import RunTrigger

from .conftest import PAIR_ID, GroupSync


def test_a_group_of_1200_spanning_pages(gs: GroupSync) -> None:
    directory = gs.source.directory
    directory.group_page_size = 100
    u = gs.add_users(1300)
    everyone = gs.group("Everyone", u[:1200])
    gs.use_pair(include=[everyone])

    gs.cloud.reset_counts()
    first = run_pair(gs.rt, PAIR_ID, trigger=RunTrigger.CLI)  # planned and queued; applying 1,200 contacts is not the point
    assert first.plan is not None and first.plan.counts()["create"] == 1200
    assert first.plan.skipped_by_reason["not_in_group"] == 100
    full = {k[1]: v for k, v in gs.cloud.counts.snapshot().items() if isinstance(k, tuple) and k[0] == "graph"}
    print(f"\nfull rebuild of a 1,200-member group: graph={gs.cloud.counts['graph']} {full}")
    assert full["groups/delta"] == 12 and full["groups/transitiveMembers"] == 2  # $top=999: two pages

    for user in u[1200:]:
        directory.add_member(everyone, user)
    for user in u[:150]:
        directory.remove_member(everyone, user)
    gs.cloud.reset_counts()
    second = run_pair(gs.rt, PAIR_ID, trigger=RunTrigger.CLI)
    assert second.plan is not None and not second.run.full
    # The first run's creates are still queued (marked `queued` in ContactState): the 150 leavers get deletes that
    # win over their late creates, and the 100 joiners are created. All 250 are read by id, 50 per request.
    assert second.plan.counts()["create"] == 100 and second.plan.counts()["delete"] == 150
    assert gs.cloud.counts[("graph", "groups/delta")] == 3  # 250 changes, 100 member entries per page
    assert gs.cloud.counts[("graph", "users/delta")] == 1 + 5  # the round, then 250 users read by id (50 each)
