"""All the tables and queues of one storage account, named by the app settings."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from sync.settings import required_setting
from sync.state.contacts import ContactStateStore
from sync.state.groups import GroupStore
from sync.state.ownership import OwnershipStore
from sync.state.pair_state import PairStateStore
from sync.state.pairs import PairStore
from sync.state.queues import FAILED_SUFFIX, PARKED_SUFFIX, POISON_SUFFIX, OpQueue, PairRunQueue
from sync.state.removals import RemovalLedger
from sync.state.round_pages import RoundPageStore
from sync.state.runs import RunStore
from sync.state.storage import StorageAccount
from sync.state.subscriptions import SubscriptionStore
from sync.state.targets import TargetStateStore


@dataclass
class Stores:
    pairs: PairStore
    pair_state: PairStateStore
    contacts: ContactStateStore
    runs: RunStore
    ops: OpQueue
    poison: OpQueue
    failed: OpQueue  # ops the poison trigger keeps for replay-poison
    groups: GroupStore
    targets: TargetStateStore  # per target organisation: the creation-quota pause and the shared pace
    pair_runs: PairRunQueue  # requests to plan one pair (the planner's trigger)
    round_pages: RoundPageStore  # what each page of a round in progress saw (in the PairState table)
    parked: OpQueue  # ops of pairs quarantined for their credentials, until a connection test passes
    subscriptions: SubscriptionStore  # each pair's Graph change-notification subscriptions (in the PairState table)
    removals: RemovalLedger  # what each pair's queued plans removed lately, for the gate's window (PairState)
    # Queues no ctcs trigger reads, opened without creating them: status counts them (a missing one as empty).
    poison_poison: OpQueue  # <ops>-poison-poison: where the host moves what the poison trigger failed on
    pair_runs_poison: PairRunQueue  # <pair-runs>-poison: planning requests that failed every delivery
    pair_runs_poison_poison: PairRunQueue  # <pair-runs>-poison-poison: never filled while no trigger reads -poison
    ownership: OwnershipStore  # released and adopted contacts, by tenants and anchor (PairState)

    @classmethod
    def open(cls, account: StorageAccount, environ: Mapping[str, str] | None = None) -> Stores:
        queue_name = required_setting("CTCS_OPS_QUEUE", environ)
        pair_runs = required_setting("CTCS_PAIR_RUNS_QUEUE", environ)
        groups_table = required_setting("CTCS_GROUPS_TABLE", environ)
        pair_state = account.table(required_setting("CTCS_PAIR_STATE_TABLE", environ))
        return cls(
            pairs=PairStore(account.table(required_setting("CTCS_PAIRS_TABLE", environ))),
            pair_state=PairStateStore(pair_state),
            contacts=ContactStateStore(account.table(required_setting("CTCS_CONTACT_STATE_TABLE", environ))),
            runs=RunStore(account.table(required_setting("CTCS_RUNS_TABLE", environ))),
            ops=OpQueue(account.queue(queue_name)).ensure(),
            poison=OpQueue(account.queue(queue_name + POISON_SUFFIX)).ensure(),
            failed=OpQueue(account.queue(queue_name + FAILED_SUFFIX)).ensure(),
            groups=GroupStore(lambda: account.table(groups_table)),  # created when a pair first scopes by group
            targets=TargetStateStore(account.table(required_setting("CTCS_TARGETS_TABLE", environ))),
            pair_runs=PairRunQueue(account.queue(pair_runs)).ensure(),
            round_pages=RoundPageStore(pair_state),
            parked=OpQueue(account.queue(queue_name + PARKED_SUFFIX)).ensure(),
            subscriptions=SubscriptionStore(pair_state),
            removals=RemovalLedger(pair_state),
            poison_poison=OpQueue(account.queue(queue_name + POISON_SUFFIX + POISON_SUFFIX)),
            pair_runs_poison=PairRunQueue(account.queue(pair_runs + POISON_SUFFIX)),
            pair_runs_poison_poison=PairRunQueue(account.queue(pair_runs + POISON_SUFFIX + POISON_SUFFIX)),
            ownership=OwnershipStore(pair_state),
        )

    @classmethod
    def from_settings(cls, environ: Mapping[str, str] | None = None) -> Stores:
        return cls.open(StorageAccount.from_settings(environ), environ)
