"""The source tenant's directory: users as Graph-shaped dicts, and a change log that delta queries read.

Every mutation appends a `Change` with a rising sequence number; a delta round is "the changes after sequence N",
folded per object (last state wins). The log records the object type so groups (and membership changes) can join
later with their own `/groups/delta` without touching the user path.

    uid = directory.add_user({"displayName": "Adele Vance", "mail": "adele@contoso.com"})   # -> id
    directory.update_user(uid, department="Sales", jobTitle=None)   # None clears (the property disappears)
    directory.delete_user(uid)                  # soft delete: delta says @removed reason "changed"
    directory.restore_user(uid)                 # comes back as a normal object
    directory.delete_user(uid, permanent=True)  # hard delete: @removed reason "deleted"
    directory.users                             # copies of the current (not deleted) users
    directory.expire_tokens() / reset_tokens()  # every token issued so far: 400 syncStateNotFound / 410 Gone
    directory.page_size = 200; directory.replay_next_round = True; directory.delta_token_lifetime = 7 * 86400
"""

from __future__ import annotations

import copy
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

# Properties of microsoft.graph.user that $select may name (a practical subset of the v1.0 schema).
USER_PROPERTIES = frozenset(
    {
        "id", "displayName", "givenName", "surname", "mail", "mailNickname", "proxyAddresses", "otherMails",
        "userPrincipalName", "userType", "accountEnabled", "showInAddressList", "companyName", "department",
        "jobTitle", "officeLocation", "businessPhones", "mobilePhone", "faxNumber", "streetAddress", "city",
        "state", "postalCode", "country", "usageLocation", "preferredLanguage", "onPremisesExtensionAttributes",
        "employeeId", "employeeType", "employeeHireDate", "createdDateTime", "deletedDateTime", "creationType",
        "externalUserState", "onPremisesSyncEnabled", "onPremisesImmutableId", "onPremisesSamAccountName",
        "onPremisesUserPrincipalName", "onPremisesDistinguishedName", "onPremisesDomainName", "initials",
        "manager", "identities", "imAddresses", "ageGroup", "legalAgeGroupClassification", "mySite", "aboutMe",
    }
)


@dataclass(frozen=True)
class Change:
    """One entry of the change log. kind: "upsert" (created, updated or restored), "soft_delete", "hard_delete"."""

    seq: int
    object_type: str
    object_id: str
    kind: str
    properties: frozenset[str] = field(default_factory=frozenset)


class Directory:
    """Users of one tenant plus the change log; all methods are thread-safe (the cloud shares its lock)."""

    def __init__(self, *, tenant_id: str, domain: str) -> None:
        self.tenant_id = tenant_id
        self.domain = domain
        self.lock: threading.RLock = threading.RLock()
        self._users: dict[str, dict[str, Any]] = {}
        self._soft_deleted: dict[str, dict[str, Any]] = {}
        self._log: list[Change] = []
        self._seq = 0
        self.page_size = 200
        self.replay_next_round = False  # next incremental round re-sends earlier changes and duplicates objects
        self.delta_token_lifetime = 7 * 86400.0
        self.token_serial = 0  # every issued delta/skip token carries the next serial
        self.expired_before_serial = 0
        self.reset_before_serial = 0

    # reading ---------------------------------------------------------------------------------------------------
    @property
    def users(self) -> list[dict[str, Any]]:
        with self.lock:
            return [copy.deepcopy(user) for user in self._users.values()]

    @property
    def deleted_users(self) -> list[dict[str, Any]]:
        with self.lock:
            return [copy.deepcopy(user) for user in self._soft_deleted.values()]

    def get_user(self, user_id: str) -> dict[str, Any] | None:
        with self.lock:
            user = self._users.get(user_id)
            return copy.deepcopy(user) if user is not None else None

    @property
    def sequence(self) -> int:
        return self._seq

    def changes_since(self, seq: int, object_type: str = "user") -> list[Change]:
        with self.lock:
            return [c for c in self._log if c.seq > seq and c.object_type == object_type]

    def changes_up_to(self, seq: int, object_type: str = "user") -> list[Change]:
        with self.lock:
            return [c for c in self._log if c.seq <= seq and c.object_type == object_type]

    def state_of(self, user_id: str) -> tuple[str, dict[str, Any] | None]:
        """("active", user) / ("soft_deleted", None) / ("gone", None), for rendering a delta entry."""
        with self.lock:
            if user_id in self._users:
                return "active", copy.deepcopy(self._users[user_id])
            if user_id in self._soft_deleted:
                return "soft_deleted", None
            return "gone", None

    # writing ---------------------------------------------------------------------------------------------------
    def _record(self, object_id: str, kind: str, properties: set[str] | frozenset[str] = frozenset()) -> None:
        self._seq += 1
        self._log.append(Change(self._seq, "user", object_id, kind, frozenset(properties)))

    def add_user(self, user: dict[str, Any]) -> str:
        """Add a user (Graph-shaped dict; `id` is generated when absent). Returns the id."""
        record = copy.deepcopy(user)
        record.setdefault("id", str(uuid.uuid4()))
        record.setdefault("userType", "Member")
        record.setdefault("accountEnabled", True)
        unknown = set(record) - USER_PROPERTIES
        if unknown:
            raise ValueError(f"not Graph user properties: {sorted(unknown)}")
        with self.lock:
            if record["id"] in self._users or record["id"] in self._soft_deleted:
                raise ValueError(f"user {record['id']} already exists")
            self._users[record["id"]] = record
            self._record(record["id"], "upsert", set(record))
        return str(record["id"])

    def update_user(self, user_id: str, **properties: Any) -> None:
        """Change properties; a value of None clears the property (Graph then omits it)."""
        unknown = set(properties) - USER_PROPERTIES
        if unknown or "id" in properties:
            raise ValueError(f"cannot set {sorted(unknown | ({'id'} & set(properties)))}")
        with self.lock:
            user = self._users[user_id]
            for name, value in properties.items():
                if value is None:
                    user.pop(name, None)
                else:
                    user[name] = copy.deepcopy(value)
            self._record(user_id, "upsert", set(properties))

    def delete_user(self, user_id: str, permanent: bool = False) -> None:
        """Soft delete (restorable) or permanent delete (also of an already soft-deleted user)."""
        with self.lock:
            if permanent:
                if self._users.pop(user_id, None) is None and self._soft_deleted.pop(user_id, None) is None:
                    raise KeyError(user_id)
                self._record(user_id, "hard_delete")
                return
            user = self._users.pop(user_id)
            user["deletedDateTime"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            self._soft_deleted[user_id] = user
            self._record(user_id, "soft_delete")

    def restore_user(self, user_id: str) -> None:
        with self.lock:
            user = self._soft_deleted.pop(user_id)
            user.pop("deletedDateTime", None)
            self._users[user_id] = user
            self._record(user_id, "upsert", set(user))

    # delta token validity ---------------------------------------------------------------------------------------
    def next_token_serial(self) -> int:
        with self.lock:
            self.token_serial += 1
            return self.token_serial

    def expire_tokens(self) -> None:
        """Every token issued so far now answers 400 syncStateNotFound."""
        with self.lock:
            self.expired_before_serial = self.token_serial + 1

    def reset_tokens(self) -> None:
        """Every token issued so far now answers 410 Gone with a Location for a fresh round."""
        with self.lock:
            self.reset_before_serial = self.token_serial + 1
