"""Front door: `python -m sync`, the admin's command line. It parses a command, calls `sync.app`, renders tables or
JSON and turns the outcome into an exit code (docs/cli.md).

May import: `sync.app`, `sync.state`, `sync.graph`, `sync.exchange`, `sync.identity`, `sync.core`, `sync.contract`,
`sync.settings`, `sync.errors` (the floors below). Never `sync.api`, the other front door on its floor.
"""
