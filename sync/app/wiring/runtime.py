"""Wiring: the stores plus a source and a target per pair. Triggers, the CLI and tests all go through this.

A Runtime is one worker instance (a Functions worker process, a CLI run): it has an `instance_id`, one `OrgPacer`
per target organisation it calls (their shares of the organisation's pace are per instance), and the objects a job
keeps once per instance (`per_instance`: the worker's creation-quota gate).
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeVar, cast

from sync.contract.pairs import TenantPair
from sync.core.pacing import PaceRules
from sync.core.source import Source
from sync.core.target import Target
from sync.exchange.pacing import OrgPacer
from sync.exchange.visibility import SourceVisibility
from sync.settings import Tuning
from sync.state.stores import Stores

if TYPE_CHECKING:
    from sync.app.wiring.probe import ConnectionProbe
    from sync.graph.subscriptions import GraphSubscriptions

SourceFactory = Callable[[TenantPair], Source]
TargetFactory = Callable[[TenantPair], Target]
VisibilityFactory = Callable[[TenantPair], SourceVisibility | None]
ProbeFactory = Callable[[TenantPair], "ConnectionProbe"]
SubscriptionsFactory = Callable[[TenantPair], "GraphSubscriptions"]
Part = TypeVar("Part")
PAIR_CACHE_SECONDS = 60.0
QUARANTINE_CACHE_SECONDS = 10.0  # how stale the worker's view of a credentials quarantine may be


def _no_probe(pair: TenantPair) -> ConnectionProbe:
    from sync.errors import ConfigError

    raise ConfigError("this runtime has no connection probe (in-memory tenants): a connection test needs real edges")


def _no_subscriptions(pair: TenantPair) -> GraphSubscriptions:
    from sync.errors import ConfigError

    raise ConfigError("this runtime has no Graph subscriptions (in-memory tenants): change notifications need real edges")


@dataclass
class Runtime:
    stores: Stores
    open_source: SourceFactory
    open_target: TargetFactory
    open_visibility: VisibilityFactory = lambda pair: None
    tuning: Tuning = field(default_factory=Tuning)
    open_probe: ProbeFactory = _no_probe  # fresh edges for connection tests
    open_subscriptions: SubscriptionsFactory = _no_subscriptions  # the source's change-notification subscriptions
    reset_credentials: Callable[[], None] = lambda: None  # forget cached credentials and secrets (after a fix)
    # The pair's secret references this machine cannot read ("field.path: why"); in-memory tenants read none.
    unreadable_secrets: Callable[[TenantPair], list[str]] = lambda pair: []
    instance_id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    _targets: dict[str, tuple[str, int, Target]] = field(default_factory=dict, repr=False)
    _pairs: dict[str, tuple[float, TenantPair]] = field(default_factory=dict, repr=False)
    _quarantines: dict[str, tuple[float, str, int]] = field(default_factory=dict, repr=False)
    _opened_at_epoch: dict[str, int] = field(default_factory=dict, repr=False)
    _pacers: dict[str, OrgPacer] = field(default_factory=dict, repr=False)
    _parts: dict[str, object] = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _targets_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @classmethod
    def from_settings(cls, environ: Mapping[str, str] | None = None) -> Runtime:
        from sync.app.wiring.connectors import open_source, open_source_visibility, open_subscriptions, open_target
        from sync.app.wiring.probe import open_probe
        from sync.identity.credentials import shared_credentials
        from sync.identity.secrets import SecretResolver, unreadable_secrets

        resolver = SecretResolver(environ=environ)

        def source(pair: TenantPair) -> Source:
            rt.credentials_since_lift(pair.id)
            return open_source(pair, resolver)

        def target(pair: TenantPair) -> Target:
            return open_target(pair, resolver, pacer=rt.pacer(pair.target.organization),
                               lookup_batch=rt.tuning.lookup_batch)

        def reset_credentials() -> None:
            shared_credentials.clear()
            resolver.clear()

        rt = cls(
            Stores.from_settings(environ),
            source,
            target,
            lambda pair: open_source_visibility(pair, resolver),
            tuning=Tuning.from_settings(environ),
            open_probe=lambda pair: open_probe(pair, environ=None if environ is None else dict(environ)),
            reset_credentials=reset_credentials,
            unreadable_secrets=lambda pair: unreadable_secrets(pair, SecretResolver(environ=environ)),
            open_subscriptions=lambda pair: open_subscriptions(pair, resolver),
        )
        return rt

    def hidden_ids(self, pair: TenantPair) -> frozenset[str] | None:
        """Whom the source's own Exchange hides from its address lists (None: the pair does not grant it)."""
        visibility = self.open_visibility(pair)
        return visibility.hidden_ids() if visibility is not None else None

    def per_instance(self, name: str, make: Callable[[], Part]) -> Part:
        """The instance's one `name` (made by `make` on first use, then shared by every pair and thread): for
        example the worker's creation-quota gate, whose cache serves every pair."""
        with self._lock:
            if name not in self._parts:
                self._parts[name] = make()
            return cast(Part, self._parts[name])

    def pacer(self, organization: str) -> OrgPacer | None:
        """This instance's slots for calls to `organization` (None when pacing is turned off)."""
        if self.tuning.exchange_max_concurrency <= 0:
            return None
        key = organization.lower()
        with self._lock:
            if key not in self._pacers:
                self._pacers[key] = OrgPacer(
                    key, board=self.stores.targets.board(), instance=self.instance_id,
                    rules=PaceRules(maximum=self.tuning.exchange_max_concurrency),
                )
            return self._pacers[key]

    def pair(self, pair_id: str) -> TenantPair:
        """The pair definition, cached briefly: a worker applies many ops of the same pair."""
        cached = self._pairs.get(pair_id)
        if cached is not None and time.monotonic() - cached[0] < PAIR_CACHE_SECONDS:
            return cached[1]
        pair = self.stores.pairs.get(pair_id)
        self._pairs[pair_id] = (time.monotonic(), pair)
        return pair

    def target(self, pair: TenantPair) -> Target:
        """One target client per pair definition and credentials epoch, so its token and connection pool are
        reused until a credentials quarantine of the pair is lifted (then the fixed credential is read again)."""
        return self.target_and_epoch(pair)[0]

    def target_and_epoch(self, pair: TenantPair) -> tuple[Target, int]:
        """The pair's target client and the credentials epoch it was built under: a failure it meets began then."""
        key = pair.to_json()
        epoch = self.credentials_since_lift(pair.id)
        with self._targets_lock:  # concurrent ops of a pair share one client (and so one sign-in)
            cached = self._targets.get(pair.id)
            if cached is not None and cached[1] < epoch:
                cached = None  # lifted since this client was built: open it again with the fixed credential
            if cached is None or cached[0] != key:
                cached = (key, epoch, self.open_target(pair))
                self._targets[pair.id] = cached
            return cached[2], cached[1]

    def credentials_quarantine(self, pair_id: str) -> str:
        """The reason the pair is quarantined for its credentials ("" when it is not), at most
        QUARANTINE_CACHE_SECONDS old: the worker asks before every op."""
        return self._quarantine_view(pair_id)[0]

    def credentials_since_lift(self, pair_id: str) -> int:
        """Before the pair's edges are opened: when its credentials quarantine was lifted since this instance last
        opened them, forget cached credentials and Key Vault reads (the admin fixed something). The epoch."""
        epoch = self.credentials_epoch(pair_id)
        with self._lock:
            if self._opened_at_epoch.get(pair_id, epoch) < epoch:
                self.reset_credentials()
            self._opened_at_epoch[pair_id] = epoch
        return epoch

    def credentials_epoch(self, pair_id: str) -> int:
        """How many credentials quarantines of the pair were lifted, as this instance last read it."""
        return self._quarantine_view(pair_id)[1]

    def _quarantine_view(self, pair_id: str) -> tuple[str, int]:
        cached = self._quarantines.get(pair_id)
        if cached is not None and time.monotonic() - cached[0] < QUARANTINE_CACHE_SECONDS:
            return cached[1], cached[2]
        status = self.stores.pair_state.get(pair_id)
        reason = status.quarantine_reason if status.credentials_quarantined else ""
        self._quarantines[pair_id] = (time.monotonic(), reason, status.credentials_epoch)
        return reason, status.credentials_epoch

    def look_again(self, pair_id: str) -> None:
        """The pair's quarantine changed: the next op reads it from the table."""
        self._quarantines.pop(pair_id, None)

    def forget_connections(self, pair_id: str) -> None:
        """After the pair's credentials changed state (quarantined or fixed): new clients, credentials and secrets
        on next use, and a fresh look at the quarantine."""
        self._targets.pop(pair_id, None)
        self._quarantines.pop(pair_id, None)
        self._pairs.pop(pair_id, None)
        self.reset_credentials()
