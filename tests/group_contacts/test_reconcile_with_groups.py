"""Reconcile (issue 13) on a pair that syncs users and groups (issue 15): the target cannot tell a group's contact
from a user's, so a lost ContactState must not turn group contacts into orphans of the users' round."""

from __future__ import annotations

from sync.app.admin.drain import drain
from sync.app.planner.reconcile import reconcile_pair

from .conftest import PAIR_ID, GroupContacts


def test_a_lost_state_of_a_users_and_groups_pair_is_reconciled_without_removing_or_recreating_a_contact(
    gc: GroupContacts,
) -> None:
    domain = gc.source.domain
    falcon = gc.unified("Falcon", f"falcon@{domain}")
    sales = gc.distribution("Sales", f"sales@{domain}")
    alice, bob = gc.user("alice"), gc.user("bob")
    gc.use_pair(objects=["users", "groups"])
    gc.run()
    before = gc.contacts()
    assert {falcon, sales, alice, bob} <= set(before)
    guids = {source_id: contact["Guid"] for source_id, contact in before.items()}

    assert gc.rt.stores.contacts.forget_pair(PAIR_ID) > 0  # the storage account was lost
    gc.rt.stores.pair_state.forget(PAIR_ID)
    result, findings = reconcile_pair(gc.rt, PAIR_ID, allow_deletes=False)
    drain(gc.rt, concurrency=8)

    assert findings is not None and result.outcome != "quarantined", result.run.error
    after = gc.contacts()
    assert set(after) == set(before), "no contact removed, none added"
    assert {source_id: contact["Guid"] for source_id, contact in after.items()} == guids, "none recreated"
    assert result.run.counts.get("delete", 0) == 0 and result.run.counts.get("groups_delete", 0) == 0
