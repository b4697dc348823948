"""The notifications intake's room: the work of the anonymous route Graph posts change notifications to: each item's
clientState checked against its subscription, counts kept, and one delayed run request per burst.

May import: `sync.app.wiring` (the shared wiring of its floor), `sync.state`, `sync.graph`, `sync.exchange`, `sync.identity`, `sync.core`, `sync.contract`,
`sync.settings`, `sync.errors` (the floors below). Never `sync.app.planner` or `sync.app.worker` (the other jobs)
nor `sync.app.admin` (above it).
"""
