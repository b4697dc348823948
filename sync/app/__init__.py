"""The runtime floor: what a planning run, a queued op, a change notification and an admin's request do, in the
order of their writes. It is the only floor that holds both the state and the edges.

Inside, one room per job on shared wiring (docs/architecture.md, "The rooms of sync.app"): `sync.app.admin` above
`sync.app.planner` | `sync.app.worker` | `sync.app.notifications`, which never import one another, above the shared
wiring `sync.app.wiring`. Only packages here, each a room you can name without reading it.

May import: `sync.state`, `sync.graph`, `sync.exchange`, `sync.identity`, `sync.core`, `sync.contract`,
`sync.settings`, `sync.errors` (the floors below). Never the front doors `sync.cli` or `sync.api`.
"""
