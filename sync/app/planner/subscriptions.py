"""Keeping each pair's Graph change-notification subscriptions alive: what the timer does after asking for runs.

Per enabled pair (change notifications on, a notification URL known, the pair not quarantined for its credentials):
a subscription on `users`, and on `groups` when the pair scopes by group or syncs groups as contacts. Each lives at most 41,760 minutes
(Graph's limit for directory resources); ctcs asks for a little less and renews with `PATCH` once fewer than
`RENEW_BEFORE` remain, so a 5-minute timer renews each one about every 25 days and has days of retries before it
would lapse. A renewal Graph answers with 404 (expired, removed) makes a new subscription with a new clientState
secret and a new notification URL (`<CTCS_NOTIFICATION_URL>/<pair>/<token>`, sync.core.notification_path), after
deleting the old one in Graph, so a recreate never leaves the old one alive; so does a row made under another
`CTCS_NOTIFICATION_KEY` or before URLs had tokens. A row a lifecycle event marked (`subscriptionRemoved`,
`reauthorizationRequired`) is first confirmed with Graph (`GET`): the event arrived at an anonymous route, so a
replayed `subscriptionRemoved` for a subscription Graph still has changes nothing, and `reauthorizationRequired`
renews only what still exists. While a subscription is created, a marker row lets the route answer Graph's
validation handshake for that pair and address id, and only then. A disabled pair, a pair quarantined for its
credentials, or notifications turned off: its subscriptions are deleted in Graph and forgotten. Rows of a pair
that no longer exists are forgotten (its definition, and so its credential, is gone: Graph drops the subscription
when it expires, and the route rejects what it still sends).

One pair's failure is recorded on its row (state `failed`, the error in admin words, logged once per change) and
never stops another pair (invariant 7). A create Graph refuses for its subscription quota (users and groups: 100 per
app per tenant, 1,000 per tenant across all apps; 403) reads "notifications unavailable (quota)" in `status`: the
timer keeps running the pair as if notifications were off, and tries again each run.
"""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sync.app.wiring.runtime import Runtime
from sync.contract.pairs import TenantPair
from sync.contract.vocabulary import SubscriptionState
from sync.core.notification_path import key_id, new_address_id, notification_address
from sync.errors import ConfigError, PairNotFound, SourceAuthError
from sync.graph.subscriptions import MAX_DIRECTORY_LIFETIME_MINUTES, GraphSubscriptions
from sync.state.entities import iso, now_utc
from sync.state.subscriptions import Origin, SubscriptionRow

log = logging.getLogger("ctcs.subscriptions")

# Asked-for lifetime: an hour under the maximum, so a clock a little ahead of Graph's is never refused.
LIFETIME = timedelta(minutes=MAX_DIRECTORY_LIFETIME_MINUTES) - timedelta(hours=1)
RENEW_BEFORE = timedelta(days=3)
CLIENT_STATE_BYTES = 48  # 64 URL-safe characters; Graph allows 128
QUOTA_UNAVAILABLE = "notifications unavailable (quota)"
QUOTA_WORDS = ("limit", "quota")  # what Graph's 403 for too many subscriptions says (its exact text is unpublished)
# How long the route may answer Graph's validation handshake for a subscription being created: Graph gives its own
# request about 10 seconds, and the create call's retries may send it again.
HANDSHAKE_SECONDS = 120


@dataclass(frozen=True)
class Maintained:
    pair_id: str
    resource: str
    action: str  # created | renewed | confirmed | kept | deleted | forgotten | failed
    error: str = ""


def wanted_resources(pair: TenantPair) -> tuple[str, ...]:
    """`users` always; `groups` too when membership decides who is in scope or groups become contacts."""
    scope = pair.scope
    groups = scope.include_groups or scope.exclude_groups or pair.syncs_groups
    return ("users", "groups") if groups else ("users",)


def keep_subscriptions(rt: Runtime, *, now: datetime | None = None) -> list[Maintained]:
    """The timer's pass over every pair's subscriptions (see the module docstring)."""
    now = now or now_utc()
    done: list[Maintained] = []
    rows = rt.stores.subscriptions.all()
    pairs = {pair.id: pair for pair in rt.stores.pairs.list()}
    for pair in pairs.values():
        try:
            if subscribes(rt, pair):
                done += ensure_pair(rt, pair, now=now)
            elif any(row.pair_id == pair.id for row in rows):
                done += remove_pair(rt, pair)
        except Exception as error:  # its rows say why; the next pair goes on (invariant 7)
            log.exception("pair %s: could not maintain its change-notification subscriptions", pair.id)
            done.append(Maintained(pair.id, "*", "failed", f"{type(error).__name__}: {error}"))
    for row in rows:
        if row.pair_id not in pairs:
            rt.stores.subscriptions.drop(row.pair_id, row.resource)
            done.append(Maintained(row.pair_id, row.resource, "forgotten"))
    return done


def subscribes(rt: Runtime, pair: TenantPair) -> bool:
    if not (rt.tuning.change_notifications and rt.tuning.notification_url and pair.enabled):
        return False
    return not rt.stores.pair_state.get(pair.id).credentials_quarantined


def maintain_pair(rt: Runtime, pair_id: str) -> list[Maintained]:
    """One pair now (a lifecycle event asked for it): renew or recreate what needs it."""
    try:
        pair = rt.stores.pairs.get(pair_id)
    except PairNotFound:
        return []
    return ensure_pair(rt, pair) if subscribes(rt, pair) else remove_pair(rt, pair)


def ensure_pair(rt: Runtime, pair: TenantPair, *, now: datetime | None = None) -> list[Maintained]:
    now = now or now_utc()
    wanted = wanted_resources(pair)
    rows = {row.resource: row for row in rt.stores.subscriptions.of_pair(pair.id)}
    graph = _Opener(rt, pair)
    done = []
    current_key = key_id(rt.tuning.notification_key) if rt.tuning.notification_key else ""
    for resource in wanted:
        row = rows.get(resource)
        action = _due(row, now, current_key)
        if action == "kept":
            continue
        if action == "confirm" and row is not None:
            done.append(_confirm(rt, graph, pair, row, now=now))
            continue
        done.append(_renew_or_create(rt, graph, pair, resource, row, renew=action == "renew", now=now))
    for resource, row in rows.items():
        if resource not in wanted:
            done.append(_delete(rt, graph, pair.id, row))
    return done


class _Opener:
    """The pair's Graph subscriptions client, opened on first use (most timer passes need none), so that a
    credential that cannot even be opened fails inside the per-resource handling and is recorded there."""

    def __init__(self, rt: Runtime, pair: TenantPair) -> None:
        self.rt, self.pair = rt, pair
        self._graph: GraphSubscriptions | None = None

    def __call__(self) -> GraphSubscriptions:
        if self._graph is None:
            self._graph = self.rt.open_subscriptions(self.pair)
        return self._graph


def _due(row: SubscriptionRow | None, now: datetime, current_key: str) -> str:
    """kept | renew | confirm | create"""
    if row is None or not row.subscription_id or not row.address_id or row.key_id != current_key:
        return "create"  # none yet, one from before URLs had tokens, or one whose URL another key made
    if not row.expires_at or datetime.fromisoformat(row.expires_at) <= now:
        return "create"  # expired: Graph has dropped it
    if row.state in (SubscriptionState.REMOVED, SubscriptionState.REAUTHORIZE):
        return "confirm"  # a lifecycle event said so; Graph says whether it is true
    if row.state == SubscriptionState.FAILED:
        return "renew"
    return "renew" if datetime.fromisoformat(row.expires_at) - now < RENEW_BEFORE else "kept"


def _confirm(rt: Runtime, graph: _Opener, pair: TenantPair, row: SubscriptionRow, *, now: datetime) -> Maintained:
    """A lifecycle event marked the row: act only on what Graph confirms (GET the subscription)."""
    try:
        alive = graph().get(row.subscription_id, row.resource)
    except Exception as error:
        return _failed(rt, pair, row.resource, row, error)
    if alive is None:  # really gone: a new one (the old id is deleted first, in case)
        return _renew_or_create(rt, graph, pair, row.resource, row, renew=False, now=now)
    if row.state == SubscriptionState.REAUTHORIZE:
        return _renew_or_create(rt, graph, pair, row.resource, row, renew=True, now=now)
    log.info("pair %s: a subscriptionRemoved event named its subscription on %s, which Graph still has; nothing done",
             pair.id, row.resource, extra={"pair_id": pair.id, "resource": row.resource})
    rt.stores.subscriptions.renewed(pair.id, row.resource, expires_at=iso(alive.expires_at))
    return Maintained(pair.id, row.resource, "confirmed")


def _renew_or_create(rt: Runtime, graph: _Opener, pair: TenantPair, resource: str, row: SubscriptionRow | None, *,
                     renew: bool, now: datetime) -> Maintained:
    store = rt.stores.subscriptions
    expires = now + LIFETIME
    try:
        if renew and row is not None:
            renewed = graph().renew(row.subscription_id, resource, expires_at=expires)
            if renewed is not None:
                store.renewed(pair.id, resource, expires_at=iso(renewed.expires_at))
                return Maintained(pair.id, resource, "renewed")
        key = rt.tuning.notification_key
        if not key:
            raise ConfigError("app setting CTCS_NOTIFICATION_KEY is not set (or its Key Vault secret "
                              "ctcs-notification-key is not stored yet), so no notification URL can be made")
        if row is not None and row.subscription_id:
            graph().delete(row.subscription_id, resource)  # never two alive: the old one goes first (404 is fine)
        address_id, client_state = new_address_id(), secrets.token_urlsafe(CLIENT_STATE_BYTES)
        address = notification_address(rt.tuning.notification_url, key, pair.id, address_id)
        store.begin_creating(pair.id, address_id, seconds=HANDSHAKE_SECONDS)
        try:
            made = graph().create(resource, notification_url=address, lifecycle_url=address,
                                  client_state=client_state, expires_at=expires)
        finally:
            store.end_creating(pair.id, address_id)
        store.created(pair.id, resource, made.id, client_state=client_state, expires_at=iso(made.expires_at),
                      origin=Origin(address_id, key_id(key), str(pair.source.tenant_id)))
        log.info("pair %s: change notifications on %s until %s", pair.id, resource, iso(made.expires_at),
                 extra={"pair_id": pair.id, "resource": resource, "subscription_id": made.id})
        return Maintained(pair.id, resource, "created")
    except Exception as error:
        return _failed(rt, pair, resource, row, error)


def _failed(rt: Runtime, pair: TenantPair, resource: str, row: SubscriptionRow | None, error: Exception) -> Maintained:
    message = _admin_words(resource, error)
    if row is None or row.error != message:  # once per new failure, not every 5 minutes
        log.warning("pair %s: %s", pair.id, message, extra={"pair_id": pair.id, "resource": resource})
    rt.stores.subscriptions.failed(pair.id, resource, message)
    return Maintained(pair.id, resource, "failed", message)


def is_quota_refusal(error: Exception) -> bool:
    """Graph refused a subscription because the app or the tenant has as many as it may have (403, not a permission)."""
    text = str(error).lower()
    return isinstance(error, SourceAuthError) and error.status == 403 and any(word in text for word in QUOTA_WORDS)


def _admin_words(resource: str, error: Exception) -> str:
    if is_quota_refusal(error):
        return (f"{QUOTA_UNAVAILABLE}: Graph allows 100 subscriptions on users and groups per app in a tenant and "
                f"1,000 per tenant across all apps, and refused one on {resource} ({error}). The timer keeps syncing "
                "this pair every run and tries again; remove subscriptions other apps no longer need in the source "
                "tenant, or use one source app for fewer pairs")
    if isinstance(error, ConfigError):  # the app's own setting, not the tenant: say what to set
        return (f"change notifications on {resource} could not be set up: {error}. The timer keeps syncing every "
                "run; store the secret (docs/deploy.md, step 2b) and the next timer run subscribes")
    return (f"change notifications on {resource} could not be set up: {error}. The timer keeps syncing every run "
            "and tries again; check the source app's permission and that Graph can reach the notification URL")


def remove_pair(rt: Runtime, pair: TenantPair) -> list[Maintained]:
    """Delete the pair's subscriptions in Graph and forget them (disabled, removed, notifications off)."""
    graph = _Opener(rt, pair)
    return [_delete(rt, graph, pair.id, row) for row in rt.stores.subscriptions.of_pair(pair.id)]


def _delete(rt: Runtime, graph: _Opener, pair_id: str, row: SubscriptionRow) -> Maintained:
    if row.subscription_id:
        try:
            graph().delete(row.subscription_id, row.resource)
        except Exception as error:  # Graph drops it when it expires; the route rejects what it sends meanwhile
            log.warning("pair %s: could not delete its subscription on %s: %s", pair_id, row.resource, error)
    rt.stores.subscriptions.drop(pair_id, row.resource)
    return Maintained(pair_id, row.resource, "deleted")
