"""State: the tables and queues of the storage account, each behind a small store class
(`sync.state.stores.Stores`).

Six tables: TenantPairs (pair definitions), PairState (deltaLinks, leases, quarantines, the round in progress and
its pages, Graph subscriptions), ContactState (one row per synced user or group), SyncRuns (one row per run),
GroupMembership (group scoping) and TargetState (the creation-quota pause and the pace per target organisation).
Five queues: `contact-ops` with its `-poison`, `-failed` and `-parked` companions, and `pair-runs`. It never calls
Graph or Exchange; only sync.app holds both and orders the writes.

May import: `sync.core`, `sync.contract`, `sync.settings`, `sync.errors` (the floors below). Never `sync.graph`,
`sync.exchange` or `sync.identity`, the edges on its own floor.
"""
