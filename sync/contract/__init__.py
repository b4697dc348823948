"""Contracts that users, scripts and stored data depend on: the pair file, the op message and the pair-run request,
the words written to tables and reports, Graph attributes and Exchange parameters, scoping filters, clouds and
countries. Change them only deliberately, with docs and tests (docs/design.md, "Contracts").

May import: `sync.settings`, `sync.errors` (the floors below).
"""
