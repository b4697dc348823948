"""The admin's room: what an admin asks for through the CLI or HTTP (status, explain, the connection test and the
timer's retest of quarantined pairs, provisioning one user now, the CLI's in-process drain). Such a question
often spans jobs, so this is the one room that may use the planner and the worker together; no job imports it.

May import: `sync.app.planner`, `sync.app.worker`, `sync.app.notifications`, `sync.app.wiring` (the jobs and the
shared wiring of its floor), `sync.state`, `sync.graph`, `sync.exchange`, `sync.identity`, `sync.core`, `sync.contract`, `sync.settings`,
`sync.errors` (the floors below).
"""
