"""Change notifications end to end through the Functions entry points: the timer makes the pair's Graph subscription
(the simulated Graph validates the notification route over loopback HTTPS), directory changes make the simulated
Graph post notifications to the route, the route asks for one delayed planning run per burst, and the run reads
users/delta like any other. Forged notifications are counted and change nothing; expired, removed and
reauthorization-required subscriptions are renewed or made again; a disabled pair's subscription is deleted."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta

import pytest

import function_app
from sim.subscriptions import SimSubscription
from sync.app.admin.status import status_report
from sync.cli import main as cli
from sync.contract.vocabulary import RunTrigger, SubscriptionState
from sync.state.entities import iso, now_utc
from tests.support.sim_pairs import sim_pair

from .conftest import PAIR_ID, SECRET, SECRET_ENV, Sync

DELAY_SECONDS = 1  # CTCS_NOTIFICATION_DELAY_SECONDS in these tests


@dataclass
class Notified:
    sync: Sync
    url: str

    @property
    def subscriptions(self) -> list[SimSubscription]:
        return self.sync.cloud.subscriptions.all(self.sync.source.tenant_id)

    def subscription(self) -> SimSubscription:
        [sub] = self.subscriptions
        return sub

    def runs(self, trigger: RunTrigger = RunTrigger.NOTIFICATION) -> list[str]:
        return [run.run_id for run in self.sync.rt.stores.runs.recent(PAIR_ID, limit=50) if run.trigger == trigger]

    def delivered(self) -> int:
        """Items the simulated Graph has posted (and the route answered 2xx) for this test's source tenant."""
        return sum(1 for _, item in self.sync.cloud.subscriptions.delivered
                   if item.get("tenantId") == self.sync.source.tenant_id)


def wait_until(condition: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.05)


@pytest.fixture
def notified(sync: Sync, monkeypatch: pytest.MonkeyPatch) -> Iterator[Notified]:
    """The pair synced once by the timer, with change notifications on: the route on a loopback HTTPS listener."""
    base = sync.host.listen(sync.cloud.tls_files)
    monkeypatch.setenv("CTCS_CHANGE_NOTIFICATIONS", "on")
    monkeypatch.setenv("CTCS_NOTIFICATION_URL", f"{base}/api/notifications")
    monkeypatch.setenv("CTCS_NOTIFICATION_DELAY_SECONDS", str(DELAY_SECONDS))
    function_app._runtime.clear()
    subscriptions = sync.cloud.subscriptions
    subscriptions.delay, subscriptions.batch = 0.1, 100
    sync.add_users(5)
    sync.host.fire_timer()
    sync.host.drain_queue(deadline_seconds=60)
    assert sync.anchors() == sync.expected_anchors()
    try:
        yield Notified(sync, f"{base}/api/notifications")
    finally:
        for sub in subscriptions.all(sync.source.tenant_id):
            subscriptions.expire(sub.id)
        subscriptions.delay, subscriptions.batch = 0.2, 100
        sync.host.close()


def test_the_timer_subscribes_through_the_validation_handshake(notified: Notified) -> None:
    sub = notified.subscription()
    assert sub.resource == "users" and sub.notification_url == notified.url == sub.lifecycle_url
    assert timedelta(days=28) < sub.expires_at - now_utc() <= timedelta(minutes=41_760)
    [row] = notified.sync.rt.stores.subscriptions.of_pair(PAIR_ID)
    assert row.subscription_id == sub.id and row.state == SubscriptionState.ACTIVE
    assert row.matches(sub.client_state) and sub.client_state not in str(row)  # kept as a hash only
    reply = notified.sync.host.call_http("POST", "notifications", {"validationToken": "Validation: a+b c"})
    assert (reply.status, reply.body, reply.headers["Content-Type"].split(";")[0]) == (
        200, b"Validation: a+b c", "text/plain")
    notified.sync.host.fire_timer()
    assert [s.id for s in notified.subscriptions] == [sub.id], "a fresh subscription is neither renewed nor replaced"


def test_a_change_makes_one_notification_run_that_updates_the_contact(notified: Notified) -> None:
    sync = notified.sync
    [uid, *_] = [u["id"] for u in sync.source.directory.users]
    sync.source.directory.update_user(uid, jobTitle="Head of Sales")
    wait_until(lambda: notified.delivered() >= 1)
    assert sync.rt.stores.pair_runs.approximate_count() == 1, "the route asked for one run"
    assert sync.rt.stores.ops.approximate_count() == 0, "and did no Graph or Exchange work itself"
    report = sync.host.drain_queue(deadline_seconds=30)
    assert report.planner_runs == 1 and report.left_in_queue == 0
    [contact] = [c for c in sync.target.exchange.contacts() if str(c.get("CustomAttribute15")).endswith(uid)]
    assert contact.get("Title") == "Head of Sales"
    assert len(notified.runs()) == 1
    [status] = status_report(sync.rt)["pairs"]
    [sub] = status["subscriptions"]
    assert sub["notifications_accepted"] == 1 and sub["notifications_rejected"] == 0 and sub["last_notification_at"]


def test_a_burst_of_50_notifications_makes_one_or_two_runs(notified: Notified) -> None:
    sync = notified.sync
    sync.cloud.subscriptions.batch = 1  # one POST per change: 50 requests reach the route
    posts_before = sync.cloud.subscriptions.stats["posts"]
    uids = [u["id"] for u in sync.source.directory.users]
    for n in range(50):
        sync.source.directory.update_user(uids[n % len(uids)], department=f"Dept {n}")
    wait_until(lambda: notified.delivered() >= 50, timeout=30)
    assert sync.cloud.subscriptions.stats["posts"] - posts_before >= 50
    sync.host.drain_queue(deadline_seconds=60)
    assert 1 <= len(notified.runs()) <= 2
    departments = {c.get("Department") for c in sync.target.exchange.contacts()}
    assert {f"Dept {n}" for n in range(45, 50)} <= departments  # every user's last change arrived


def test_a_forged_notification_starts_no_run_and_is_counted(notified: Notified) -> None:
    sync, subscriptions = notified.sync, notified.sync.cloud.subscriptions
    sub = notified.subscription()
    assert subscriptions.forge(notified.url, subscription_id=sub.id, client_state="guessed", items=3) == 202
    assert subscriptions.forge(notified.url) == 202  # a subscription id that is not ours
    unauthenticated = sync.host.call_http("POST", "notifications", body=b"not json at all")
    assert unauthenticated.status == 400
    assert sync.rt.stores.pair_runs.approximate_count() == 0
    assert sync.host.drain_queue(deadline_seconds=10).planner_runs == 0 and notified.runs() == []
    report = status_report(sync.rt)
    [row] = report["pairs"][0]["subscriptions"]
    assert (row["notifications_rejected"], row["notifications_accepted"]) == (3, 0)
    assert report["notifications"]["rejected_unmatched"] >= 1 and report["notifications"]["enabled"]


def test_an_expired_subscription_is_made_again_and_one_near_its_end_is_renewed(notified: Notified) -> None:
    sync, subscriptions = notified.sync, notified.sync.cloud.subscriptions
    old = notified.subscription()
    subscriptions.expire(old.id)  # nobody renewed it in time (the app was stopped for a month)
    store = sync.rt.stores.subscriptions
    store.renewed(PAIR_ID, "users", expires_at=iso(now_utc() - timedelta(minutes=1)))
    assert notified.subscriptions == []
    sync.host.fire_timer()
    new = notified.subscription()
    assert new.id != old.id and new.client_state != old.client_state
    sync.source.directory.update_user(sync.source.directory.users[0]["id"], jobTitle="Recreated")
    wait_until(lambda: notified.delivered() >= 1)
    sync.host.drain_queue(deadline_seconds=30)
    assert len(notified.runs()) == 1
    # Two days left (the timer renews below three): PATCH, same subscription, a new expiry.
    store.renewed(PAIR_ID, "users", expires_at=iso(now_utc() + timedelta(days=2)))
    renewed_before = subscriptions.stats["renewed"]
    sync.host.fire_timer()
    assert subscriptions.stats["renewed"] == renewed_before + 1 and notified.subscription().id == new.id
    [row] = store.of_pair(PAIR_ID)
    assert row.expires_at > iso(now_utc() + timedelta(days=28))
    # Graph dropped it while the row still had two days: the renewal's 404 makes a new one.
    subscriptions.expire(new.id)
    store.renewed(PAIR_ID, "users", expires_at=iso(now_utc() + timedelta(days=2)))
    sync.host.fire_timer()
    newest = notified.subscription()
    assert newest.id not in (old.id, new.id) and store.of_pair(PAIR_ID)[0].subscription_id == newest.id


@pytest.mark.parametrize("event", ["missed", "reauthorizationRequired", "subscriptionRemoved"])
def test_a_lifecycle_event_starts_a_run_and_fixes_the_subscription(notified: Notified, event: str) -> None:
    sync, subscriptions = notified.sync, notified.sync.cloud.subscriptions
    sub = notified.subscription()
    renewed_before = subscriptions.stats["renewed"]
    assert subscriptions.lifecycle(sub.id, event) == 202
    report = sync.host.drain_queue(deadline_seconds=30)
    assert report.planner_runs == 1 and len(notified.runs()) == 1
    [row] = sync.rt.stores.subscriptions.of_pair(PAIR_ID)
    assert row.state == SubscriptionState.ACTIVE
    if event == "reauthorizationRequired":
        assert subscriptions.stats["renewed"] == renewed_before + 1 and notified.subscription().id == sub.id
    elif event == "subscriptionRemoved":
        assert notified.subscription().id != sub.id and row.subscription_id == notified.subscription().id
    else:
        assert notified.subscription().id == sub.id


def test_a_disabled_pair_loses_its_subscription_and_makes_no_run(notified: Notified, capsys: pytest.CaptureFixture[str]) -> None:
    sync = notified.sync
    sub = notified.subscription()
    sync.source.directory.update_user(sync.source.directory.users[0]["id"], jobTitle="Before disable")
    wait_until(lambda: notified.delivered() >= 1)
    assert cli.main(["pairs", "disable", PAIR_ID], runtime=lambda: sync.rt) == 0
    assert "deleted its change-notification subscription(s) on users" in capsys.readouterr().out
    assert notified.subscriptions == [] and sync.rt.stores.subscriptions.of_pair(PAIR_ID) == []
    assert sync.host.drain_queue(deadline_seconds=15).planner_runs == 1, "the request already queued is dropped"
    assert notified.runs() == []
    assert sync.cloud.subscriptions.get(sub.id) is None
    # The timer too: enabled again it subscribes; disabled again (without the CLI) the timer deletes it.
    sync.rt.stores.pairs.set_enabled(PAIR_ID, True)
    sync.host.fire_timer()
    assert len(notified.subscriptions) == 1
    sync.rt.stores.pairs.set_enabled(PAIR_ID, False)
    sync.host.fire_timer()
    assert notified.subscriptions == []


def test_notifications_off_means_no_subscription(notified: Notified, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CTCS_CHANGE_NOTIFICATIONS", "off")
    function_app._runtime.clear()
    notified.sync.host.fire_timer()
    assert notified.subscriptions == [] and notified.sync.rt.stores.subscriptions.of_pair(PAIR_ID) == []


def test_a_subscription_graph_refuses_is_reported_once_and_the_pair_keeps_syncing(
    notified: Notified, caplog: pytest.LogCaptureFixture
) -> None:
    """A group-scoped pair subscribes to `groups` too, which needs Group.Read.All; its app has only
    GroupMember.Read.All: the users subscription works, the groups one is `failed` with the reason, said once."""
    sync = notified.sync
    made = sim_pair(sync.cloud, secret=SECRET, secret_env=SECRET_ENV, pair_id="grouped-pair",
                    scope={"include_groups": ["00000000-0000-0000-0000-000000000000"]})
    gid = made.source.directory.add_group("Sales", group_id="00000000-0000-0000-0000-000000000000")
    for n in range(3):
        made.source.directory.add_member(gid, made.source.directory.add_user(
            {"displayName": f"Seller {n}", "mail": f"seller{n}@{made.source.domain}",
             "userPrincipalName": f"seller{n}@{made.source.domain}"}))
    sync.rt.stores.pairs.add(made.pair)
    with caplog.at_level(logging.INFO, logger="ctcs"):
        for _ in range(2):
            sync.host.fire_timer()
    rows = {row.resource: row for row in sync.rt.stores.subscriptions.of_pair("grouped-pair")}
    assert rows["users"].state == SubscriptionState.ACTIVE and rows["groups"].state == SubscriptionState.FAILED
    assert "Group.Read.All" in rows["groups"].error and "keeps syncing" in rows["groups"].error
    said = [r for r in caplog.records if "could not be set up" in r.getMessage()]
    assert len(said) == 1, "once, not at every timer run"
    sync.host.drain_queue(deadline_seconds=60)
    assert len([c for c in made.target.exchange.contacts() if str(c.get("CustomAttribute15")).startswith("ctcs|")]) == 3
    for sub in sync.cloud.subscriptions.all(made.source.tenant_id):
        sync.cloud.subscriptions.expire(sub.id)
