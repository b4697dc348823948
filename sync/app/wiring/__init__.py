"""The shared wiring every job stands on: the `Runtime` (the stores, a source and a target per pair, one per worker
instance), the openers of the real Graph and Exchange edges (`connectors` for runs, `probe` for a connection test),
and the credentials quarantine the planner, the worker and the connection test all meet. It never imports a job.

Inside: `sync.app.wiring.quarantine` above `sync.app.wiring.runtime` above `sync.app.wiring.probe` |
`sync.app.wiring.connectors`.

May import: `sync.state`, `sync.graph`, `sync.exchange`, `sync.identity`, `sync.core`, `sync.contract`,
`sync.settings`, `sync.errors` (the floors below). Never `sync.app.planner`, `sync.app.worker`,
`sync.app.notifications` or `sync.app.admin` (above it).
"""
