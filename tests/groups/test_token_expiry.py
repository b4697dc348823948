"""An expired or reset groups delta token rebuilds the membership graph (transitiveMembers + a first groups round);
changes made while the token was lost are still found, by comparing the rebuilt graph with the stored one."""

from __future__ import annotations

import pytest

from .conftest import GroupSync


@pytest.mark.parametrize("fault", ["delta_expired", "delta_reset"])
def test_membership_token_expiry_rebuilds(gs: GroupSync, fault: str) -> None:
    u = gs.add_users(6)
    directory = gs.source.directory
    nested = gs.group("Nested", [u[2]])
    sales = gs.group("Sales", [u[0], u[1], nested])
    gs.use_pair(include=[sales])
    gs.run()
    assert gs.synced() == {u[0], u[1], u[2]}

    directory.remove_member(sales, u[0])
    directory.add_member(nested, u[3])
    gs.cloud.faults.inject("graph", fault, operation="groups/delta")
    gs.cloud.reset_counts()
    result = gs.run()
    assert result.outcome == "planned" and not result.run.full  # the users round stays incremental
    assert gs.cloud.counts[("graph", "groups/transitiveMembers")] == 1
    assert gs.synced() == {u[1], u[2], u[3]}

    directory.add_member(sales, u[4])  # the rebuilt graph's new token works
    gs.cloud.reset_counts()
    gs.run()
    assert gs.synced() == {u[1], u[2], u[3], u[4]}
    assert gs.cloud.counts[("graph", "groups/transitiveMembers")] == 0


def test_a_users_token_expiry_rebuilds_the_groups_too(gs: GroupSync) -> None:
    u = gs.add_users(3)
    sales = gs.group("Sales", u[:2])
    gs.use_pair(include=[sales])
    gs.run()
    gs.source.directory.remove_member(sales, u[1])
    gs.cloud.faults.inject("graph", "delta_expired", operation="users/delta")
    result = gs.run()
    assert result.run.full
    assert gs.synced() == {u[0]}


def test_nothing_is_saved_when_the_round_is_quarantined(gs: GroupSync) -> None:
    u = gs.add_users(4)
    sales = gs.group("Sales", u)
    pair = gs.use_pair(include=[sales])
    gs.run()
    gs.rt.stores.pairs.add(pair.model_copy(update={"deletion": pair.deletion.model_copy(update={"max_deletes": 1})}),
                           replace=True)
    gs.rt._pairs.clear()
    before = gs.rt.stores.groups.load(pair.id)
    for user in u[:3]:
        gs.source.directory.remove_member(sales, user)
    assert gs.run().outcome == "quarantined"
    after = gs.rt.stores.groups.load(pair.id)
    assert before is not None and after is not None and after.batches == before.batches  # invariant 4
    assert gs.run(allow_deletes=True).outcome == "planned"
    assert gs.synced() == {u[3]}
