"""All the tables and queues of one storage account, named by the app settings."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from sync.settings import required_setting
from sync.state.contacts import ContactStateStore
from sync.state.groups import GroupStore
from sync.state.pair_state import PairStateStore
from sync.state.pairs import PairStore
from sync.state.queues import FAILED_SUFFIX, PARKED_SUFFIX, POISON_SUFFIX, OpQueue
from sync.state.runs import RunStore
from sync.state.storage import StorageAccount


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
    parked: OpQueue  # ops of pairs quarantined for their credentials, until a connection test passes

    @classmethod
    def open(cls, account: StorageAccount, environ: Mapping[str, str] | None = None) -> Stores:
        queue_name = required_setting("CTCS_OPS_QUEUE", environ)
        groups_table = required_setting("CTCS_GROUPS_TABLE", environ)
        return cls(
            pairs=PairStore(account.table(required_setting("CTCS_PAIRS_TABLE", environ))),
            pair_state=PairStateStore(account.table(required_setting("CTCS_PAIR_STATE_TABLE", environ))),
            contacts=ContactStateStore(account.table(required_setting("CTCS_CONTACT_STATE_TABLE", environ))),
            runs=RunStore(account.table(required_setting("CTCS_RUNS_TABLE", environ))),
            ops=OpQueue(account.queue(queue_name)).ensure(),
            poison=OpQueue(account.queue(queue_name + POISON_SUFFIX)).ensure(),
            failed=OpQueue(account.queue(queue_name + FAILED_SUFFIX)).ensure(),
            groups=GroupStore(lambda: account.table(groups_table)),  # created when a pair first scopes by group
            parked=OpQueue(account.queue(queue_name + PARKED_SUFFIX)).ensure(),
        )

    @classmethod
    def from_settings(cls, environ: Mapping[str, str] | None = None) -> Stores:
        return cls.open(StorageAccount.from_settings(environ), environ)
