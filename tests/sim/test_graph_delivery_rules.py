"""The simulated Graph is as hard on ctcs as Microsoft's where Microsoft is precise: users/delta shows a change only
once Graph has processed it (a seeded delay, off in the rest of the suite), notifications go to an endpoint Graph
judges by its replies (3 s timeout, slow over 2.9 s, delayed at more than 10 % slow, dropped at 15 %), users and
groups subscriptions are capped per app and per tenant (403), and `reauthorizationRequired` arrives on Graph's own
schedule. Times are a simulated clock's, except the few real replies the endpoint judgement is made of."""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from sim import SimCloud, Tenant
from sim.cloud import Listener
from sim.delta import DeltaDelay
from sim.subscriptions import DeliveryRules


@dataclass
class Clock:
    now: float = 1_000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Endpoint:
    """An HTTPS notification endpoint on loopback that answers after `pause` seconds and keeps what it is sent."""

    url: str = ""
    pause: float = 0.0
    items: list[dict[str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def receive(self, request: Request) -> Response:
        token = request.query_params.get("validationToken")
        if token is not None:
            return PlainTextResponse(token)
        if self.pause:
            await asyncio.sleep(self.pause)
        with self.lock:
            self.items.extend(json.loads(await request.body())["value"])
        return Response(status_code=202)

    def count(self, event: str = "") -> int:
        with self.lock:
            return sum(1 for item in self.items if item.get("lifecycleEvent", "") == event)


@pytest.fixture
def endpoint(cloud: SimCloud) -> Iterator[Endpoint]:
    made = Endpoint()
    listener = Listener("endpoint", *cloud.tls_files)
    listener.start(Starlette(routes=[Route("/hook{rest:path}", made.receive, methods=["POST"])]))
    listener.wait_started(10)
    made.url = f"{listener.url}/hook"
    service = cloud.subscriptions
    saved = (service.rules, service.clock, service.limit_per_app, service.limit_per_tenant, service.reauthorize_every,
             service.delay)
    yield made
    for sub in service.all():
        service.expire(sub.id)
    (service.rules, service.clock, service.limit_per_app, service.limit_per_tenant, service.reauthorize_every,
     service.delay) = saved
    listener.stop()


def _app(cloud: SimCloud, tenant: Tenant) -> dict[str, str]:
    client_id = str(uuid.uuid4())
    tenant.register_app(client_id, secret="s")
    return {"Authorization": f"Bearer {cloud.issue_token(tenant, client_id, 'graph')}"}


def _subscribe(cloud: SimCloud, http: httpx.Client, headers: dict[str, str], url: str) -> httpx.Response:
    expires = datetime.now(UTC) + timedelta(days=20)
    body = {"changeType": "updated,deleted", "notificationUrl": url, "lifecycleNotificationUrl": url,
            "resource": "users", "expirationDateTime": expires.isoformat(), "clientState": "state"}
    return http.post(f"{cloud.endpoints['graph']}/v1.0/subscriptions", json=body, headers=headers)


def _wait(condition: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.02)


def test_an_endpoint_is_judged_by_its_share_of_slow_replies() -> None:
    rules = DeliveryRules()
    url = "https://ctcs.example/api/notifications/pair-a/token"
    for n in range(100):
        rules.record(url, 3.0 if n < 10 else 0.2, now=0.0)  # 10 % slow: not more than 10 %
    assert rules.verdict(url, now=1.0) == "normal"
    rules.record(url, 2.95, now=1.0)  # 11 of 101
    assert rules.verdict("https://ctcs.example/api/notifications/pair-b/other", now=1.0) == "delayed", \
        "every pair's URL on the host is one endpoint"
    for _ in range(8):
        rules.record(url, 3.0, now=2.0)  # 19 of 109: over 15 %
    assert rules.verdict(url, now=2.0) == "dropped"
    assert rules.verdict(url, now=2.0 + rules.memory_seconds + 1) == "normal", "replies are forgotten in time"
    assert rules.verdict("https://other.example/x", now=2.0) == "normal"
    fast = DeliveryRules()
    for _ in range(99):
        fast.record(url, 5.0, now=0.0)
    assert fast.verdict(url, now=0.0) == "normal", "judged only after 100 replies"


def test_a_slow_endpoint_loses_its_notifications(cloud: SimCloud, tenant: Tenant, http: httpx.Client,
                                                   endpoint: Endpoint) -> None:
    """Replies slower than the timeout fail; once the endpoint has enough of them Graph drops what is due."""
    service = cloud.subscriptions
    service.rules = DeliveryRules(timeout=0.3, slow_after=0.29, judged_after=3)
    service.delay = 0.05
    assert _subscribe(cloud, http, _app(cloud, tenant), endpoint.url).status_code == 201
    endpoint.pause = 0.6
    before = dict(service.stats)
    for n in range(3):
        tenant.directory.add_user({"displayName": f"Slow {n}", "mail": f"slow{n}@x.test"})
        _wait(lambda n=n: service.stats["slow"] - before.get("slow", 0) >= n + 1)
    tenant.directory.add_user({"displayName": "Dropped", "mail": "dropped@x.test"})
    _wait(lambda: service.stats["dropped_slow"] > before.get("dropped_slow", 0))
    assert service.stats["failed_posts"] > before.get("failed_posts", 0), "a reply after the timeout is a failure"


def test_a_throttled_endpoint_gets_its_notifications_ten_minutes_late(cloud: SimCloud, tenant: Tenant,
                                                                        http: httpx.Client, endpoint: Endpoint) -> None:
    service, clock = cloud.subscriptions, Clock()
    rules = DeliveryRules()
    for n in range(100):
        rules.record(endpoint.url, 5.0 if n < 12 else 0.1, now=clock.now)  # 12 % slow: delayed, not dropped
    service.rules, service.clock, service.delay = rules, clock, 0.0
    assert _subscribe(cloud, http, _app(cloud, tenant), endpoint.url).status_code == 201
    before = len(endpoint.items)
    uid = tenant.directory.add_user({"displayName": "Late", "mail": "late@x.test"})
    _wait(lambda: any(p.item["resourceData"]["id"] == uid for p in list(service._pending)))
    clock.now += rules.delay_seconds - 1
    time.sleep(0.3)  # several delivery rounds pass: nothing is due yet
    assert len(endpoint.items) == before
    clock.now += 2
    _wait(lambda: len(endpoint.items) > before)


def test_subscriptions_are_capped_per_app_and_per_tenant(cloud: SimCloud, tenant: Tenant, http: httpx.Client,
                                                          endpoint: Endpoint) -> None:
    service = cloud.subscriptions
    service.limit_per_app, service.limit_per_tenant = 2, 3
    first, second = _app(cloud, tenant), _app(cloud, tenant)
    assert [_subscribe(cloud, http, first, endpoint.url).status_code for _ in range(2)] == [201, 201]
    refused = _subscribe(cloud, http, first, endpoint.url)
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "ExtensionError"
    assert "limit" in refused.json()["error"]["message"].lower()
    assert _subscribe(cloud, http, second, endpoint.url).status_code == 201, "another app has its own 100"
    tenant_full = _subscribe(cloud, http, second, endpoint.url)
    assert tenant_full.status_code == 403 and "tenant" in tenant_full.json()["error"]["message"]
    assert len(service.all(tenant.tenant_id)) == 3


def test_reauthorization_required_comes_on_graphs_schedule(cloud: SimCloud, tenant: Tenant, http: httpx.Client,
                                                            endpoint: Endpoint) -> None:
    service, clock = cloud.subscriptions, Clock()
    service.clock, service.reauthorize_every = clock, 3600.0
    headers = _app(cloud, tenant)
    made = _subscribe(cloud, http, headers, endpoint.url).json()
    clock.now += 3599
    time.sleep(0.3)
    assert endpoint.count("reauthorizationRequired") == 0, "not before its time"
    clock.now += 1801  # the schedule is seeded, at most half as long again
    _wait(lambda: endpoint.count("reauthorizationRequired") == 1)
    time.sleep(0.3)
    assert endpoint.count("reauthorizationRequired") == 1, "once, until the subscription is renewed"
    later = (datetime.now(UTC) + timedelta(days=20)).isoformat()
    item = f"{cloud.endpoints['graph']}/v1.0/subscriptions/{made['id']}"
    assert http.patch(item, json={"expirationDateTime": later}, headers=headers).status_code == 200
    clock.now += 5401
    _wait(lambda: endpoint.count("reauthorizationRequired") == 2)


def test_users_delta_shows_a_change_once_graph_has_processed_it(cloud: SimCloud, http: httpx.Client) -> None:
    fresh = cloud.add_tenant()
    headers = _app(cloud, fresh)
    clock, saved = Clock(time.monotonic()), cloud.delta_delay  # changes are stamped with the monotonic clock
    cloud.delta_delay = DeltaDelay(max_seconds=30.0, seed=7, clock=clock)
    try:
        uid = fresh.directory.add_user({"displayName": "Before", "mail": "before@x.test"})
        clock.now = time.monotonic() + 31
        body = http.get(f"{cloud.endpoints['graph']}/v1.0/users/delta", headers=headers).json()
        assert [u["id"] for u in body["value"]] == [uid]
        link = body["@odata.deltaLink"]
        changed_at = time.monotonic()
        fresh.directory.update_user(uid, jobTitle="After")
        clock.now = changed_at  # the change is being processed
        first = http.get(link, headers=headers).json()
        assert first["value"] == [], "not processed yet: the round finds nothing"
        clock.now = changed_at + cloud.delta_delay.wait_of(fresh.tenant_id, fresh.directory.sequence) + 0.01
        second = http.get(first["@odata.deltaLink"], headers=headers).json()
        assert [u.get("jobTitle") for u in second["value"]] == ["After"]
        waits = [cloud.delta_delay.wait_of(fresh.tenant_id, n) for n in range(1, 200)]
        assert 0 <= min(waits) < 3 and 27 < max(waits) <= 30, "seeded, spread up to 30 s"
    finally:
        cloud.delta_delay = saved
    assert DeltaDelay.switch(0).processed_sequence(fresh.directory) == fresh.directory.sequence, "0: off"
