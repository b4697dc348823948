"""Graph change-notification subscriptions on `users` and `groups`, and the notifications they send.

    POST   /v1.0/subscriptions            create: validation handshake first (POST notificationUrl?validationToken=...,
                                          the token must come back as the 200 body within `validation_timeout`)
    GET    /v1.0/subscriptions            the calling app's subscriptions in its tenant
    GET    /v1.0/subscriptions/{id}       one
    PATCH  /v1.0/subscriptions/{id}       renew (a new expirationDateTime); 404 once expired or removed
    DELETE /v1.0/subscriptions/{id}       204; 404 when it is not there

What Graph does and the simulator copies (Microsoft Graph's change notification documentation): `changeType` `updated`
(creation and soft deletion arrive as `updated`) and `deleted` (permanent deletion); a lifetime of at most 41,760
minutes for directory resources (more is refused; less than 45 minutes becomes 45); `clientState` of at most 128
characters echoed in every item; an HTTPS notificationUrl; the permission of the resource (`User.Read.All` or
`Directory.Read.All` for users, `Group.Read.All` or `Directory.Read.All` for groups); an expired subscription is gone.

Delivery (`SubscriptionService`, one thread per cloud): every `poll` seconds it reads each subscribed directory's
change log; each new change becomes an item due `delay` seconds later (plus a seeded `jitter` share of it), and due
items of one notificationUrl go out together, up to `batch` per POST, as Graph batches them. A POST that fails or
is not answered 2xx is tried again `retry_seconds` later, up to `attempts` times, then dropped (counted).

Graph's delivery rules (`DeliveryRules`, `service.rules`; Microsoft Graph's webhook delivery documentation): a POST
not answered within 3 s has failed; a reply that took more than 2.9 s is slow; once an endpoint (scheme and host:
every pair's URL shares it) has answered 100 times, more than 10 % slow replies delay its notifications by 10
minutes and 15 % or more drops them (`stats["dropped_slow"]`). Replies are remembered for `memory_seconds` (the
10 minutes of a delay) on the service's `clock`, so an endpoint that answers fast again recovers. `rules.enabled =
False` gives the old kindness (30 s, never throttled).

Limits (Microsoft Graph's change notifications overview): 100 subscriptions on users and groups per app per tenant
and 1,000 per tenant across all apps; one more is refused with 403. `limit_per_app` and `limit_per_tenant` lower
them for a test.

Lifecycle events: Graph sends `reauthorizationRequired` on its own, "from once every few minutes to rarely": each
subscription with a lifecycleNotificationUrl gets one `reauthorize_every` seconds (seeded, up to half as much again)
after it was made or last renewed (PATCH), on the service's `clock`; None never sends one. Microsoft documents that directory resources send only `reauthorizationRequired`;
`lifecycle(sub_id, "missed" | "subscriptionRemoved")` sends the other two anyway so tests can prove ctcs handles
them (`subscriptionRemoved` also removes the subscription, unless `remove=False`: the same event replayed by
someone who captured it while the subscription lives on). `forge(url, ...)` posts a notification with a wrong
clientState (or for an unknown subscription), as an attacker who knows the URL could. Each subscription posts to
the notificationUrl it was given, path and all (ctcs gives each one its own secret path), and the validation
handshake goes to that URL with `?validationToken=` added.

    cloud.subscriptions.delay = 0.2; cloud.subscriptions.batch = 100; cloud.subscriptions.all()
    cloud.subscriptions.expire(sub_id); cloud.subscriptions.lifecycle(sub_id, "reauthorizationRequired")
    cloud.subscriptions.stats  # posts, items, failed posts, dropped items, validations, slow, dropped_slow
    cloud.subscriptions.rules.timeout = 0.3; cloud.subscriptions.clock = fake_clock; cloud.subscriptions.limit_per_app
"""

from __future__ import annotations

import contextlib
import json
import random
import ssl
import threading
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import httpx
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from sim.delta import GraphError
from sim.tokens import Forbidden, TokenRejected, bearer_token
from sim.transient import graph_error

if TYPE_CHECKING:
    from sim.cloud import SimCloud
    from sim.tenant import Tenant

MAX_LIFETIME = timedelta(minutes=41_760)
MIN_LIFETIME = timedelta(minutes=45)
MAX_CLIENT_STATE = 128
LIMIT_PER_APP = 100  # users and groups subscriptions of one app in one tenant
LIMIT_PER_TENANT = 1_000  # users and groups subscriptions of one tenant, all apps together
REAUTHORIZE_EVERY = 3600.0  # seconds; Microsoft: "from once every few minutes to rarely"
RESOURCES = {
    "users": ("user", "#Microsoft.Graph.User", "Users", ("User.Read.All", "Directory.Read.All")),
    "groups": ("group", "#Microsoft.Graph.Group", "Groups", ("Group.Read.All", "Directory.Read.All")),
}


@dataclass
class SimSubscription:
    id: str
    tenant_id: str
    app_id: str
    resource: str  # "users" | "groups"
    change_type: str
    notification_url: str
    lifecycle_url: str
    client_state: str
    expires_at: datetime
    seen_seq: int  # the directory's change log up to here has been turned into items
    reauthorize_at: float | None = None  # on the service's clock: when Graph sends reauthorizationRequired

    def render(self) -> dict[str, Any]:
        return {
            "id": self.id, "resource": self.resource, "changeType": self.change_type, "applicationId": self.app_id,
            "notificationUrl": self.notification_url, "lifecycleNotificationUrl": self.lifecycle_url or None,
            "expirationDateTime": _iso(self.expires_at), "clientState": None,  # Graph never returns it
        }


@dataclass
class DeliveryRules:
    """How Graph judges a notification endpoint by its replies (see the module docstring)."""

    enabled: bool = True
    timeout: float = 3.0  # seconds Graph waits for a reply
    slow_after: float = 2.9  # a reply that took longer is slow
    judged_after: int = 100  # replies remembered before an endpoint is judged
    delay_share: float = 0.10  # more than this share slow: notifications delayed `delay_seconds`
    drop_share: float = 0.15  # this share slow or more: notifications dropped
    delay_seconds: float = 600.0
    memory_seconds: float = 600.0
    _replies: dict[str, deque[tuple[float, bool]]] = field(default_factory=dict)  # endpoint -> (when, slow)

    @staticmethod
    def endpoint(url: str) -> str:
        parts = urlsplit(url)
        return f"{parts.scheme}://{parts.netloc}".lower()

    def wait_limit(self) -> float:
        return self.timeout if self.enabled else 30.0

    def record(self, url: str, seconds: float, now: float) -> bool:
        """Note one reply (or a failure after `seconds`); whether it was slow."""
        slow = seconds > self.slow_after
        self._replies.setdefault(self.endpoint(url), deque()).append((now, slow))
        return slow

    def verdict(self, url: str, now: float) -> str:
        """normal | delayed | dropped: what Graph does with the endpoint's notifications now."""
        replies = self._replies.get(self.endpoint(url))
        if not self.enabled or replies is None:
            return "normal"
        while replies and replies[0][0] < now - self.memory_seconds:
            replies.popleft()
        if len(replies) < self.judged_after:
            return "normal"
        share = sum(1 for _, slow in replies if slow) / len(replies)
        if share >= self.drop_share:
            return "dropped"
        return "delayed" if share > self.delay_share else "normal"


@dataclass
class _Pending:
    due: float
    url: str
    item: dict[str, Any]
    attempts: int = 0


@dataclass
class SubscriptionService:
    """The subscriptions of every tenant of one cloud, and their delivery thread (started with the cloud)."""

    cloud: SimCloud
    delay: float = 0.2  # seconds from a change to its notification (Graph documents no bound; tests keep it short)
    jitter: float = 0.0  # share of `delay` added at random (seeded), 0.5 = up to 1.5 x delay
    batch: int = 100  # items per POST
    poll: float = 0.05
    retry_seconds: float = 1.0
    attempts: int = 4
    validation_timeout: float = 10.0
    seed: int = 0
    rules: DeliveryRules = field(default_factory=DeliveryRules)
    limit_per_app: int = LIMIT_PER_APP
    limit_per_tenant: int = LIMIT_PER_TENANT
    reauthorize_every: float | None = REAUTHORIZE_EVERY
    clock: Callable[[], float] = time.monotonic  # due times, Graph's judgement and its lifecycle schedule
    stats: Counter[str] = field(default_factory=Counter)
    delivered: list[tuple[float, dict[str, Any]]] = field(default_factory=list)  # (monotonic time, item), in order
    _subs: dict[str, SimSubscription] = field(default_factory=dict)
    _pending: list[_Pending] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _rng: random.Random = field(init=False)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)

    # lifecycle of the service ------------------------------------------------------------------------------------------
    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="sim-graph-notifications", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    # what tests look at and do -----------------------------------------------------------------------------------------
    def all(self, tenant_id: str | None = None) -> list[SimSubscription]:
        self._sweep_expired()
        with self._lock:
            return [s for s in self._subs.values() if tenant_id is None or s.tenant_id == tenant_id.lower()]

    def get(self, sub_id: str) -> SimSubscription | None:
        self._sweep_expired()
        with self._lock:
            return self._subs.get(sub_id)

    def expire(self, sub_id: str) -> None:
        """The subscription's time is up now (as if nobody renewed it): Graph drops it."""
        with self._lock:
            if sub_id in self._subs:
                self._subs[sub_id].expires_at = datetime.now(UTC) - timedelta(seconds=1)
        self._sweep_expired()

    def lifecycle(self, sub_id: str, event: str, *, remove: bool = True) -> int:
        """Post a lifecycle event to the subscription's lifecycleNotificationUrl; the HTTP status answered.
        `remove=False`: a `subscriptionRemoved` replayed while the subscription still exists."""
        with self._lock:
            sub = self._subs.get(sub_id)
            if sub is None or not sub.lifecycle_url:
                raise KeyError(f"no subscription {sub_id} with a lifecycleNotificationUrl")
            if event == "subscriptionRemoved" and remove:
                del self._subs[sub_id]
        item = {"subscriptionId": sub.id, "subscriptionExpirationDateTime": _iso(sub.expires_at),
                "tenantId": sub.tenant_id, "clientState": sub.client_state, "lifecycleEvent": event,
                "resource": sub.resource, "organizationId": sub.tenant_id}
        return self._post(sub.lifecycle_url, [item])

    def forge(self, url: str, *, subscription_id: str = "", client_state: str = "forged", items: int = 1) -> int:
        """A notification nobody subscribed to sends: a guessed or wrong clientState. Returns the status answered."""
        sub_id = subscription_id or str(uuid.uuid4())
        forged = [{"subscriptionId": sub_id, "clientState": client_state, "changeType": "updated",
                   "resource": f"Users/{uuid.uuid4()}", "tenantId": str(uuid.uuid4()),
                   "resourceData": {"@odata.type": "#Microsoft.Graph.User", "id": str(uuid.uuid4())}}
                  for _ in range(items)]
        return self._post(url, forged)

    # the Graph routes ----------------------------------------------------------------------------------------------------
    def routes(self) -> list[Route]:
        return [
            Route("/v1.0/subscriptions", self._collection, methods=["GET", "POST"]),
            Route("/v1.0/subscriptions/{sub_id}", self._item, methods=["GET", "PATCH", "DELETE"]),
        ]

    def _caller(self, request: Request) -> tuple[Tenant, str, tuple[str, ...]] | Response:
        self.cloud.counts.add("graph", ("graph", "subscriptions"))
        try:
            tenant, claims = self.cloud.authenticate(bearer_token(request.headers), "graph")
        except TokenRejected as exc:
            return graph_error(401, "InvalidAuthenticationToken", f"Access token validation failure. {exc}")
        except Forbidden as exc:
            return graph_error(403, "Authorization_RequestDenied", f"Insufficient privileges. {exc}")
        return tenant, claims.client_id, tuple(claims.roles)

    async def _collection(self, request: Request) -> Response:
        caller = self._caller(request)
        if isinstance(caller, Response):
            return caller
        tenant, app_id, roles = caller
        if request.method == "GET":
            mine = [s.render() for s in self.all(tenant.tenant_id) if s.app_id == app_id]
            return JSONResponse({"value": mine})
        try:
            return JSONResponse(await self._create(tenant, app_id, roles, await request.body()), status_code=201)
        except GraphError as exc:
            return exc.response()

    async def _create(self, tenant: Tenant, app_id: str, roles: tuple[str, ...], raw: bytes) -> dict[str, Any]:
        try:
            body = json.loads(raw)
        except ValueError:
            raise GraphError(400, "InvalidRequest", "The request body is not JSON.") from None
        resource = str(body.get("resource", "")).strip("/").lower()
        if resource not in RESOURCES:
            raise GraphError(400, "InvalidRequest", f"Resource '{body.get('resource')}' is not supported.")
        needed = RESOURCES[resource][3]
        if not set(roles) & set(needed):
            raise GraphError(403, "ExtensionError", f"Operation: Create; Exception: [Status Code: Forbidden; Reason: "
                                                    f"The app lacks {needed[0]}.]")
        url, lifecycle = str(body.get("notificationUrl", "")), str(body.get("lifecycleNotificationUrl") or "")
        for name, value in (("notificationUrl", url), ("lifecycleNotificationUrl", lifecycle)):
            if value and not value.lower().startswith("https://"):
                raise GraphError(400, "ValidationError", f"The {name} must be an HTTPS URL.")
        if not url:
            raise GraphError(400, "InvalidRequest", "notificationUrl is required.")
        client_state = body.get("clientState") or ""
        if not isinstance(client_state, str) or len(client_state) > MAX_CLIENT_STATE:
            raise GraphError(400, "InvalidRequest", "clientState must be a string of at most 128 characters.")
        expires = _expiry(body.get("expirationDateTime"))
        self._check_limits(tenant.tenant_id, app_id)
        for endpoint in dict.fromkeys(u for u in (url, lifecycle) if u):
            await self._validate(endpoint)
        directory = tenant.directory
        with directory.lock:
            sub = SimSubscription(str(uuid.uuid4()), tenant.tenant_id, app_id, resource,
                                  str(body.get("changeType") or "updated"), url, lifecycle, client_state, expires,
                                  directory.sequence, self._next_reauthorization() if lifecycle else None)
        with self._lock:
            self._check_limits(tenant.tenant_id, app_id)  # again: two creates may have raced past the first check
            self._subs[sub.id] = sub
        self.stats["created"] += 1
        return sub.render()

    def _check_limits(self, tenant_id: str, app_id: str) -> None:
        """403 when the tenant already holds `limit_per_tenant` users and groups subscriptions, or the app
        `limit_per_app` of them in this tenant (the words are the simulator's: Microsoft publishes only the numbers)."""
        mine = [s for s in self._subs.values() if s.tenant_id == tenant_id.lower()]
        if len(mine) >= self.limit_per_tenant:
            self.stats["refused_quota"] += 1
            raise GraphError(403, "ExtensionError", f"Operation: Create; Exception: [Status Code: Forbidden; Reason: "
                                                    f"Subscription limit exceeded: the tenant already has "
                                                    f"{len(mine)} subscriptions on users and groups.]")
        if sum(1 for s in mine if s.app_id == app_id) >= self.limit_per_app:
            self.stats["refused_quota"] += 1
            raise GraphError(403, "ExtensionError", f"Operation: Create; Exception: [Status Code: Forbidden; Reason: "
                                                    f"Subscription limit exceeded: the application already has "
                                                    f"{self.limit_per_app} subscriptions on users and groups in this "
                                                    f"tenant.]")

    def _next_reauthorization(self) -> float | None:
        if self.reauthorize_every is None:
            return None
        return self.clock() + self.reauthorize_every * (1 + 0.5 * self._rng.random())

    async def _validate(self, url: str) -> None:
        """Graph's handshake: POST url?validationToken=<token>; 200 with exactly the token, in time, or no subscription."""
        token = f"Validation: Testing client application reachability for subscription Request-Id: {uuid.uuid4()}"
        self.stats["validations"] += 1
        try:
            async with httpx.AsyncClient(verify=self._tls(), timeout=self.validation_timeout) as client:
                answer = await client.post(url, params={"validationToken": token}, content=b"",
                                           headers={"Content-Type": "text/plain"})
        except httpx.HTTPError as error:
            raise GraphError(400, "ValidationError", f"Subscription validation request failed. Notification "
                                                     f"endpoint must respond with 200 OK to validation request. "
                                                     f"({type(error).__name__})") from None
        if answer.status_code != 200 or answer.text != token:
            raise GraphError(400, "ValidationError", "Subscription validation request failed. Response must exactly "
                                                     "match validationToken query parameter.")

    async def _item(self, request: Request) -> Response:
        caller = self._caller(request)
        if isinstance(caller, Response):
            return caller
        tenant, app_id, _ = caller
        sub = self.get(request.path_params["sub_id"])
        if sub is None or sub.tenant_id != tenant.tenant_id or sub.app_id != app_id:
            return graph_error(404, "ResourceNotFound", "The object was not found.")
        if request.method == "GET":
            return JSONResponse(sub.render())
        if request.method == "DELETE":
            with self._lock:
                self._subs.pop(sub.id, None)
            self.stats["deleted"] += 1
            return Response(status_code=204)
        try:
            body = json.loads(await request.body())
            expires = _expiry(body.get("expirationDateTime"))
        except GraphError as exc:
            return exc.response()
        except ValueError:
            return graph_error(400, "InvalidRequest", "The request body is not JSON.")
        with self._lock:
            sub.expires_at = expires
            if sub.lifecycle_url:
                sub.reauthorize_at = self._next_reauthorization()
        self.stats["renewed"] += 1
        return JSONResponse(sub.render())

    # delivery ----------------------------------------------------------------------------------------------------------
    def _sweep_expired(self) -> None:
        now = datetime.now(UTC)
        with self._lock:
            for sub_id in [s.id for s in self._subs.values() if s.expires_at <= now]:
                del self._subs[sub_id]
                self.stats["expired"] += 1

    def _run(self) -> None:
        while not self._stop.wait(self.poll):
            with contextlib.suppress(Exception):  # the delivery thread must outlive one bad round
                self._collect()
                self._deliver_due()
                self._reauthorizations_due()

    def _collect(self) -> None:
        """Turn new changes of each subscribed directory into pending items."""
        self._sweep_expired()
        now = self.clock()
        with self._lock:
            subs = list(self._subs.values())
        for sub in subs:
            tenant = self.cloud.find_tenant(sub.tenant_id)
            if tenant is None:
                continue
            object_type, odata_type, prefix, _ = RESOURCES[sub.resource]
            with tenant.directory.lock:
                changes = tenant.directory.changes_since(sub.seen_seq, object_type)
                sub.seen_seq = tenant.directory.sequence
            for change in changes:
                hard = change.kind == "hard_delete"
                if ("deleted" if hard else "updated") not in sub.change_type:
                    continue
                wait = self.delay * (1 + self.jitter * self._rng.random())
                if self.rules.verdict(sub.notification_url, now) == "delayed":
                    wait += self.rules.delay_seconds
                item = {
                    "subscriptionId": sub.id, "subscriptionExpirationDateTime": _iso(sub.expires_at),
                    "changeType": "deleted" if hard else "updated", "resource": f"{prefix}/{change.object_id}",
                    "resourceData": {"@odata.type": odata_type, "@odata.id": f"{prefix}/{change.object_id}",
                                     "id": change.object_id, "organizationId": sub.tenant_id},
                    "clientState": sub.client_state, "tenantId": sub.tenant_id,
                }
                with self._lock:
                    self._pending.append(_Pending(now + wait, sub.notification_url, item))

    def _deliver_due(self) -> None:
        now = self.clock()
        with self._lock:
            due = [p for p in self._pending if p.due <= now]
            self._pending = [p for p in self._pending if p.due > now]
        by_url: dict[str, list[_Pending]] = {}
        for pending in due:
            by_url.setdefault(pending.url, []).append(pending)
        for url, items in by_url.items():
            if self.rules.verdict(url, now) == "dropped":  # Graph gave up on the endpoint
                self.stats["dropped_slow"] += len(items)
                continue
            for start in range(0, len(items), max(1, self.batch)):
                chunk = items[start : start + self.batch]
                status = self._post(url, [p.item for p in chunk])
                if 200 <= status < 300:
                    sent = time.monotonic()
                    with self._lock:
                        self.delivered.extend((sent, p.item) for p in chunk)
                    continue
                self.stats["failed_posts"] += 1
                for pending in chunk:
                    pending.attempts += 1
                    if pending.attempts >= self.attempts:
                        self.stats["dropped_items"] += 1
                        continue
                    delayed = self.rules.verdict(url, self.clock()) == "delayed"
                    pending.due = self.clock() + (self.rules.delay_seconds if delayed else self.retry_seconds)
                    with self._lock:
                        self._pending.append(pending)

    def _tls(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=self.cloud.ca_bundle_path)

    def _reauthorizations_due(self) -> None:
        """Graph's own `reauthorizationRequired`, when a subscription's turn comes (then not again until renewed)."""
        now = self.clock()
        with self._lock:
            due = [s for s in self._subs.values() if s.reauthorize_at is not None and s.reauthorize_at <= now]
            for sub in due:
                sub.reauthorize_at = None
        for sub in due:
            self.stats["reauthorizations_sent"] += 1
            with contextlib.suppress(KeyError):
                self.lifecycle(sub.id, "reauthorizationRequired")

    def _post(self, url: str, items: list[dict[str, Any]]) -> int:
        """POST one batch as Graph does: within `rules.timeout`, the reply judged slow or not (0: no reply)."""
        self.stats["posts"] += 1
        self.stats["items"] += len(items)
        started = time.monotonic()
        try:
            with httpx.Client(verify=self._tls(), timeout=self.rules.wait_limit()) as client:
                status = client.post(url, json={"value": items}).status_code
        except httpx.HTTPError:
            status = 0
        if self.rules.record(url, time.monotonic() - started, self.clock()):
            self.stats["slow"] += 1
        return status


def _expiry(raw: object) -> datetime:
    if not isinstance(raw, str):
        raise GraphError(400, "InvalidRequest", "expirationDateTime is required.")
    try:
        moment = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise GraphError(400, "InvalidRequest", f"expirationDateTime '{raw}' is not a date.") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    now = datetime.now(UTC)
    if moment <= now:
        raise GraphError(400, "InvalidRequest", "Subscription expiration can only be in the future.")
    if moment > now + MAX_LIFETIME + timedelta(minutes=1):
        raise GraphError(400, "InvalidRequest", "Subscription expiration exceeds the maximum of 41760 minutes allowed "
                                                "for this resource.")
    return max(moment, now + MIN_LIFETIME)


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")
