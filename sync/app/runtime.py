"""Wiring: the stores plus a source and a target per pair. Triggers, the CLI and tests all go through this."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from sync.contract.pairs import TenantPair
from sync.core.source import Source
from sync.core.target import Target
from sync.exchange.visibility import SourceVisibility
from sync.settings import Tuning
from sync.state.stores import Stores

SourceFactory = Callable[[TenantPair], Source]
TargetFactory = Callable[[TenantPair], Target]
VisibilityFactory = Callable[[TenantPair], SourceVisibility | None]
PAIR_CACHE_SECONDS = 60.0


@dataclass
class Runtime:
    stores: Stores
    open_source: SourceFactory
    open_target: TargetFactory
    open_visibility: VisibilityFactory = lambda pair: None
    tuning: Tuning = field(default_factory=Tuning)
    _targets: dict[str, tuple[str, Target]] = field(default_factory=dict, repr=False)
    _pairs: dict[str, tuple[float, TenantPair]] = field(default_factory=dict, repr=False)

    @classmethod
    def from_settings(cls, environ: Mapping[str, str] | None = None) -> Runtime:
        from sync.app.connectors import open_source, open_source_visibility, open_target
        from sync.identity.secrets import SecretResolver

        resolver = SecretResolver(environ=environ)
        return cls(
            Stores.from_settings(environ),
            lambda pair: open_source(pair, resolver),
            lambda pair: open_target(pair, resolver),
            lambda pair: open_source_visibility(pair, resolver),
            tuning=Tuning.from_settings(environ),
        )

    def pair(self, pair_id: str) -> TenantPair:
        """The pair definition, cached briefly: a worker applies many ops of the same pair."""
        cached = self._pairs.get(pair_id)
        if cached is not None and time.monotonic() - cached[0] < PAIR_CACHE_SECONDS:
            return cached[1]
        pair = self.stores.pairs.get(pair_id)
        self._pairs[pair_id] = (time.monotonic(), pair)
        return pair

    def target(self, pair: TenantPair) -> Target:
        """One target client per pair definition, so its token and connection pool are reused."""
        key = pair.to_json()
        cached = self._targets.get(pair.id)
        if cached is None or cached[0] != key:
            cached = (key, self.open_target(pair))
            self._targets[pair.id] = cached
        return cached[1]
