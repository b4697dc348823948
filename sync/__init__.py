"""ctcs, Cross-Tenant Contact Sync: keeps a target tenant's Exchange Online mail contacts in step with a source
tenant's users and groups. Everything the Azure Functions app (`function_app.py`) and `python -m sync` do is
here.

The package is built in floors, each of which imports only from itself and the floors below it (pyproject.toml,
`[tool.importlinter]`; docs/architecture.md, "The floors"): the front doors `sync.cli` | `sync.api`, the runtime
`sync.app`, the state and the edges `sync.state` | `sync.graph` | `sync.exchange` | `sync.identity`, the pure
decisions `sync.core`, the contracts `sync.contract`, then `sync.settings` and `sync.errors`.

May import: `sync.cli`, `sync.api`, `sync.app`, `sync.state`, `sync.graph`, `sync.exchange`, `sync.identity`,
`sync.core`, `sync.contract`, `sync.settings`, `sync.errors` (every floor).
Never imports: `sim`, `tests` (the simulator and the tests sit outside and are never deployed).
"""
