"""Edge: secret references (`kv:`, `env:`, `file:`) turned into values, azure-identity credentials kept for the
process, and the permissions an access token carries. The only place secret values exist (invariant 6).

May import: `sync.core`, `sync.contract`, `sync.settings`, `sync.errors` (the floors below). Never `sync.state`,
`sync.graph` or `sync.exchange`, its siblings on the same floor.
"""
