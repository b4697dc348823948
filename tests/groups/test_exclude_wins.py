"""Exclude groups: a member of an exclude group (directly or nested) gets no contact, even when an include group
has them too; leaving the exclude group brings the contact back."""

from __future__ import annotations

from .conftest import GroupSync


def test_exclude_wins_over_include(gs: GroupSync) -> None:
    u = gs.add_users(4)
    directory = gs.source.directory
    contractors = gs.group("Contractors", [u[1]])
    excluded = gs.group("No GAL", [contractors])
    staff = gs.group("Staff", u[:3])
    gs.use_pair(include=[staff], exclude=[excluded])

    result = gs.run()
    assert gs.synced() == {u[0], u[2]}
    assert result.plan is not None and result.plan.skipped_by_reason["excluded_by_group"] == 1

    directory.add_member(excluded, u[2])  # now excluded directly: the contact goes
    gs.run()
    assert gs.synced() == {u[0]}

    directory.remove_member(contractors, u[1])  # no longer excluded: the contact comes back
    gs.run()
    assert gs.synced() == {u[0], u[1]}


def test_exclude_only_scope_keeps_everyone_else(gs: GroupSync) -> None:
    u = gs.add_users(5)
    excluded = gs.group("Executives", [u[4]])
    gs.use_pair(exclude=[excluded])
    gs.run()
    assert gs.synced() == set(u[:4])
    gs.source.directory.add_member(excluded, u[0])
    gs.run()
    assert gs.synced() == set(u[1:4])


def test_explain_names_the_group_rule(gs: GroupSync) -> None:
    from sync.app.admin.explain import explain

    u = gs.add_users(3)
    sales, contractors = gs.group("Sales", [u[0], u[1]]), gs.group("Contractors", [u[1]])
    pair = gs.use_pair(include=[sales], exclude=[contractors])
    gs.run()
    assert explain(gs.rt, pair.id, u[0]).verdict == "in the address list"
    assert explain(gs.rt, pair.id, u[1]).reason == "excluded_by_group"
    assert explain(gs.rt, pair.id, u[2]).reason == "not_in_group"
