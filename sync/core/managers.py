"""Manager links (pure): a contact's `Manager` names the manager's own contact in the target.

Exchange only accepts a `Manager` that resolves to an object of the target organisation, so a contact can point at
its manager only while the manager's contact exists. The rules:

- A user's manager is what the round's `manager@delta` says (the current manager, or an `@removed` entry: none).
  Without the annotation, an incremental round means "unchanged" (the state row's `manager_id`); a full round
  carries it for every user who has a manager, so there it means "none".
- The desired `Manager` is the manager's contact Name (`contact_name(manager id)`, deterministic, no look-up)
  when the manager's state row is `ok` and this plan does not remove it; else "".
- Link fix-ups, every run: a contact the round did not touch whose manager became linkable gets a partial update
  that sets only `Manager`; one whose `Manager` is set while its manager is no longer linkable (deleted, hidden,
  out of scope, conflict, failed) gets a partial update that clears it.

A manager and a report created by the same plan: the report is created with `Manager` "" (the manager's contact
does not exist yet when the plan is made) and the next run's fix-up links it, so a link lags by at most one run.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from sync.contract.vocabulary import ContactStatus
from sync.core.mapping import contact_name
from sync.core.source import SourceUser

MANAGER_DELTA = "manager@delta"


class LinkRow(Protocol):
    """What link planning reads of a state row (`sync.contract.summaries.StateSummary` has it)."""

    @property
    def status(self) -> str: ...

    @property
    def manager_id(self) -> str: ...

    @property
    def manager_set(self) -> bool: ...


@dataclass(frozen=True)
class LinkFix:
    """A partial update of one contact's `Manager`: its manager's contact Name, or "" to clear it."""

    source_id: str
    manager: str
    manager_id: str
    reason: str  # manager_linked | manager_unlinked


def reported_manager(user: SourceUser) -> str | None:
    """The manager id `manager@delta` reports: an id, "" when it was removed, None when the user carries no
    (readable) annotation."""
    entries = user.get(MANAGER_DELTA)
    if isinstance(entries, Mapping):
        entries = [entries]
    if not isinstance(entries, list):
        return None
    current = [entry for entry in entries if isinstance(entry, Mapping) and "@removed" not in entry and entry.get("id")]
    return str(current[-1]["id"]) if current else ""


@dataclass(frozen=True)
class ManagerLinks:
    """Link planning for one plan: build once the plan knows which contacts it removes."""

    enabled: bool
    full: bool
    state: Mapping[str, LinkRow]
    linkable: frozenset[str]  # users whose contact exists and stays: a Manager may name it

    @classmethod
    def build(
        cls, *, enabled: bool, full: bool, state: Mapping[str, LinkRow], leaving: Collection[str]
    ) -> ManagerLinks:
        linkable = frozenset(sid for sid, row in state.items() if row.status == ContactStatus.OK and sid not in leaving)
        return cls(enabled, full, state, linkable)

    def manager_of(self, source_id: str, user: SourceUser) -> str:
        """The user's manager id ("" = none); "" for everyone when the pair turned links off."""
        if not self.enabled:
            return ""
        reported = reported_manager(user)
        if reported is not None:
            return reported
        row = self.state.get(source_id)
        return "" if self.full or row is None else row.manager_id

    def desired(self, manager_id: str) -> str:
        """The `Manager` a contact should name: the manager's contact when it is linkable, else ""."""
        return contact_name(manager_id) if manager_id and manager_id in self.linkable else ""

    def fixups(self, touched: Collection[str]) -> Iterator[LinkFix]:
        """Partial updates for `ok` contacts outside `touched` (users this plan already decided) whose link is off."""
        if not self.enabled:
            return
        for source_id in sorted(self.state):
            row = self.state[source_id]
            if source_id in touched or row.status != ContactStatus.OK:
                continue
            wanted = self.desired(row.manager_id)
            if wanted and not row.manager_set:
                yield LinkFix(source_id, wanted, row.manager_id, "manager_linked")
            elif row.manager_set and not wanted:
                yield LinkFix(source_id, "", row.manager_id, "manager_unlinked")


def partial_contact(fix: LinkFix) -> dict[str, Any]:
    return {"Manager": fix.manager}
