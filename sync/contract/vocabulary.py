"""The words ctcs writes into its tables and reports: contact statuses, run outcomes and run triggers.

They are `StrEnum`s, so a value read back from Table Storage (a plain string) compares equal to its member, and
a member written into a table or JSON is its plain string. Scripts may rely on these values: they are part of the
contract (`status --json`, `GET /api/pairs`, the ContactState and SyncRuns tables).
"""

from __future__ import annotations

import secrets
from datetime import datetime
from enum import StrEnum


class ContactStatus(StrEnum):
    """What a ContactState row says about one source object's contact."""

    OK = "ok"  # the contact is in place with the values of the row's hash
    CONFLICT = "conflict"  # another recipient holds its address or name; left alone until that changes
    FAILED = "failed"  # Exchange refused a value, or the op ended in the poison queue
    HIDDEN = "hidden"  # a staged delete hid it from the address lists
    DELETED = "deleted"  # tombstone: the contact was removed
    QUEUED = "queued"  # its create is on the queue, not applied yet
    RELEASED = "released"  # the contact lost this pair's anchor (an admin took it over): never written again

    @property
    def live(self) -> bool:
        """A contact exists (or may exist) in the target."""
        return self is not ContactStatus.DELETED

    @property
    def needs_attention(self) -> bool:
        return self in (ContactStatus.CONFLICT, ContactStatus.FAILED, ContactStatus.RELEASED)

    @property
    def ours(self) -> bool:
        """ctcs may write to the contact this row names (a released one belongs to someone else now)."""
        return self.live and self is not ContactStatus.RELEASED


class ObjectKind(StrEnum):
    """What kind of source object a contact stands for (ContactState's `kind` column; a row without one is a user's)."""

    USER = "user"
    GROUP = "group"


PAIR_REPLACED = "discarded (pair replaced)"  # a message of another generation of its pair id, dropped unapplied


class RunOutcome(StrEnum):
    """How a run (a SyncRuns row, `PairState.last_outcome`) ended."""

    RUNNING = "running"
    PREVIEWED = "previewed"  # a dry run (`plan`): nothing written
    NO_CHANGES = "no_changes"  # nothing to queue
    PLANNED = "planned"  # ops queued for the worker
    CONTINUED = "continued"  # part of a long round planned and queued; the rest is handed to the next invocation
    APPLIED = "applied"  # ops queued and applied in-process (`python -m sync run`)
    QUARANTINED = "quarantined"  # stopped by the safety gate, or the pair is quarantined
    LEASE_HELD = "lease_held"  # another run was planning the pair
    FAILED = "failed"  # the run could not plan (source unreadable, bad configuration, ...)

    @property
    def healthy(self) -> bool:
        return self in (RunOutcome.NO_CHANGES, RunOutcome.PLANNED, RunOutcome.CONTINUED, RunOutcome.APPLIED,
                        RunOutcome.LEASE_HELD)


class RunTrigger(StrEnum):
    """What started a run."""

    TIMER = "timer"
    HTTP = "http"  # POST /api/pairs/{id}/resync
    CLI = "cli"  # python -m sync run / plan
    POISON = "poison"  # the poison trigger recording an op that failed every delivery
    RETEST = "retest"  # the timer re-testing the connection of a pair quarantined for its credentials
    ON_DEMAND = "on_demand"  # python -m sync run --user / POST /api/pairs/{id}/users/{user}/sync: one user now
    RECONCILE = "reconcile"  # a reconcile round: the target's owned contacts compared with state and source
    NOTIFICATION = "notification"  # a Graph change notification (or a lifecycle event) said the source changed


class QuarantineKind(StrEnum):
    """Why a pair is quarantined (PairState.quarantine_kind); each kind is released its own way."""

    GATE = "gate"  # the safety gate: too many deletes; an admin releases it (`run --allow-deletes`)
    CREDENTIALS = "credentials"  # authentication or permission failed; a passing connection test releases it


class SubscriptionState(StrEnum):
    """How a pair's Graph change-notification subscription stands (`status`, the subscription rows)."""

    ACTIVE = "active"  # created or renewed; Graph sends notifications until it expires
    REAUTHORIZE = "reauthorize"  # Graph asked (reauthorizationRequired): the next maintenance renews it
    REMOVED = "removed"  # Graph removed it (subscriptionRemoved) or it expired: the next maintenance makes a new one
    FAILED = "failed"  # the last create or renewal failed; its error says why and the timer tries again


def new_run_id(now: datetime) -> str:
    """A run's id: when it started, to the second, and six random hex digits (SyncRuns rows sort by it)."""
    return f"{now:%Y%m%dT%H%M%S}-{secrets.token_hex(3)}"
