"""Nested groups: members of a group nested (at any depth) in an include group get a contact; leaving the nested
group, or the nested group leaving the include group, removes it."""

from __future__ import annotations

from .conftest import GroupSync


def test_nested_members_join_and_leave(gs: GroupSync) -> None:
    u = gs.add_users(8)
    directory = gs.source.directory
    nested = gs.group("Sales EMEA", [u[2]])
    top = gs.group("Sales", [u[0], u[1], nested])
    gs.use_pair(include=[top])

    first = gs.run()
    assert first.run.full and gs.synced() == {u[0], u[1], u[2]}

    directory.add_member(nested, u[3])  # joins through the nested group only
    gs.run()
    assert gs.synced() == {u[0], u[1], u[2], u[3]}

    directory.remove_member(nested, u[2])
    gs.run()
    assert gs.synced() == {u[0], u[1], u[3]}

    deeper = gs.group("Sales Nordics", [u[5]])  # a new chain: top > new > deeper
    new = gs.group("Sales DACH", [u[4], deeper])
    directory.add_member(top, new)
    result = gs.run()
    assert not result.run.full
    assert gs.synced() == {u[0], u[1], u[3], u[4], u[5]}

    directory.add_member(deeper, u[6])  # the newly found groups are tracked from now on
    gs.run()
    assert u[6] in gs.synced()

    directory.remove_member(top, nested)  # the whole nested group leaves
    directory.add_member(top, u[3])  # ... but u3 is also a direct member now
    directory.remove_member(new, deeper)
    gs.run()
    assert gs.synced() == {u[0], u[1], u[3], u[4]}


def test_a_user_in_two_paths_stays_until_both_are_gone(gs: GroupSync) -> None:
    u = gs.add_users(2)
    directory = gs.source.directory
    left, right = gs.group("Left", [u[0]]), gs.group("Right", [u[0], u[1]])
    top = gs.group("Top", [left, right])
    gs.use_pair(include=[top])
    gs.run()
    assert gs.synced() == {u[0], u[1]}
    directory.remove_member(left, u[0])
    gs.run()
    assert gs.synced() == {u[0], u[1]}
    directory.remove_member(right, u[0])
    gs.run()
    assert gs.synced() == {u[1]}


def test_a_deleted_include_group_removes_its_members_through_the_gate(gs: GroupSync) -> None:
    u = gs.add_users(3)
    keep = gs.group("Keep", [u[0]])
    doomed = gs.group("Doomed", [u[1], u[2]])
    pair = gs.use_pair(include=[keep, doomed])
    gs.run()
    assert gs.synced() == set(u)
    gs.rt.stores.pairs.add(pair.model_copy(update={"deletion": pair.deletion.model_copy(update={"max_deletes": 1})}),
                           replace=True)
    gs.rt._pairs.clear()
    gs.source.directory.delete_group(doomed)
    result = gs.run()
    assert result.outcome == "quarantined" and gs.synced() == set(u)
    gs.run(allow_deletes=True)
    assert gs.synced() == {u[0]}
