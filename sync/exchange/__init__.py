"""Edge: the Exchange Online admin API (`InvokeCommand` on httpx): the target's mail contacts as the `Target`
protocol, shared `Get-Recipient` look-ups, the pace of calls per organisation, the source's hidden recipients,
and OPATH filters that source data cannot widen.

May import: `sync.core`, `sync.contract`, `sync.settings`, `sync.errors` (the floors below). Never `sync.state`,
`sync.graph` or `sync.identity`, its siblings on the same floor.
"""
