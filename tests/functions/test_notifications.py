"""Change notifications end to end through the Functions entry points: the timer makes the pair's Graph subscription
(the simulated Graph validates the notification route over loopback HTTPS), directory changes make the simulated
Graph post notifications to the route, the route asks for one delayed planning run per burst, and the run reads
users/delta like any other. A request at an address ctcs never gave out costs no storage and no more than one log
line a minute; forged notifications at the real address are counted and change nothing; the validation handshake
is answered only while a subscription is being created; expired, removed and reauthorization-required subscriptions
are renewed or made again, after Graph confirms the event; a disabled pair's subscription is deleted."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import azure.functions as func
import pytest
from azure.core.pipeline.transport import RequestsTransport

import function_app
from sim.subscriptions import SimSubscription
from sync.app.admin.status import status_report
from sync.app.notifications import intake
from sync.cli import main as cli
from sync.contract.vocabulary import RunTrigger, SubscriptionState
from sync.state.entities import iso, now_utc
from tests.support.sim_pairs import sim_pair

from .conftest import PAIR_ID, SECRET, SECRET_ENV, Sync

DELAY_SECONDS = 1  # CTCS_NOTIFICATION_DELAY_SECONDS in these tests
NOTIFICATION_KEY = "functions-test-notification-key-0123456789abcdef"


@dataclass
class Notified:
    sync: Sync
    url: str  # CTCS_NOTIFICATION_URL: each subscription is given <url>/<pair>/<token>

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
    monkeypatch.setenv("CTCS_NOTIFICATION_KEY", NOTIFICATION_KEY)
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
    assert sub.resource == "users" and sub.notification_url == sub.lifecycle_url
    assert sub.notification_url.startswith(f"{notified.url}/{PAIR_ID}/")  # a secret path of its own
    assert timedelta(days=28) < sub.expires_at - now_utc() <= timedelta(minutes=41_760)
    [row] = notified.sync.rt.stores.subscriptions.of_pair(PAIR_ID)
    assert row.subscription_id == sub.id and row.state == SubscriptionState.ACTIVE
    assert row.matches(sub.client_state) and sub.client_state not in str(row)  # kept as a hash only
    assert row.tenant_id == notified.sync.source.tenant_id.lower() and row.address_id in sub.notification_url
    assert notified.sync.cloud.subscriptions.stats["validations"] >= 1, "Graph's handshake at the secret path passed"
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
    """At the real address (someone who saw the subscription's URL): items are checked and counted."""
    sync, subscriptions = notified.sync, notified.sync.cloud.subscriptions
    sub = notified.subscription()
    assert subscriptions.forge(sub.notification_url, subscription_id=sub.id, client_state="guessed", items=3) == 202
    assert subscriptions.forge(sub.notification_url) == 202  # a subscription id that is not ours
    not_json = sync.host.call_http("POST", _path(sub), body=b"not json at all")
    assert not_json.status == 400
    assert sync.rt.stores.pair_runs.approximate_count() == 0
    assert sync.host.drain_queue(deadline_seconds=10).planner_runs == 0 and notified.runs() == []
    report = status_report(sync.rt)
    [row] = report["pairs"][0]["subscriptions"]
    assert (row["notifications_rejected"], row["notifications_accepted"]) == (3, 0)
    assert report["notifications"]["rejected_unmatched"] >= 1 and report["notifications"]["enabled"]


def _path(sub: SimSubscription) -> str:
    """The route path of a subscription's notification URL (`/api/notifications/<pair>/<token>`)."""
    return "/api/" + sub.notification_url.split("/api/", 1)[1]


class StorageCalls:
    """Every request this process sends to the storage account (Azurite), counted at the SDK's transport."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.count = 0
        self._lock = threading.Lock()
        send = RequestsTransport.send

        def counted(transport: RequestsTransport, request: Any, **kwargs: Any) -> Any:
            with self._lock:
                self.count += 1
            return send(transport, request, **kwargs)

        monkeypatch.setattr(RequestsTransport, "send", counted)


def test_a_stranger_costs_no_storage_and_one_log_line(
    notified: Notified, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """200 forged requests from 8 threads at addresses ctcs never gave out (the bare route, a guessed token, a token
    made with another key, another pair's name): each 404, none touches storage, one log line in all, counted
    exactly. The real subscription's address still works afterwards."""
    sync = notified.sync
    sub = notified.subscription()
    address_id = _path(sub).rsplit("/", 1)[1].split(".")[0]
    from sync.core.notification_path import path_token

    forged_paths = [
        "/api/notifications", f"/api/notifications/{PAIR_ID}/guessed-token",
        f"/api/notifications/{PAIR_ID}/{path_token('another-key', PAIR_ID, address_id)}",
        _path(sub).replace(PAIR_ID, "another-pair"),
    ]
    body = json.dumps({"value": [{"subscriptionId": sub.id, "clientState": "guess", "tenantId": sync.source.tenant_id,
                                  "changeType": "updated"}]}).encode()
    monkeypatch.setattr(intake, "REFUSED", intake.RefusedPaths(clock=lambda: 1000.0))  # a clock that stands still
    calls = StorageCalls(monkeypatch)
    statuses: list[int] = []
    barrier = threading.Barrier(8)

    def attacker(n: int) -> None:
        barrier.wait()
        for i in range(25):
            reply = sync.host.call_http("POST", forged_paths[(n + i) % len(forged_paths)], body=body)
            statuses.append(reply.status)

    with caplog.at_level(logging.DEBUG, logger="ctcs"):
        threads = [threading.Thread(target=attacker, args=(n,)) for n in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert statuses == [404] * 200
    assert calls.count == 0, "no table, queue or blob request for a stranger"
    assert len([r for r in caplog.records if r.name.startswith("ctcs")]) <= 1
    assert intake.REFUSED.total == 150, "the bare route is not ours at all; the other 150 are counted exactly"
    assert sync.rt.stores.pair_runs.approximate_count() == 0
    real = sync.host.call_http("POST", _path(sub), body=body)
    assert real.status == 202 and calls.count > 0


def test_an_oversize_request_is_refused_before_its_body_is_read(notified: Notified) -> None:
    sub = notified.subscription()
    reads: list[int] = []

    class Request(func.HttpRequest):
        def get_body(self) -> bytes:
            reads.append(1)
            return super().get_body()

    pair, token = _path(sub).rsplit("/", 2)[1:]
    request = Request("POST", f"http://localhost/api/notifications/{pair}/{token}", headers={"Content-Length": str(100_000_000)},
                      params={}, route_params={"pair": pair, "token": token}, body=b"")
    response = function_app.graph_notifications(request)
    assert response.status_code == 413 and reads == []
    small = Request("POST", "http://localhost/", headers={"Content-Length": "2"}, params={},
                    route_params={"pair": pair, "token": token}, body=b"{}")
    assert function_app.graph_notifications(small).status_code == 400 and reads == [1]


def test_the_validation_handshake_is_answered_only_while_a_subscription_is_being_created(notified: Notified) -> None:
    sync, subscriptions = notified.sync, notified.sync.cloud.subscriptions
    sub = notified.subscription()
    for path in (_path(sub), "/api/notifications", f"/api/notifications/{PAIR_ID}/x"):
        reply = sync.host.call_http("POST", path, {"validationToken": "Validation: a+b c"})
        assert reply.status == 404 and b"Validation" not in reply.body, path
    # An expired subscription is made again: Graph's handshake at the new address is answered while it is created.
    validations = subscriptions.stats["validations"]
    subscriptions.expire(sub.id)
    sync.rt.stores.subscriptions.renewed(PAIR_ID, "users", expires_at=iso(now_utc() - timedelta(minutes=1)))
    sync.host.fire_timer()
    new = notified.subscription()
    assert new.id != sub.id and subscriptions.stats["validations"] == validations + 1
    reply = sync.host.call_http("POST", _path(new), {"validationToken": "Validation: later"})
    assert reply.status == 404, "after the create call the marker is gone"
    assert [e for e in sync.rt.stores.subscriptions.table.list_entities() if "creating" in e["RowKey"]] == []


def test_a_notification_naming_another_tenant_is_refused(notified: Notified) -> None:
    sync = notified.sync
    sub = notified.subscription()
    item = {"subscriptionId": sub.id, "clientState": sub.client_state, "changeType": "updated",
            "tenantId": "11111111-2222-3333-4444-555555555555", "resource": "Users/x"}
    reply = sync.host.call_http("POST", _path(sub), body=json.dumps({"value": [item]}).encode())
    assert reply.status == 202
    assert sync.rt.stores.pair_runs.approximate_count() == 0 and sync.host.drain_queue(deadline_seconds=10).planner_runs == 0
    [row] = sync.rt.stores.subscriptions.of_pair(PAIR_ID)
    assert (row.accepted, row.rejected) == (0, 1)
    good = {**item, "tenantId": sync.source.tenant_id.upper()}  # the same tenant, any case
    assert sync.host.call_http("POST", _path(sub), body=json.dumps({"value": [good]}).encode()).status == 202
    assert sync.rt.stores.pair_runs.approximate_count() == 1


def test_a_client_state_that_is_not_text_is_a_plain_400(notified: Notified, caplog: pytest.LogCaptureFixture) -> None:
    sync = notified.sync
    sub = notified.subscription()
    item = json.dumps({"subscriptionId": sub.id, "clientState": "@", "tenantId": sync.source.tenant_id})
    body = ("{\"value\": [" + item.replace('"@"', '"\\ud800"') + "]}").encode()  # JSON may spell a lone surrogate
    with caplog.at_level(logging.DEBUG, logger="ctcs"):
        reply = sync.host.call_http("POST", _path(sub), body=body)
    assert reply.status == 400 and b"not valid Unicode" in reply.body
    assert not [r for r in caplog.records if r.exc_info], "no traceback"


def test_a_replayed_subscription_removed_is_confirmed_with_graph_and_changes_nothing(notified: Notified) -> None:
    sync, subscriptions = notified.sync, notified.sync.cloud.subscriptions
    sub = notified.subscription()
    created = subscriptions.stats["created"]
    assert subscriptions.lifecycle(sub.id, "subscriptionRemoved", remove=False) == 202  # captured and replayed
    sync.host.drain_queue(deadline_seconds=30)
    sync.host.fire_timer()
    assert [s.id for s in notified.subscriptions] == [sub.id], "no second subscription, the first one kept"
    assert subscriptions.stats["created"] == created
    [row] = sync.rt.stores.subscriptions.of_pair(PAIR_ID)
    assert row.subscription_id == sub.id and row.state == SubscriptionState.ACTIVE


def test_a_recreated_subscription_never_leaves_the_old_one_alive(notified: Notified) -> None:
    """The row says it expired (or another key made its URL) while Graph still has it: the old one is deleted first."""
    sync, subscriptions = notified.sync, notified.sync.cloud.subscriptions
    sub = notified.subscription()
    sync.rt.stores.subscriptions.renewed(PAIR_ID, "users", expires_at=iso(now_utc() - timedelta(minutes=1)))
    sync.host.fire_timer()
    [new] = notified.subscriptions
    assert new.id != sub.id and subscriptions.get(sub.id) is None


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


def test_without_a_notification_key_no_subscription_is_made_and_the_row_says_why_once(
    sync: Sync, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    base = sync.host.listen(sync.cloud.tls_files)
    monkeypatch.setenv("CTCS_CHANGE_NOTIFICATIONS", "on")
    monkeypatch.setenv("CTCS_NOTIFICATION_URL", f"{base}/api/notifications")
    monkeypatch.setenv("CTCS_NOTIFICATION_KEY", "@Microsoft.KeyVault(VaultName=kv;SecretName=ctcs-notification-key)")
    function_app._runtime.clear()
    sync.add_users(2)
    try:
        with caplog.at_level(logging.WARNING, logger="ctcs"):
            for _ in range(2):
                sync.host.fire_timer()
        [row] = sync.rt.stores.subscriptions.of_pair(PAIR_ID)
        assert row.state == SubscriptionState.FAILED and "CTCS_NOTIFICATION_KEY" in row.error and "2b" in row.error
        assert len([r for r in caplog.records if "could not be set up" in r.getMessage()]) == 1
        assert sync.cloud.subscriptions.all(sync.source.tenant_id) == []
        sync.host.drain_queue(deadline_seconds=60)
        assert sync.anchors() == sync.expected_anchors(), "the pair keeps syncing on the timer"
    finally:
        sync.host.close()
