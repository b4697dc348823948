"""Groups as contacts through the Functions entry points: timer → pair-runs → planner → contact-ops → worker, for
a pair whose objects are users and groups; then an idle timer run costs 2 Graph requests and no Exchange request."""

from __future__ import annotations

from .conftest import PAIR_ID, Sync


def test_timer_to_worker_keeps_users_and_groups_in_step(sync: Sync) -> None:
    sync.source.register_app(sync.pair.source.client_id, roles=("User.Read.All", "Group.Read.All"))
    pair = sync.pair.model_copy(update={"objects": ["users", "groups"]})
    sync.rt.stores.pairs.add(pair, replace=True)
    sync.rt._pairs.clear()
    sync.add_users(3)
    domain = sync.source.domain
    team = sync.source.directory.add_group("Falcon", mail=f"falcon@{domain}", mailEnabled=True, securityEnabled=False,
                                           groupTypes=["Unified"], description="The Falcon team")
    sync.host.fire_timer()
    report = sync.host.drain_queue(deadline_seconds=30)
    assert report.completed == 4 and report.poisoned == 0 and report.left_in_queue == 0
    anchors = sync.anchors()
    assert sync.expected_anchors() <= anchors and f"ctcs|{sync.source.tenant_id}|{team}" in anchors
    assert sync.rt.stores.contacts.status_counts(PAIR_ID) == {"ok": 3, "groups_ok": 1}
    [run] = sync.rt.stores.runs.recent(PAIR_ID)
    assert (run.outcome, run.counts["create"], run.counts["groups_create"]) == ("planned", 3, 1)

    sync.cloud.reset_counts()
    sync.host.fire_timer()
    sync.host.drain_queue(deadline_seconds=30)
    assert sync.cloud.counts["graph"] == 2 and sync.cloud.counts["exchange"] == 0
