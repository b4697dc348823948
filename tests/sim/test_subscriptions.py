"""The simulated Graph's change-notification subscriptions behave like Microsoft's: the validation handshake decides
whether a subscription is made, the lifetime and permission limits of directory resources hold, an expired
subscription is gone, and directory changes arrive as batched notifications carrying the clientState."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
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


@dataclass
class Receiver:
    """An HTTPS endpoint on loopback that answers the handshake (unless told not to) and keeps what it is sent."""

    url: str = ""
    echo: bool = True
    posts: list[list[dict[str, Any]]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def endpoint(self, request: Request) -> Response:
        token = request.query_params.get("validationToken")
        if token is not None:
            return PlainTextResponse(token if self.echo else "nope")
        body = json.loads(await request.body())
        with self.lock:
            self.posts.append(body["value"])
        return Response(status_code=202)

    def items(self) -> list[dict[str, Any]]:
        with self.lock:
            return [item for post in self.posts for item in post]


@pytest.fixture
def receiver(cloud: SimCloud) -> Iterator[Receiver]:
    made = Receiver()
    listener = Listener("receiver", *cloud.tls_files)
    listener.start(Starlette(routes=[Route("/hook", made.endpoint, methods=["POST"])]))
    listener.wait_started(10)
    made.url = f"{listener.url}/hook"
    yield made
    for sub in cloud.subscriptions.all():
        cloud.subscriptions.expire(sub.id)
    listener.stop()


def _headers(cloud: SimCloud, tenant: Tenant, roles: tuple[str, ...] | None = None) -> dict[str, str]:
    client_id = str(uuid.uuid4())
    tenant.register_app(client_id, secret="s")
    return {"Authorization": f"Bearer {cloud.issue_token(tenant, client_id, 'graph', roles=roles)}"}


def _body(url: str, *, resource: str = "users", minutes: int = 41_000, client_state: str = "secret-state") -> dict[str, Any]:
    expires = datetime.now(UTC) + timedelta(minutes=minutes)
    return {"changeType": "updated,deleted", "notificationUrl": url, "lifecycleNotificationUrl": url,
            "resource": resource, "expirationDateTime": expires.isoformat(), "clientState": client_state}


def test_changes_arrive_batched_with_the_client_state(cloud: SimCloud, tenant: Tenant, http: httpx.Client,
                                                       receiver: Receiver) -> None:
    headers = _headers(cloud, tenant)
    made = http.post(f"{cloud.endpoints['graph']}/v1.0/subscriptions", json=_body(receiver.url), headers=headers)
    assert made.status_code == 201, made.text
    sub = made.json()
    assert sub["clientState"] is None and sub["resource"] == "users"
    cloud.subscriptions.delay, cloud.subscriptions.batch = 0.3, 3
    try:
        uids = [tenant.directory.add_user({"displayName": f"N {n}", "mail": f"n{n}@x.test"}) for n in range(5)]
        tenant.directory.delete_user(uids[0], permanent=True)
        deadline = time.monotonic() + 10
        while len(receiver.items()) < 6 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        cloud.subscriptions.delay, cloud.subscriptions.batch = 0.2, 100
    items = receiver.items()
    assert len(items) == 6 and max(len(post) for post in receiver.posts) == 3
    assert {item["clientState"] for item in items} == {"secret-state"}
    assert {item["subscriptionId"] for item in items} == {sub["id"]}
    assert [item["changeType"] for item in items].count("deleted") == 1
    assert {item["resourceData"]["id"] for item in items} == set(uids)


def test_no_subscription_without_the_handshake_or_beyond_the_limits(cloud: SimCloud, tenant: Tenant,
                                                                      http: httpx.Client, receiver: Receiver) -> None:
    url = f"{cloud.endpoints['graph']}/v1.0/subscriptions"
    headers = _headers(cloud, tenant)
    receiver.echo = False
    refused = http.post(url, json=_body(receiver.url), headers=headers)
    assert refused.status_code == 400 and refused.json()["error"]["code"] == "ValidationError"
    receiver.echo = True
    too_long = http.post(url, json=_body(receiver.url, minutes=41_760 + 60), headers=headers)
    assert too_long.status_code == 400 and "41760" in too_long.json()["error"]["message"]
    plain_http = http.post(url, json=_body(receiver.url.replace("https://", "http://")), headers=headers)
    assert plain_http.status_code == 400
    groups = http.post(url, json=_body(receiver.url, resource="groups"), headers=headers)
    assert groups.status_code == 403, "the default app has GroupMember.Read.All, not Group.Read.All"
    short = http.post(url, json=_body(receiver.url, minutes=5), headers=headers)
    expires = datetime.fromisoformat(short.json()["expirationDateTime"].replace("Z", "+00:00"))
    assert expires - datetime.now(UTC) > timedelta(minutes=44), "less than 45 minutes becomes 45"
    assert cloud.subscriptions.get(short.json()["id"]) is not None
    assert len(cloud.subscriptions.all(tenant.tenant_id)) == 1


def test_renew_and_delete_until_it_expires(cloud: SimCloud, tenant: Tenant, http: httpx.Client,
                                           receiver: Receiver) -> None:
    headers = _headers(cloud, tenant)
    sub = http.post(f"{cloud.endpoints['graph']}/v1.0/subscriptions", json=_body(receiver.url), headers=headers).json()
    item = f"{cloud.endpoints['graph']}/v1.0/subscriptions/{sub['id']}"
    later = (datetime.now(UTC) + timedelta(days=20)).isoformat()
    assert http.patch(item, json={"expirationDateTime": later}, headers=headers).status_code == 200
    other = _headers(cloud, tenant)
    assert http.get(item, headers=other).status_code == 404, "another app does not see it"
    cloud.subscriptions.expire(sub["id"])
    assert http.patch(item, json={"expirationDateTime": later}, headers=headers).status_code == 404
    assert http.delete(item, headers=headers).status_code == 404
    again = http.post(f"{cloud.endpoints['graph']}/v1.0/subscriptions", json=_body(receiver.url), headers=headers).json()
    assert http.delete(f"{cloud.endpoints['graph']}/v1.0/subscriptions/{again['id']}", headers=headers).status_code == 204
    assert cloud.subscriptions.all(tenant.tenant_id) == []


def test_lifecycle_events_and_forgeries_reach_the_endpoint(cloud: SimCloud, tenant: Tenant, http: httpx.Client,
                                                           receiver: Receiver) -> None:
    headers = _headers(cloud, tenant)
    sub = http.post(f"{cloud.endpoints['graph']}/v1.0/subscriptions", json=_body(receiver.url), headers=headers).json()
    assert cloud.subscriptions.lifecycle(sub["id"], "reauthorizationRequired") == 202
    assert cloud.subscriptions.forge(receiver.url, subscription_id=sub["id"], client_state="guess") == 202
    assert cloud.subscriptions.lifecycle(sub["id"], "subscriptionRemoved") == 202
    assert cloud.subscriptions.get(sub["id"]) is None
    lifecycle, forged, removed = receiver.items()
    assert lifecycle["lifecycleEvent"] == "reauthorizationRequired" and lifecycle["clientState"] == "secret-state"
    assert forged["clientState"] == "guess" and removed["lifecycleEvent"] == "subscriptionRemoved"
