"""The membership graph of a pair's tracked groups (pure): direct members per group, nested groups followed.

Graph's `groups/delta` reports direct members only, so the graph keeps each tracked group's direct users and direct
member groups; a user's scope groups are the pair's include/exclude groups that reach the user through any chain of
nesting. Cycles are followed once.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

USER_TYPE = "#microsoft.graph.user"
GROUP_TYPE = "#microsoft.graph.group"

@dataclass
class GroupDelta:
    """One group's merged `members@delta` of a round: member id → "user" | "group", last occurrence winning."""

    group_id: str
    deleted: bool = False
    display_name: str | None = None
    added: dict[str, str] = field(default_factory=dict)
    removed: dict[str, str] = field(default_factory=dict)

    def add_member_entry(self, entry: Mapping[str, Any]) -> None:
        kind = member_kind(entry)
        if kind is None:
            return  # contacts, devices, service principals: never synced
        member_id = str(entry["id"]).lower()
        if entry.get("@removed") is not None:
            self.added.pop(member_id, None)
            self.removed[member_id] = kind
        else:
            self.removed.pop(member_id, None)
            self.added[member_id] = kind


@dataclass
class GroupsDeltaRound:
    groups: dict[str, GroupDelta] = field(default_factory=dict)
    delta_link: str = ""
    full: bool = False


@dataclass
class Transitive:
    """A group's flat nested membership; `found` is False when the group does not exist (404)."""

    users: set[str] = field(default_factory=set)
    groups: set[str] = field(default_factory=set)
    found: bool = True


def member_kind(entry: Mapping[str, Any]) -> str | None:
    odata_type = str(entry.get("@odata.type") or "")
    if "id" not in entry:
        return None
    if odata_type == USER_TYPE:
        return "user"
    if odata_type == GROUP_TYPE:
        return "group"
    return None


Memberships = dict[str, frozenset[str]]
"""user id → the pair's scope groups (include or exclude) the user is a member of, directly or nested."""


@dataclass
class GroupNode:
    users: set[str] = field(default_factory=set)
    groups: set[str] = field(default_factory=set)
    name: str = ""


@dataclass
class GroupGraph:
    nodes: dict[str, GroupNode] = field(default_factory=dict)

    def copy(self) -> GroupGraph:
        return GroupGraph({gid: GroupNode(set(n.users), set(n.groups), n.name) for gid, n in self.nodes.items()})

    def apply(self, delta: GroupDelta) -> bool:
        """Fold one group's changes in; True when its membership (or name) changed."""
        if delta.deleted:
            node = self.nodes.get(delta.group_id)
            self.nodes[delta.group_id] = GroupNode()  # a deleted group has no members; it stays known (and tracked)
            return node is None or bool(node.users or node.groups)
        node = self.nodes.setdefault(delta.group_id, GroupNode())
        before = (len(node.users), len(node.groups), node.name)
        changed = False
        for member, kind in delta.added.items():
            target = node.users if kind == "user" else node.groups
            changed |= member not in target
            target.add(member)
        for member, kind in delta.removed.items():
            target = node.users if kind == "user" else node.groups
            changed |= member in target
            target.discard(member)
        if delta.display_name is not None:
            node.name = delta.display_name
        return changed or before != (len(node.users), len(node.groups), node.name)

    def reachable(self, roots: Iterable[str]) -> set[str]:
        """The roots and every group nested in them, at any depth (known or not yet read)."""
        seen: set[str] = set()
        pending = list(roots)
        while pending:
            group_id = pending.pop()
            if group_id in seen:
                continue
            seen.add(group_id)
            node = self.nodes.get(group_id)
            if node is not None:
                pending.extend(node.groups - seen)
        return seen

    def users_of(self, group_id: str) -> set[str]:
        users: set[str] = set()
        for nested in self.reachable([group_id]):
            node = self.nodes.get(nested)
            if node is not None:
                users |= node.users
        return users

    def memberships(self, roots: Iterable[str]) -> Memberships:
        scope: dict[str, set[str]] = {}
        for root in roots:
            for user in self.users_of(root):
                scope.setdefault(user, set()).add(root)
        return {user: frozenset(groups) for user, groups in scope.items()}

    def prune(self, roots: Iterable[str]) -> set[str]:
        """Forget groups no root reaches any more; returns their ids."""
        keep = self.reachable(roots)
        dropped = set(self.nodes) - keep
        for group_id in dropped:
            del self.nodes[group_id]
        return dropped


def changed_users(before: Mapping[str, frozenset[str]], after: Mapping[str, frozenset[str]]) -> set[str]:
    """Users whose scope groups differ between two membership maps."""
    empty: frozenset[str] = frozenset()
    return {user for user in set(before) | set(after) if before.get(user, empty) != after.get(user, empty)}


def scope_groups(include: Iterable[str], exclude: Iterable[str]) -> tuple[str, ...]:
    """The pair's include and exclude groups, lower-cased (Graph's ids are), in a stable order."""
    return tuple(sorted({g.lower() for g in (*include, *exclude)}))
