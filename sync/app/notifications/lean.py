"""What the notification route needs of the app, and nothing more, so a cold instance answers Graph in time.

Graph gives a notification 3 s and counts a reply over 2.9 s as slow; a Flex Consumption instance may start cold for
it. The full `Runtime` (sync.app.wiring.runtime) loads the Graph and Exchange clients, azure-identity and the pair
models, and opens every table and queue: about a second the route never needs. The route needs the settings
(`Tuning`), the subscription rows and the pair's notification mark (both in the PairState table) and the `pair-runs`
queue, so `IntakeRuntime` names just those; a `Runtime` is one (the tests and `python -m sync` pass theirs), and
`LeanIntake.from_settings` opens only them for a process that has no Runtime yet (function_app's route on a cold
instance). Neither creates a table or queue: the timer made them before it gave Graph the route's address.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

from sync.settings import Tuning, required_setting
from sync.state.pair_state import PairStateStore
from sync.state.queues import PairRunQueue
from sync.state.storage import StorageAccount
from sync.state.subscriptions import SubscriptionStore


class IntakeStores(Protocol):
    @property
    def subscriptions(self) -> SubscriptionStore: ...

    @property
    def pair_state(self) -> PairStateStore: ...

    @property
    def pair_runs(self) -> PairRunQueue: ...


class IntakeRuntime(Protocol):
    """The part of a `Runtime` the notification intake uses."""

    @property
    def tuning(self) -> Tuning: ...

    @property
    def stores(self) -> IntakeStores: ...


@dataclass(frozen=True)
class LeanStores:
    subscriptions: SubscriptionStore
    pair_state: PairStateStore
    pair_runs: PairRunQueue


@dataclass(frozen=True)
class LeanIntake:
    tuning: Tuning
    stores: LeanStores

    @classmethod
    def from_settings(cls, environ: Mapping[str, str] | None = None) -> LeanIntake:
        account = StorageAccount.from_settings(environ)
        pair_state = account.table(required_setting("CTCS_PAIR_STATE_TABLE", environ))
        queue = PairRunQueue(account.queue(required_setting("CTCS_PAIR_RUNS_QUEUE", environ)))
        stores = LeanStores(SubscriptionStore(pair_state), PairStateStore(pair_state), queue)
        return cls(Tuning.from_settings(environ), stores)
