"""The source tenant's directory: users as Graph-shaped dicts, and a change log that delta queries read.

Every mutation appends a `Change` with a rising sequence number; a delta round is "the changes after sequence N",
folded per object (last state wins). The log records the object type so groups (and membership changes) can join
later with their own `/groups/delta` without touching the user path.

    uid = directory.add_user({"displayName": "Adele Vance", "mail": "adele@contoso.com"})   # -> id
    directory.update_user(uid, department="Sales", jobTitle=None)   # None clears (the property disappears)
    directory.update_user(uid, manager=boss_id)  # the manager relationship (a user id); manager=None removes it
    directory.delete_user(uid)                  # soft delete: delta says @removed reason "changed"
    directory.restore_user(uid)                 # comes back as a normal object
    directory.delete_user(uid, permanent=True)  # hard delete: @removed reason "deleted"
    directory.users                             # copies of the current (not deleted) users
    directory.expire_tokens() / reset_tokens()  # every token issued so far: 400 syncStateNotFound / 410 Gone
    directory.page_size = 200; directory.replay_next_round = True; directory.delta_token_lifetime = 7 * 86400
    directory.skip_token_lifetime = 7 * 86400   # how long a nextLink ($skiptoken) stays valid (Microsoft documents none)
    directory.add_users(users, copy=False)      # bulk load (100,000 users in a few seconds); the dicts become the directory's

Groups (read by `/groups/delta` and `/groups/{id}/transitiveMembers`, see sim.groups):
    gid = directory.add_group("Sales")                      # -> id (or pass group_id=); a security group without mail
    gid = directory.add_group("Sales team", mail="sales@contoso.com", mailEnabled=True, securityEnabled=False,
                              groupTypes=["Unified"], description="...", proxyAddresses=["SMTP:sales@contoso.com"])
    directory.update_group(gid, description="...", hideFromAddressLists=True)   # None clears a property
    directory.add_member(gid, uid); directory.add_member(gid, other_gid)   # users or groups (nesting)
    directory.remove_member(gid, uid); directory.rename_group(gid, "Sales EMEA")
    directory.delete_group(gid)                             # gone: delta says @removed reason "deleted"
    directory.group_members(gid) / transitive_members(gid)  # [("user" | "group", id), ...]
    directory.group_page_size = 100                         # members@delta entries per groups/delta page
  A deleted user leaves every group (a restored one rejoins them), as in Entra.
"""

from __future__ import annotations

import copy
import threading
import time
import uuid
from collections.abc import Iterable
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


# Group properties a test may set (besides displayName, and members through add_member).
GROUP_SETTABLE = frozenset({
    "displayName", "description", "mail", "mailEnabled", "securityEnabled", "groupTypes", "proxyAddresses",
    "mailNickname", "visibility", "hideFromAddressLists",
})


def _copied(user: dict[str, Any]) -> dict[str, Any]:
    return copy.deepcopy(user)


@dataclass(frozen=True)
class Change:
    """One entry of the change log. kind: "upsert" (created, updated or restored), "soft_delete", "hard_delete"."""

    seq: int
    object_type: str
    object_id: str
    kind: str
    properties: frozenset[str] = field(default_factory=frozenset)
    member_id: str = ""  # groups: kind "member_add" / "member_remove" name the member and its type
    member_type: str = ""
    at: float = field(default_factory=time.monotonic)  # when it was made (what sim.delta.DeltaDelay counts from)


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
        # Microsoft documents no lifetime for a users/delta nextLink; its own answers say skip tokens do not expire by
        # time, while the delta token lives 7 days. The simulator gives both the same default; tests lower it.
        self.skip_token_lifetime = 7 * 86400.0
        self.token_serial = 0  # every issued delta/skip token carries the next serial
        self.expired_before_serial = 0
        self.reset_before_serial = 0
        self._groups: dict[str, dict[str, Any]] = {}  # id -> {"id", "displayName", "members": {member id: type}}
        self._left_groups: dict[str, list[str]] = {}  # soft-deleted user -> the groups it rejoins when restored
        self._former_managers: dict[str, str] = {}  # user -> the manager last removed (for manager@delta @removed)
        self.group_page_size = 100

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
        # The log holds sequence n at index n - 1, so a round reads only its own changes, not the whole history.
        with self.lock:
            return [c for c in self._log[max(0, seq):] if c.object_type == object_type]

    def changes_after(self, seq: int) -> list[Change]:
        """Every change after sequence `seq`, users' and groups' alike, in order."""
        with self.lock:
            return self._log[max(0, seq):]

    def changes_up_to(self, seq: int, object_type: str = "user") -> list[Change]:
        with self.lock:
            return [c for c in self._log[: max(0, seq)] if c.object_type == object_type]

    def user_ids(self) -> list[str]:
        """The ids of the current users, sorted (no copies of the users: a 100,000-user round starts at once)."""
        with self.lock:
            return sorted(self._users)

    def peek_user(self, user_id: str) -> dict[str, Any] | None:
        """The directory's own dict of a current user, NOT a copy: read it under `lock` and never change it."""
        return self._users.get(user_id)

    def state_of(self, user_id: str) -> tuple[str, dict[str, Any] | None]:
        """("active", user) / ("soft_deleted", None) / ("gone", None), for rendering a delta entry."""
        with self.lock:
            if user_id in self._users:
                return "active", copy.deepcopy(self._users[user_id])
            if user_id in self._soft_deleted:
                return "soft_deleted", None
            return "gone", None

    # writing ---------------------------------------------------------------------------------------------------
    def _record(self, object_id: str, kind: str, properties: set[str] | frozenset[str] = frozenset(), *,
                object_type: str = "user", member_id: str = "", member_type: str = "") -> None:
        self._seq += 1
        self._log.append(Change(self._seq, object_type, object_id, kind, frozenset(properties), member_id, member_type))

    def add_user(self, user: dict[str, Any]) -> str:
        """Add a user (Graph-shaped dict; `id` is generated when absent). Returns the id."""
        return self.add_users([user])[0]

    def add_users(self, users: Iterable[dict[str, Any]], *, copy: bool = True) -> list[str]:
        """Add many users at once; with `copy=False` the dicts themselves are kept (the caller gives them up)."""
        with self.lock:
            return [self._add(user if not copy else _copied(user)) for user in users]

    def _add(self, record: dict[str, Any]) -> str:
        record.setdefault("id", str(uuid.uuid4()))
        record.setdefault("userType", "Member")
        record.setdefault("accountEnabled", True)
        unknown = set(record) - USER_PROPERTIES
        if unknown:
            raise ValueError(f"not Graph user properties: {sorted(unknown)}")
        if record["id"] in self._users or record["id"] in self._soft_deleted:
            raise ValueError(f"user {record['id']} already exists")
        self._users[record["id"]] = record
        self._record(record["id"], "upsert", set(record))
        return str(record["id"])

    def update_user(self, user_id: str, **properties: Any) -> None:
        """Change properties; a value of None clears the property (Graph then omits it).
        `manager` is the manager's user id (the relationship), None removes it."""
        unknown = set(properties) - USER_PROPERTIES
        if unknown or "id" in properties:
            raise ValueError(f"cannot set {sorted(unknown | ({'id'} & set(properties)))}")
        with self.lock:
            user = self._users[user_id]
            if "manager" in properties:
                self._set_manager(user, properties["manager"])
            for name, value in properties.items():
                if value is None:
                    user.pop(name, None)
                else:
                    user[name] = copy.deepcopy(value)
            self._record(user_id, "upsert", set(properties))

    def former_manager(self, user_id: str) -> str:
        """The manager whose relationship with `user_id` was removed last ("" when none was)."""
        with self.lock:
            return self._former_managers.get(user_id, "")

    def _set_manager(self, user: dict[str, Any], manager_id: str | None) -> None:
        if manager_id is not None and manager_id not in self._users:
            raise KeyError(f"no user {manager_id} to be the manager")
        current = user.get("manager")
        if manager_id is None and current:
            self._former_managers[user["id"]] = str(current)
        elif manager_id is not None:
            self._former_managers.pop(user["id"], None)

    def delete_user(self, user_id: str, permanent: bool = False) -> None:
        """Soft delete (restorable) or permanent delete (also of an already soft-deleted user)."""
        with self.lock:
            if permanent:
                if self._users.pop(user_id, None) is None and self._soft_deleted.pop(user_id, None) is None:
                    raise KeyError(user_id)
                self._record(user_id, "hard_delete")
                self._leave_groups(user_id)
                self._left_groups.pop(user_id, None)
                return
            user = self._users.pop(user_id)
            user["deletedDateTime"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            self._soft_deleted[user_id] = user
            self._record(user_id, "soft_delete")
            self._left_groups[user_id] = self._leave_groups(user_id)

    def restore_user(self, user_id: str) -> None:
        with self.lock:
            user = self._soft_deleted.pop(user_id)
            user.pop("deletedDateTime", None)
            self._users[user_id] = user
            self._record(user_id, "upsert", set(user))
            for group_id in self._left_groups.pop(user_id, []):
                if group_id in self._groups:
                    self.add_member(group_id, user_id)

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

    # groups ----------------------------------------------------------------------------------------------------
    @property
    def groups(self) -> list[dict[str, Any]]:
        """Copies of the current groups: {"id", "displayName", "members": {member id: "user" | "group"}}."""
        with self.lock:
            return [copy.deepcopy(group) for group in self._groups.values()]

    def get_group(self, group_id: str) -> dict[str, Any] | None:
        with self.lock:
            group = self._groups.get(group_id)
            return copy.deepcopy(group) if group is not None else None

    def add_group(self, display_name: str, *, group_id: str | None = None, **properties: Any) -> str:
        """A group; without properties a security group without mail (what membership scoping uses)."""
        group_id = group_id or str(uuid.uuid4())
        unknown = set(properties) - GROUP_SETTABLE
        if unknown:
            raise ValueError(f"not Graph group properties: {sorted(unknown)}")
        with self.lock:
            if group_id in self._groups or group_id in self._users:
                raise ValueError(f"object {group_id} already exists")
            group = {"id": group_id, "displayName": display_name, "mailEnabled": False, "securityEnabled": True,
                     "groupTypes": [], **copy.deepcopy(properties), "members": {}}
            self._groups[group_id] = group
            self._record(group_id, "upsert", {"displayName", *properties}, object_type="group")
        return group_id

    def update_group(self, group_id: str, **properties: Any) -> None:
        """Change group properties; None clears one. `hideFromAddressLists` is kept by Exchange, not the directory:
        its change is in the log but no groups/delta `$select` can name it, so delta rounds do not report it."""
        unknown = set(properties) - GROUP_SETTABLE
        if unknown:
            raise ValueError(f"cannot set {sorted(unknown)} on a group")
        with self.lock:
            group = self._groups[group_id]
            for name, value in properties.items():
                if value is None:
                    group.pop(name, None)
                else:
                    group[name] = copy.deepcopy(value)
            self._record(group_id, "upsert", set(properties), object_type="group")

    def rename_group(self, group_id: str, display_name: str) -> None:
        with self.lock:
            self._groups[group_id]["displayName"] = display_name
            self._record(group_id, "upsert", {"displayName"}, object_type="group")

    def add_member(self, group_id: str, member_id: str) -> None:
        """Add a user or a group (nesting) as a direct member; adding a present member changes nothing."""
        with self.lock:
            group = self._groups[group_id]
            if member_id in self._users:
                member_type = "user"
            elif member_id in self._groups:
                if member_id == group_id:
                    raise ValueError("a group cannot be a member of itself")
                member_type = "group"
            else:
                raise KeyError(f"no user or group {member_id}")
            if member_id in group["members"]:
                return
            group["members"][member_id] = member_type
            self._record(group_id, "member_add", object_type="group", member_id=member_id, member_type=member_type)

    def remove_member(self, group_id: str, member_id: str) -> None:
        with self.lock:
            member_type = self._groups[group_id]["members"].pop(member_id)
            self._record(group_id, "member_remove", object_type="group", member_id=member_id, member_type=member_type)

    def delete_group(self, group_id: str, permanent: bool = True) -> None:
        """Delete a group (security groups are deleted permanently; `permanent=False` reports reason "changed").
        It also leaves every group it was nested in."""
        with self.lock:
            del self._groups[group_id]
            self._record(group_id, "hard_delete" if permanent else "soft_delete", object_type="group")
            self._leave_groups(group_id)

    def group_members(self, group_id: str) -> list[tuple[str, str]]:
        """Direct members as (type, id), in the order they joined."""
        with self.lock:
            return [(kind, member) for member, kind in self._groups[group_id]["members"].items()]

    def transitive_members(self, group_id: str) -> list[tuple[str, str]]:
        """Every member reached through nesting, each once, as (type, id); cycles are followed once."""
        with self.lock:
            seen: dict[str, str] = {}
            pending = [group_id]
            visited = {group_id}
            while pending:
                current = self._groups.get(pending.pop())
                if current is None:
                    continue
                for member, kind in current["members"].items():
                    if member != group_id:
                        seen.setdefault(member, kind)
                    if kind == "group" and member not in visited:
                        visited.add(member)
                        pending.append(member)
            return [(kind, member) for member, kind in seen.items()]

    def group_state(self, group_id: str) -> str:
        """"active" or "gone" (deleted or never existed), for rendering a groups/delta entry."""
        with self.lock:
            return "active" if group_id in self._groups else "gone"

    def _leave_groups(self, member_id: str) -> list[str]:
        left = [gid for gid, group in self._groups.items() if member_id in group["members"]]
        for group_id in left:
            self.remove_member(group_id, member_id)
        return left
