"""Exceptions ctcs raises, as a tree.

    CtcsError
    ├── ConfigError             bad app setting, pair file or secret reference (exit code 2)
    │   ├── PairValidationError     a pair definition broke one or more rules
    │   └── CredentialUnusable      a pair's credential cannot be used as defined: its secret or certificate
    │                               cannot be read, or federation would cross clouds
    ├── PairNotFound            no pair with that id
    ├── BadOpMessage            a queue message is not a valid contact operation
    ├── BadRunRequest           a pair-runs message is not a valid request to plan a pair
    ├── LeaseHeld               another run is planning the pair right now
    │   └── LeaseLost               this run's lease ran out and another run took the pair over
    ├── PairParked              the pair is quarantined for its credentials: its ops wait, untried
    ├── SourceError             the source tenant could not be read
    │   ├── SourceThrottled         Graph kept answering 429/503/504
    │   ├── SourceAuthError         no token, or Graph answered 401/403: credential, consent or permission
    │   └── DeltaTokenExpired       the stored deltaLink is no longer valid: a full round is needed
    └── TargetError             Exchange Online refused or failed a call
        ├── TargetTransient         worth retrying: 5xx, busy server, replication lag
        │   ├── TargetThrottled         429; `retry_after` says when to try again; `concurrency`: the tenant's cap
        │   ├── ManagerNotFound         Set-Contact -Manager named a contact Exchange cannot see (yet)
        │   └── RowBusy                 another op for the same user holds its state row: deferred, then tried again
        ├── CreationQuotaReached    the organisation may create no more contacts for now: creates wait, nothing failed
        ├── TargetAuthError         401/403: bad credential, missing permission or role
        ├── TargetNotFound          the object does not exist (any more)
        └── TargetRejected          a permanent refusal for this contact (address in use, bad value)
            └── AddressInUse            another recipient holds the address; `holder` names it

Messages never carry a secret (invariant 6): they name settings, fields and references, never values.
"""

from __future__ import annotations

from datetime import datetime


class CtcsError(Exception):
    """Base of every error ctcs raises on purpose."""


class ConfigError(CtcsError):
    """An app setting, pair definition or secret reference is missing or wrong."""


class PairValidationError(ConfigError):
    """A pair definition broke one or more rules; `problems` lists each as "field.path: what is wrong"."""

    def __init__(self, problems: list[str], *, where: str = "pair definition") -> None:
        self.problems = problems
        lines = "\n".join(f"  - {problem}" for problem in problems)
        super().__init__(f"{where} has {len(problems)} problem(s):\n{lines}")


class PairNotFound(CtcsError):
    """No pair with the given id exists in the TenantPairs table."""

    def __init__(self, pair_id: str) -> None:
        self.pair_id = pair_id
        super().__init__(f"no tenant pair with id {pair_id!r}")


class BadOpMessage(CtcsError):
    """A queue message is not a valid contact operation (bad JSON, unknown schema, missing field)."""


class BadRunRequest(CtcsError):
    """A `pair-runs` queue message is not a valid request to plan a pair (bad JSON, unknown kind or trigger)."""


class CredentialUnusable(ConfigError):
    """A pair side's credential cannot be used as defined: its secret or certificate reference (`kv:`, `env:`,
    `file:`) is missing, empty or not a certificate, the vault refused, or managed-identity federation would cross
    clouds. A credential problem an admin must fix, like a rejected certificate: the pair is quarantined."""


class LeaseHeld(CtcsError):
    """Another run holds the pair's planning lease; this run did nothing."""


class LeaseLost(LeaseHeld):
    """This run's lease expired while it worked (it stalled longer than CTCS_LEASE_SECONDS) and another run took
    the pair: this run stops without writing anything more, and the other carries the round on."""


class PairParked(CtcsError):
    """The op's pair is quarantined because its credentials fail: the op is kept, untried, until a connection test
    passes (never spends a delivery attempt or a token request)."""


class SourceError(CtcsError):
    """The source tenant could not be read (network, auth, unexpected answer)."""


class SourceThrottled(SourceError):
    """Graph kept throttling beyond the retry budget of one run."""

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        self.retry_after = retry_after
        super().__init__(message)


class SourceAuthError(SourceError):
    """No token for the source tenant, or Graph answered 401/403: the credential, admin consent or a permission is
    missing. Retrying cannot help until an admin fixes it: the pair is quarantined (reason kind `credentials`)."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        self.status = status
        super().__init__(message)


class DeltaTokenExpired(SourceError):
    """The stored deltaLink expired or was reset (syncStateNotFound, resyncRequired, 410 Gone)."""


class TargetError(CtcsError):
    """Exchange Online refused or failed a call."""

    def __init__(self, message: str, *, status: int | None = None, exception_type: str | None = None) -> None:
        self.status = status
        self.exception_type = exception_type
        super().__init__(message)


class TargetTransient(TargetError):
    """A failure worth retrying with backoff: 5xx, a busy backend, replication lag."""


class TargetThrottled(TargetTransient):
    """Exchange answered 429 (or a concurrency-limit body); wait `retry_after` seconds. `concurrency` is True when
    the tenant's cap on concurrent calls refused it (the plain-text body), False for a spent request budget."""

    def __init__(
        self, message: str, *, retry_after: float | None = None, status: int | None = 429, concurrency: bool = False
    ) -> None:
        self.retry_after = retry_after
        self.concurrency = concurrency
        super().__init__(message, status=status)


class ManagerNotFound(TargetTransient):
    """Set-Contact's `Manager` names an object Exchange does not find: the manager's contact was made moments ago
    (replication lag) or is gone. Retried by the queue like any transient failure; `manager` is the name sent."""

    def __init__(self, message: str, *, manager: str, status: int | None = None) -> None:
        self.manager = manager
        super().__init__(message, status=status, exception_type="ManagementObjectNotFoundException")


class RowBusy(TargetTransient):
    """Another op for the same user holds its ContactState row (it is being applied right now); this op is deferred
    `retry_after` seconds and tried again, without spending a delivery. Not an Exchange failure: it costs no call."""

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        self.retry_after = retry_after
        super().__init__(message, status=None)


class CreationQuotaReached(TargetError):
    """New-MailContact answered `RecipientUsageExceededRecentQuotaException`, or the organisation's creation quota
    is known to be spent: no create can succeed before it frees. A pause, not a failure of the contact: the op is
    deferred `retry_after` seconds (until `resume_at`), never recorded failed and never poisoned."""

    def __init__(
        self, message: str, *, status: int | None = 400, retry_after: float | None = None,
        resume_at: datetime | None = None,
    ) -> None:
        self.retry_after = retry_after
        self.resume_at = resume_at
        super().__init__(message, status=status, exception_type="RecipientUsageExceededRecentQuotaException")


class TargetAuthError(TargetError):
    """401 or 403: the credential, the Exchange.ManageAsApp permission or the admin role is missing."""


class TargetNotFound(TargetError):
    """The object named by an Identity does not exist."""


class TargetRejected(TargetError):
    """A permanent refusal for this contact: retrying the same call cannot succeed."""


class AddressInUse(TargetRejected):
    """Another recipient already holds the address; `holder` names it as Exchange does."""

    def __init__(self, message: str, *, holder: str | None = None, status: int | None = 400) -> None:
        self.holder = holder
        super().__init__(message, status=status, exception_type="ProxyAddressExistsException")
