"""Change notifications under Graph's real delivery rules, through the Functions entry points: users/delta may show a
change only some seconds after its notification (a simulated clock that moves on with each delta round), so a
notification run that finds nothing looks again once, later, and no more; a subscription Graph refuses for its
quota shows in `status` as "notifications unavailable (quota)" while the timer keeps syncing the pair."""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterator

import pytest

from sim.delta import DeltaDelay
from sync.app.admin.status import status_report
from sync.app.planner import fanout
from sync.cli import main as cli
from sync.contract.vocabulary import RunTrigger, SubscriptionState
from tests.functions.test_notifications import Notified, notified, wait_until

from .conftest import PAIR_ID, Sync

__all__ = ["notified"]  # the fixture, shared with test_notifications


class RoundClock:
    """A simulated clock for the delta delay that moves `step` seconds on at each users/delta round after the first:
    the first round a notification starts comes right after the change, the next one `step` seconds later."""

    def __init__(self, start: float, step: float) -> None:
        self._ticks: Iterator[float] = (start + step * n for n in itertools.count())
        self.frozen = False
        self.now = start

    def __call__(self) -> float:
        if not self.frozen:
            self.now = next(self._ticks)
        return self.now


def _delay_for_next_change(sync: Sync, clock: Callable[[], float]) -> DeltaDelay:
    """A 30 s delta delay whose wait for the directory's next change is more than a second (seeded, so a seed is
    picked that says so)."""
    nxt = sync.source.directory.sequence + 1
    for seed in range(100):
        delay = DeltaDelay(max_seconds=30.0, seed=seed, clock=clock)
        if delay.wait_of(sync.source.directory.tenant_id, nxt) > 1:
            return delay
    raise AssertionError("no seed gives a wait over a second")


@pytest.fixture
def look_again_soon(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fanout, "LOOK_AGAIN_SECONDS", 1)


@pytest.fixture
def lagging_delta(notified: Notified) -> Iterator[RoundClock]:
    """Users/delta with a 30 s processing delay on a clock the test moves (the suite's default is no delay)."""
    cloud = notified.sync.cloud
    saved = cloud.delta_delay
    clock = RoundClock(time.monotonic(), 31.0)
    clock.frozen = True
    cloud.delta_delay = _delay_for_next_change(notified.sync, clock)
    yield clock
    cloud.delta_delay = saved


def _contact_title(sync: Sync, uid: str) -> object:
    [contact] = [c for c in sync.target.exchange.contacts() if str(c.get("CustomAttribute15")).endswith(uid)]
    return contact.get("Title")


def test_a_notification_run_that_finds_nothing_looks_again_once_and_finds_the_change(
    notified: Notified, lagging_delta: RoundClock, look_again_soon: None
) -> None:
    sync = notified.sync
    uid = sync.source.directory.users[0]["id"]
    lagging_delta.now = time.monotonic()
    sync.source.directory.update_user(uid, jobTitle="Seen on the second look")
    lagging_delta.frozen = False  # the first round reads the delta "now", the next 31 s later
    wait_until(lambda: notified.delivered() >= 1)
    report = sync.host.drain_queue(deadline_seconds=60)
    assert report.planner_runs == 2 and report.left_in_queue == 0
    assert len(notified.runs()) == 2, "the notification's run, and one look again"
    assert _contact_title(sync, uid) == "Seen on the second look"


def test_the_look_again_is_bounded_to_one(notified: Notified, lagging_delta: RoundClock, look_again_soon: None) -> None:
    """Delta never shows the change while the notification's runs look: two runs, then the timer's turn."""
    sync = notified.sync
    uid = sync.source.directory.users[0]["id"]
    lagging_delta.now = time.monotonic()
    sync.source.directory.update_user(uid, jobTitle="Only the timer sees this")
    wait_until(lambda: notified.delivered() >= 1)
    report = sync.host.drain_queue(deadline_seconds=60)
    assert report.planner_runs == 2 and report.left_in_queue == 0
    assert len(notified.runs()) == 2
    assert _contact_title(sync, uid) == "Rep"
    lagging_delta.now += 60  # Graph has processed it by the next timer run
    sync.host.fire_timer()
    sync.host.drain_queue(deadline_seconds=60)
    assert _contact_title(sync, uid) == "Only the timer sees this"
    assert len(notified.runs()) == 2 and len(notified.runs(RunTrigger.TIMER)) >= 2


def test_a_subscription_refused_for_quota_shows_in_status_and_the_timer_carries_the_pair(
    notified: Notified, capsys: pytest.CaptureFixture[str]
) -> None:
    sync, subscriptions = notified.sync, notified.sync.cloud.subscriptions
    old = notified.subscription()
    saved = subscriptions.limit_per_app
    subscriptions.limit_per_app = 0  # the app has used its 100 subscriptions in the source tenant
    try:
        subscriptions.expire(old.id)
        sync.rt.stores.subscriptions.failed(PAIR_ID, "users", "expired")  # make the timer create it again
        sync.host.fire_timer()
        [row] = sync.rt.stores.subscriptions.of_pair(PAIR_ID)
        assert row.state == SubscriptionState.FAILED and row.error.startswith("notifications unavailable (quota)")
        assert "100" in row.error and "1,000" in row.error
        [status] = status_report(sync.rt)["pairs"]
        assert status["subscriptions"][0]["error"].startswith("notifications unavailable (quota)")
        assert cli.main(["status"], runtime=lambda: sync.rt) == 0
        assert "notifications unavailable (quota)" in capsys.readouterr().out
        uid = sync.source.directory.users[1]["id"]
        sync.source.directory.update_user(uid, jobTitle="Carried by the timer")
        sync.host.fire_timer()
        sync.host.drain_queue(deadline_seconds=60)
        assert _contact_title(sync, uid) == "Carried by the timer"
    finally:
        subscriptions.limit_per_app = saved


COLD_PROCESS = """
import json, sys
import azure.functions as func
import function_app
path, body = sys.argv[1], sys.argv[2].encode()
pair, token = path.rsplit("/", 2)[1:]
request = func.HttpRequest("POST", "https://ctcs.example" + path, headers={}, params={},
                           route_params={"pair": pair, "token": token}, body=body)
status = function_app.graph_notifications(request).status_code
heavy = ("msgraph", "azure.identity", "sync.graph", "sync.exchange", "sync.app.wiring", "sync.contract.pairs")
print(json.dumps({"status": status, "loaded": sorted(m for m in sys.modules if m.startswith(heavy))}))
"""


def test_a_cold_process_answers_a_notification_without_loading_graph_or_exchange(notified: Notified) -> None:
    """The route's import path on an instance that has run nothing else: the lean intake, no Graph or Exchange
    client, no credentials, no pair models; the notification is still accepted and its run asked for."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    sub = notified.subscription()
    item = {"subscriptionId": sub.id, "clientState": sub.client_state, "changeType": "updated",
            "tenantId": notified.sync.source.tenant_id, "resource": "Users/x"}
    path = "/api/" + sub.notification_url.split("/api/", 1)[1]
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run([sys.executable, "-c", COLD_PROCESS, path, json.dumps({"value": [item]})], cwd=root,
                          env={**os.environ, "PYTHONPATH": str(root)}, capture_output=True, text=True, check=True)
    answer = json.loads(done.stdout.strip().splitlines()[-1])
    assert answer == {"status": 202, "loaded": []}
    assert notified.sync.rt.stores.pair_runs.approximate_count() == 1
