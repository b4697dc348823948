"""Pure decisions, without I/O: who is in scope and why not, what a contact should say, which ops a round needs and
the safety gate, manager links, reconcile's comparison, what a failed delivery leads to, retries, the creation
quota, pacing, and the `Source` and `Target` protocols the edges provide.

May import: `sync.contract`, `sync.settings`, `sync.errors` (the floors below).
"""
