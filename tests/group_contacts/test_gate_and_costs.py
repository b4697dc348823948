"""Groups as contacts with the pair's policies: staged deletes, the safety gate counting groups with users, a kind
dropped from `objects`, what reading Microsoft 365 groups' visibility costs, and `explain` for a group."""

from __future__ import annotations

import pytest

from sync.app.admin.explain import explain
from sync.app.admin.status import pair_status

from .conftest import PAIR_ID, GroupContacts


def test_staged_delete_hides_a_deleted_groups_contact(gc: GroupContacts) -> None:
    domain = gc.source.domain
    sales = gc.distribution("Sales", f"sales@{domain}")
    gc.use_pair(objects=["groups"], deletion={"mode": "hide_then_delete", "grace_days": 30, "max_deletes": 50})
    gc.run()
    gc.source.directory.delete_group(sales)
    result = gc.run()
    assert result.run.counts["groups_hide"] == 1
    contact = gc.contacts()[sales]
    assert contact["HiddenFromAddressListsEnabled"] is True
    assert gc.rt.stores.contacts.get(PAIR_ID, sales).status == "hidden"


def test_the_safety_gate_counts_group_removals_with_the_users_and_release_applies_them(gc: GroupContacts) -> None:
    domain = gc.source.domain
    users = [gc.user(f"user{i}") for i in range(3)]
    groups = [gc.distribution(f"List {i}", f"list{i}@{domain}") for i in range(3)]
    gc.use_pair(objects=["users", "groups"], deletion={"max_deletes": 4, "max_delete_percent": 100})
    gc.run()
    assert len(gc.contacts()) == 6
    for user in users[:2]:
        gc.source.directory.delete_user(user, permanent=True)
    for group in groups:
        gc.source.directory.delete_group(group)

    result = gc.run()  # 2 user deletes pass the gate alone; with 3 group deletes the pair's 4 are exceeded
    assert result.outcome == "quarantined" and "groups round" in result.quarantine_reason
    assert set(groups) <= set(gc.contacts())
    status = gc.rt.stores.pair_state.get(PAIR_ID)
    assert status.gate_quarantined and status.groups_delta_link  # the groups deltaLink stayed where it was

    result = gc.run(allow_deletes=True)
    assert not gc.rt.stores.pair_state.get(PAIR_ID).quarantined
    assert set(gc.contacts()) == {users[2]}
    assert result.run.counts["groups_delete"] == 3


def test_groups_dropped_from_objects_have_their_contacts_removed(gc: GroupContacts) -> None:
    domain = gc.source.domain
    adele = gc.user("adele")
    team = gc.unified("Falcon", f"falcon@{domain}")
    gc.use_pair(objects=["users", "groups"])
    gc.run()
    assert set(gc.contacts()) == {adele, team}
    gc.use_pair(objects=["users"])
    gc.cloud.reset_counts()
    result = gc.run()
    assert set(gc.contacts()) == {adele}
    assert result.run.counts["groups_delete"] == 1
    assert gc.cloud.counts[("graph", "groups/delta")] == 0  # nothing to read: every group contact goes
    gc.cloud.reset_counts()
    gc.run()  # and then the pair is users-only again: no groups round at all
    assert gc.cloud.counts["graph"] == 1


def test_visibility_of_microsoft_365_groups_is_read_twenty_per_batch_and_not_when_idle(gc: GroupContacts) -> None:
    domain = gc.source.domain
    teams = [gc.unified(f"Team {i}", f"team{i}@{domain}", hideFromAddressLists=i % 10 == 0) for i in range(45)]
    lists = [gc.distribution(f"List {i}", f"list{i}@{domain}") for i in range(5)]
    gc.use_pair(objects=["groups"])
    gc.cloud.reset_counts()
    result = gc.run()
    assert gc.cloud.counts[("graph", "$batch")] == 3  # 45 Microsoft 365 groups, 20 per batch; lists need none
    assert result.run.counts["groups_create"] == 45 - 5 + 5 and result.run.counts["groups_skipped_hidden_from_gal"] == 5
    assert set(gc.contacts()) == {t for i, t in enumerate(teams) if i % 10} | set(lists)

    gc.source.directory.update_group(teams[1], description="changed")
    gc.cloud.reset_counts()
    gc.run()
    assert gc.cloud.counts[("graph", "$batch")] == 1 and gc.cloud.counts[("graph", "groups/delta")] == 1
    gc.cloud.reset_counts()
    gc.run()
    assert gc.cloud.counts.snapshot().get(("graph", "$batch"), 0) == 0 and gc.cloud.counts["graph"] == 1


def test_requests_throttled_inside_a_batch_are_asked_again_and_only_they(gc: GroupContacts) -> None:
    domain = gc.source.domain
    teams = [gc.unified(f"Team {i}", f"team{i}@{domain}", hideFromAddressLists=i in (3, 21)) for i in range(25)]
    gc.use_pair(objects=["groups"])
    gc.cloud.faults.inject("graph", "batch_throttle", times=4, retry_after="0")  # 4 of the first batch's 20: 429
    gc.cloud.reset_counts()
    result = gc.run()
    assert gc.cloud.counts[("faults", "batch_throttle")] == 4
    assert gc.cloud.counts[("graph", "$batch")] == 3  # 20 + 5, then the 4 throttled ones again in one batch
    assert result.run.counts["groups_skipped_hidden_from_gal"] == 2  # their flags were read, not guessed
    assert set(gc.contacts()) == {t for i, t in enumerate(teams) if i not in (3, 21)}


def test_without_group_read_all_the_pair_is_quarantined_for_its_credentials(gc: GroupContacts) -> None:
    gc.source.register_app(gc.client_id, roles=("User.Read.All", "GroupMember.Read.All", "Exchange.ManageAsApp"))
    gc.distribution("Sales", f"sales@{gc.source.domain}")
    gc.use_pair(objects=["groups"])
    result = gc.run()
    assert result.outcome == "quarantined"
    assert "Group.Read.All" in result.run.error


def test_explain_and_status_speak_of_groups(gc: GroupContacts) -> None:
    domain = gc.source.domain
    team = gc.unified("Falcon", f"falcon@{domain}", description="Team")
    board = gc.unified("Board", f"board@{domain}", hideFromAddressLists=True)
    gc.use_pair(objects=["users", "groups"])
    gc.run()
    shown = explain(gc.rt, PAIR_ID, team)
    assert shown.kind == "group" and shown.in_scope and shown.verdict == "in the address list"
    assert shown.desired["Notes"] == "Team"
    hidden = explain(gc.rt, PAIR_ID, board)
    assert hidden.kind == "group" and not hidden.in_scope and hidden.reason == "hidden_from_gal"
    assert "hideFromAddressLists" in hidden.verdict
    status = pair_status(gc.rt, PAIR_ID)
    assert status["group_contacts"] == {"ok": 1} and status["contacts"] == {}


def test_plan_shows_the_groups_round_and_writes_nothing(gc: GroupContacts, capsys: pytest.CaptureFixture[str]) -> None:
    from sync.app.planner.run import preview
    from sync.cli.render import plan_json, plan_tables

    adele = gc.user("adele")
    team = gc.unified("Falcon", f"falcon@{gc.source.domain}")
    gc.source.directory.add_group("Laptops")  # a security group without mail
    gc.use_pair(objects=["users", "groups"])
    result = preview(gc.rt, PAIR_ID)
    body = plan_json(result)
    assert body["counts"]["create"] == 1 and [op["source_id"] for op in body["ops"]] == [adele]
    assert body["groups"]["counts"]["create"] == 1 and [op["source_id"] for op in body["groups"]["ops"]] == [team]
    assert body["groups"]["skipped"][0]["reason"] == "no_mail"
    assert gc.rt.stores.contacts.status_counts(PAIR_ID) == {}
    assert not gc.rt.stores.pair_state.get(PAIR_ID).groups_delta_link
    plan_tables(result)
    out = capsys.readouterr().out
    assert "Groups: full round (every group)" in out and "Falcon" in out
    assert "no_mail: the group has no mail address" in out
