"""Front door: the Function App's HTTP routes as plain request → response functions, which the thin decorated
functions of `function_app.py` call (docs/http-api.md), and the anonymous route Graph posts change notifications
to.

May import: `sync.app`, `sync.state`, `sync.graph`, `sync.exchange`, `sync.identity`, `sync.core`, `sync.contract`,
`sync.settings`, `sync.errors` (the floors below). Never `sync.cli`, the other front door on its floor.
"""
