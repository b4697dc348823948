"""Keeping each pair's Graph change-notification subscriptions alive: what the timer does after asking for runs.

Per enabled pair (change notifications on, a notification URL known, the pair not quarantined for its credentials):
a subscription on `users`, and on `groups` when the pair scopes by group or syncs groups as contacts. Each lives at most 41,760 minutes
(Graph's limit for directory resources); ctcs asks for a little less and renews with `PATCH` once fewer than
`RENEW_BEFORE` remain, so a 5-minute timer renews each one about every 25 days and has days of retries before it
would lapse. A renewal Graph answers with 404 (expired, removed) makes a new subscription with a new clientState
secret; so does a row a `subscriptionRemoved` lifecycle event marked. A disabled pair, a pair quarantined for its
credentials, or notifications turned off: its subscriptions are deleted in Graph and forgotten. Rows of a pair
that no longer exists are forgotten (its definition, and so its credential, is gone: Graph drops the subscription
when it expires, and the route rejects what it still sends).

One pair's failure is recorded on its row (state `failed`, the error in admin words, logged once per change) and
never stops another pair (invariant 7).
"""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sync.app.wiring.runtime import Runtime
from sync.contract.pairs import TenantPair
from sync.contract.vocabulary import SubscriptionState
from sync.errors import PairNotFound
from sync.graph.subscriptions import MAX_DIRECTORY_LIFETIME_MINUTES, GraphSubscriptions
from sync.state.entities import iso, now_utc
from sync.state.subscriptions import SubscriptionRow

log = logging.getLogger("ctcs.subscriptions")

# Asked-for lifetime: an hour under the maximum, so a clock a little ahead of Graph's is never refused.
LIFETIME = timedelta(minutes=MAX_DIRECTORY_LIFETIME_MINUTES) - timedelta(hours=1)
RENEW_BEFORE = timedelta(days=3)
CLIENT_STATE_BYTES = 48  # 64 URL-safe characters; Graph allows 128


@dataclass(frozen=True)
class Maintained:
    pair_id: str
    resource: str
    action: str  # created | renewed | kept | deleted | forgotten | failed
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
    for resource in wanted:
        row = rows.get(resource)
        action = _due(row, now)
        if action == "kept":
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


def _due(row: SubscriptionRow | None, now: datetime) -> str:
    """kept | renew | create"""
    if row is None or not row.subscription_id or row.state == SubscriptionState.REMOVED:
        return "create"
    if not row.expires_at or datetime.fromisoformat(row.expires_at) <= now:
        return "create"  # expired: Graph has dropped it
    if row.state in (SubscriptionState.REAUTHORIZE, SubscriptionState.FAILED):
        return "renew"
    return "renew" if datetime.fromisoformat(row.expires_at) - now < RENEW_BEFORE else "kept"


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
        client_state = secrets.token_urlsafe(CLIENT_STATE_BYTES)
        made = graph().create(resource, notification_url=rt.tuning.notification_url,
                            lifecycle_url=rt.tuning.notification_url, client_state=client_state, expires_at=expires)
        store.created(pair.id, resource, made.id, client_state=client_state, expires_at=iso(made.expires_at))
        log.info("pair %s: change notifications on %s until %s", pair.id, resource, iso(made.expires_at),
                 extra={"pair_id": pair.id, "resource": resource, "subscription_id": made.id})
        return Maintained(pair.id, resource, "created")
    except Exception as error:
        message = _admin_words(resource, error)
        if row is None or row.error != message:  # once per new failure, not every 5 minutes
            log.warning("pair %s: %s", pair.id, message, extra={"pair_id": pair.id, "resource": resource})
        store.failed(pair.id, resource, message)
        return Maintained(pair.id, resource, "failed", message)


def _admin_words(resource: str, error: Exception) -> str:
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
