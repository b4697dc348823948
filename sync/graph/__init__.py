"""Edge: the source tenant through Microsoft Graph (msgraph-sdk, raw JSON, our own retries): users/delta and
groups/delta rounds, group membership, groups as contacts, the connection test's cheapest reads, and
change-notification subscriptions.

May import: `sync.core`, `sync.contract`, `sync.settings`, `sync.errors` (the floors below). Never `sync.state`,
`sync.exchange` or `sync.identity`, its siblings on the same floor.
"""
