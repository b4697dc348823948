"""The worker's room: one queued op from its message to Exchange and back: delivery and its outcomes (defer, retry,
poison, park), batches split into single ops, the op applied by version under its row's claim, address moves
between the pair's own contacts, and the creation-quota gate.

May import: `sync.app.wiring` (the shared wiring of its floor), `sync.state`, `sync.graph`, `sync.exchange`, `sync.identity`, `sync.core`, `sync.contract`,
`sync.settings`, `sync.errors` (the floors below). Never `sync.app.planner` or `sync.app.notifications` (the other
jobs) nor `sync.app.admin` (above it).
"""
