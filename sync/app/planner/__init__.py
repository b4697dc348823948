"""The planner's room: everything a planning run does, fed by the timer and the `pair-runs` queue: fan-out, streamed
rounds page by page under the pair's lease, groups rounds, reconcile rounds and the upkeep of Graph
subscriptions.

May import: `sync.app.wiring` (the shared wiring of its floor), `sync.state`, `sync.graph`, `sync.exchange`, `sync.identity`, `sync.core`, `sync.contract`,
`sync.settings`, `sync.errors` (the floors below). Never `sync.app.worker` or `sync.app.notifications` (the other
jobs) nor `sync.app.admin` (above it).
"""
