"""What planning reads of one ContactState row: `StateSummary`.

The state floor (sync.state.contacts) builds these from the table and the planner (sync.core.plan) decides with
them, so the shape lives here, below both: storage does not depend on the planner's module.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sync.contract.vocabulary import ContactStatus, ObjectKind


@dataclass(slots=True)
class StateSummary:
    """What planning needs to know of one ContactState row."""

    status: ContactStatus
    hash: str
    version: int
    guid: str = ""
    hidden_at: datetime | None = None  # when a staged delete hid the contact
    manager_id: str = ""  # the source id of the user's manager as last planned ("" = none)
    manager_set: bool = False  # the applied contact's Manager names the manager's contact
    queued_round: str = ""  # a `queued` row: the planning round and page that marked it
    queued_page: int = 0
    kind: ObjectKind = ObjectKind.USER  # the source object the contact stands for

    def __post_init__(self) -> None:
        self.status = ContactStatus(self.status)  # a table gives back the plain string
        self.kind = ObjectKind(self.kind or ObjectKind.USER)

    @property
    def live(self) -> bool:
        """A contact exists (or may exist) in the target for this user."""
        return self.status is not ContactStatus.DELETED

    @property
    def managed(self) -> bool:
        """A contact ctcs made (or tried to) exists for this user; a queued create does not count yet."""
        return self.status.ours and self.status is not ContactStatus.QUEUED
