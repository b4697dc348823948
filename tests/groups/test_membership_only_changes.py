"""A user who joins or leaves scope only through membership (no attribute change, so absent from the users round)
is read by id and gets a contact, or loses it; attribute changes of members still flow as usual."""

from __future__ import annotations

from .conftest import GroupSync


def test_joining_and_leaving_without_attribute_changes(gs: GroupSync) -> None:
    u = gs.add_users(6)
    directory = gs.source.directory
    sales = gs.group("Sales", u[:2])
    gs.use_pair(include=[sales])
    gs.run()
    assert gs.synced() == {u[0], u[1]}

    directory.add_member(sales, u[2])
    directory.add_member(sales, u[3])
    directory.remove_member(sales, u[0])
    result = gs.run()
    assert result.plan is not None
    assert {op.source_id for op in result.plan.ops if op.kind.value == "create"} == {u[2], u[3]}
    assert [(op.source_id, op.reason) for op in result.plan.ops if op.kind.value == "delete"] == [
        (u[0], "left_scope:not_in_group")
    ]
    assert gs.synced() == {u[1], u[2], u[3]}
    contact = next(c for c in gs.target.exchange.contacts() if str(c.get("CustomAttribute15")).endswith(u[2]))
    assert contact["DisplayName"] == "User 2"  # read by id with the pair's $select


def test_attribute_changes_of_members_and_outsiders(gs: GroupSync) -> None:
    u = gs.add_users(3)
    directory = gs.source.directory
    sales = gs.group("Sales", [u[0]])
    gs.use_pair(include=[sales])
    gs.run()
    directory.update_user(u[0], jobTitle="Head of Sales")
    directory.update_user(u[1], jobTitle="Outsider")  # not in scope: still no contact
    result = gs.run()
    assert result.plan is not None and result.plan.counts()["update"] == 1
    assert gs.synced() == {u[0]}


def test_a_join_and_an_attribute_change_in_the_same_round(gs: GroupSync) -> None:
    u = gs.add_users(2)
    directory = gs.source.directory
    sales = gs.group("Sales", [u[0]])
    gs.use_pair(include=[sales])
    gs.run()
    directory.update_user(u[1], displayName="Renamed")
    directory.add_member(sales, u[1])
    gs.run()
    assert gs.synced() == {u[0], u[1]}
    assert any(c["DisplayName"] == "Renamed" for c in gs.target.exchange.contacts())


def test_a_leaver_that_never_had_a_contact_is_not_read(gs: GroupSync) -> None:
    u = gs.add_users(2)
    directory = gs.source.directory
    directory.update_user(u[1], accountEnabled=False)
    sales = gs.group("Sales", u)
    gs.use_pair(include=[sales])
    gs.run()
    assert gs.synced() == {u[0]}
    directory.remove_member(sales, u[1])
    gs.cloud.reset_counts()
    gs.run()
    assert gs.cloud.counts[("graph", "users/delta")] == 1  # the round itself; no read by id
