"""Changing a pair's groups changes its definition hash: the next run is a full round that rebuilds the graph."""

from __future__ import annotations

from .conftest import GroupSync


def test_changing_the_groups_forces_a_full_round(gs: GroupSync) -> None:
    u = gs.add_users(4)
    first = gs.group("First", u[:2])
    second = gs.group("Second", u[2:])
    gs.use_pair(include=[first])
    gs.run()
    assert gs.synced() == set(u[:2])
    gs.use_pair(include=[second])
    gs.cloud.reset_counts()
    result = gs.run()
    assert result.run.full
    assert gs.cloud.counts[("graph", "groups/transitiveMembers")] == 1
    assert gs.synced() == set(u[2:])


def test_group_scoping_can_be_turned_off(gs: GroupSync) -> None:
    u = gs.add_users(3)
    gs.use_pair(include=[gs.group("Some", u[:1])])
    gs.run()
    gs.use_pair()
    gs.cloud.reset_counts()
    result = gs.run()
    assert result.run.full and gs.synced() == set(u)
    assert gs.cloud.counts[("graph", "groups/delta")] == 0
