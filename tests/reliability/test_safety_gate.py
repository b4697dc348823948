"""Invariant 5: a plan that would remove more contacts than the pair allows deletes nothing; the pair is quarantined
with the reason (visible in `python -m sync status --json` and the HTTP API) until an admin releases it once."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

from .conftest import SyncPair, exchange_counts, run_cli


@pytest.mark.parametrize("cause", ["leavers", "wrong_include_domains"])
def test_a_mass_removal_is_quarantined_until_released_once(
    make_sync: Callable[..., SyncPair], cause: str, record: Callable[..., None]
) -> None:
    sync = make_sync(deletion={"max_deletes": 5, "max_delete_percent": 10})
    users = sync.add_users(20)
    sync.sync()
    contacts_before = {c["Guid"] for c in sync.ours()}
    if cause == "leavers":
        for user in users[:12]:  # 60 % leave scope
            sync.source.directory.update_user(user, accountEnabled=False)
    else:  # a typo in the scope: nobody's domain is included any more
        sync.replace_pair(scope={"include_domains": ["contoso.example"]})
    sync.cloud.reset_counts()

    sync.plan()
    reason = sync.rt.stores.pair_state.get(sync.pair.id).quarantine_reason
    removals = 12 if cause == "leavers" else 20
    assert reason.startswith(f"plan deletes {removals} contacts, more than deletion.max_deletes (5)")
    assert sync.rt.stores.ops.approximate_count() == 0, "nothing was queued"
    assert exchange_counts(sync.cloud) == {}, "no Exchange call at all"
    assert {c["Guid"] for c in sync.ours()} == contacts_before

    status = run_cli("status", "--pair", sync.pair.id, "--json")
    assert status.returncode == 0, status.stderr
    [shown] = json.loads(status.stdout)["pairs"]
    assert shown["quarantined"] is True and shown["quarantine_reason"] == reason
    assert shown["last_run"]["outcome"] == "quarantined"
    api = sync.host.call_http("GET", f"/api/pairs/{sync.pair.id}")
    assert api.status == 200 and api.json["status"]["quarantine_reason"] == reason
    refused = sync.host.call_http("POST", f"/api/pairs/{sync.pair.id}/resync")
    assert refused.status == 409 and refused.json["quarantine_reason"] == reason
    sync.plan()  # the next timer run leaves it quarantined too
    assert sync.rt.stores.pair_state.get(sync.pair.id).quarantined and exchange_counts(sync.cloud) == {}

    if cause == "wrong_include_domains":  # the admin fixes the scope; releasing then removes nothing
        sync.replace_pair(scope={"include_domains": []})
    released = sync.host.call_http("POST", f"/api/pairs/{sync.pair.id}/resync", {"allow_deletes": "true"})
    assert released.status in (200, 202) and released.json["quarantine_released"] is True
    sync.drain()
    state = sync.rt.stores.pair_state.get(sync.pair.id)
    assert not state.quarantined
    deleted = exchange_counts(sync.cloud).get("Remove-MailContact", 0)
    assert deleted == (12 if cause == "leavers" else 0)
    sync.assert_in_step()

    # Released once: the next mass removal is stopped again.
    remaining = [u for u in users if sync.contacts_of(u)]
    for user in remaining[:6]:
        sync.source.directory.update_user(user, accountEnabled=False)
    sync.plan()
    assert sync.rt.stores.pair_state.get(sync.pair.id).quarantined
    assert len(sync.ours()) == len(remaining)
    record(contacts=len(contacts_before), removals_planned=removals, deleted_while_quarantined=0,
           http_resync_status=refused.status, deleted_after_release=deleted, gate_again=True)


def test_leavers_in_waves_are_stopped_once_the_window_total_passes_the_limit(
    make_sync: Callable[..., SyncPair], record: Callable[..., None]
) -> None:
    """Each wave passes the per-plan gate (16 of 300, the limit is 10 % = 30); the waves together do not: the gate
    counts what the pair queued over `deletion.window_hours`, on a clock the test moves (no waiting)."""
    sync = make_sync(deletion={"mode": "hide", "max_deletes": 1000, "max_delete_percent": 10, "window_hours": 24})
    users = sync.add_users(300)
    sync.sync(deadline_seconds=180)
    clock = [datetime(2026, 1, 5, 9, 0, tzinfo=UTC)]
    sync.rt.stores.removals.clock = lambda: clock[0]

    def wave(n: int) -> None:
        for user in users[16 * n:16 * (n + 1)]:
            sync.source.directory.update_user(user, accountEnabled=False)
        sync.sync()

    def hidden() -> int:
        return sum(1 for c in sync.ours() if c.get("HiddenFromAddressListsEnabled"))

    wave(0)
    clock[0] += timedelta(hours=25)  # the first wave leaves the window
    wave(1)
    assert hidden() == 32 and not sync.rt.stores.pair_state.get(sync.pair.id).quarantined
    waves = 2
    for n in range(2, 12):  # twelve waves in all, each under the per-plan limit
        clock[0] += timedelta(minutes=30)
        wave(n)
        waves += 1
        if sync.rt.stores.pair_state.get(sync.pair.id).quarantined:
            break
    state = sync.rt.stores.pair_state.get(sync.pair.id)
    assert state.quarantined and waves == 3, (waves, hidden())
    assert state.quarantine_reason == (
        "over the last 24 h (deletion.window_hours) the pair removes (hides or deletes) 32 of 300 contacts (10.7%), "
        "more than deletion.max_delete_percent (10%): 16 in this plan, 16 more queued earlier in the window")
    assert hidden() == 32, "the wave that crossed the window's limit removed nothing"
    record(contacts=300, wave=16, waves_run=waves, removed_in_window=16, removed_in_all=hidden())
