"""What group scoping costs: an idle incremental run of a pair with three include groups (one nested in another)
makes one users/delta and one groups/delta request and no Exchange request; 100 membership changes add a few reads."""

from __future__ import annotations

from .conftest import GroupSync


def test_an_idle_run_makes_two_graph_requests_and_no_exchange_request(gs: GroupSync) -> None:
    u = gs.add_users(30)
    nested = gs.group("Sales EMEA", u[:10])
    sales = gs.group("Sales", [nested, *u[10:15]])
    support = gs.group("Support", u[15:20])
    gs.use_pair(include=[sales, support, nested])
    gs.run()
    assert len(gs.synced()) == 20

    gs.cloud.reset_counts()
    result = gs.run()
    assert result.outcome == "no_changes" and not result.run.full
    assert gs.cloud.counts["graph"] <= 2
    assert gs.cloud.counts[("graph", "users/delta")] == 1 and gs.cloud.counts[("graph", "groups/delta")] == 1
    assert gs.cloud.counts["exchange"] == 0
    assert result.run.graph_requests == 2


def test_a_hundred_membership_changes(gs: GroupSync, capsys: object) -> None:
    u = gs.add_users(200)
    nested = gs.group("Sales EMEA", u[:50])
    sales = gs.group("Sales", [nested, *u[50:100]])
    support = gs.group("Support", u[100:120])
    gs.use_pair(include=[sales, support, nested])
    gs.run()
    assert len(gs.synced()) == 120

    directory = gs.source.directory
    for user in u[120:170]:  # 50 join (through the nested group or directly)
        directory.add_member(nested if int(user[-1], 16) % 2 else support, user)
    for user in u[50:100]:  # 50 leave
        directory.remove_member(sales, user)
    gs.cloud.reset_counts()
    result = gs.run()
    counts = {k: v for k, v in gs.cloud.counts.snapshot().items() if isinstance(k, tuple) and k[0] in ("graph", "exchange")}
    print(f"\n100 membership changes: graph={gs.cloud.counts['graph']} exchange={gs.cloud.counts['exchange']} {counts}")
    assert result.plan is not None and result.plan.counts()["create"] == 50 and result.plan.counts()["delete"] == 50
    assert gs.synced() == set(u[:50]) | set(u[100:170])
    # users/delta round + 2 reads by id (100 users, 50 per request); groups/delta: 100 entries fit 1-2 pages
    assert gs.cloud.counts[("graph", "users/delta")] == 3
    assert gs.cloud.counts[("graph", "groups/delta")] <= 2
    assert gs.cloud.counts[("graph", "groups/transitiveMembers")] == 0
