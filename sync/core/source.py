"""What the engine needs from a source tenant: one round of user changes.

The Graph implementation lives in `sync.graph.users`; tests may use any object with the same shape.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

SourceUser = Mapping[str, Any]
"""A user as Graph returns it: property name → value (`id` always present)."""

RELATIONSHIP_ANNOTATIONS = ("manager@delta",)


@dataclass
class DeltaRound:
    """The net changes of one delta round, last occurrence of each object winning.

    `full` is true when the round started without a deltaLink (first run, `--full`, or an expired token):
    then `users` holds every user that exists, and anything the state table knows but the round did not
    show has gone.
    """

    users: dict[str, SourceUser] = field(default_factory=dict)
    removed: dict[str, str] = field(default_factory=dict)
    delta_link: str | None = None
    full: bool = False
    requests: int = 0

    def add_user(self, user: SourceUser) -> None:
        user_id = str(user["id"])
        self.removed.pop(user_id, None)
        previous = self.users.get(user_id)
        # A relationship annotation comes only with the occurrence that reports the change: a later occurrence
        # of the same user without it does not undo it.
        carried = {name: previous[name] for name in RELATIONSHIP_ANNOTATIONS
                   if previous is not None and name in previous and name not in user}
        self.users[user_id] = {**user, **carried} if carried else user

    def add_removal(self, user_id: str, reason: str) -> None:
        self.users.pop(user_id, None)
        self.removed[user_id] = reason

    def add_page(self, objects: Iterable[Mapping[str, Any]]) -> None:
        """Fold one page of `users/delta` objects in: `@removed` entries become removals."""
        for obj in objects:
            removed = obj.get("@removed")
            if removed is not None:
                reason = removed.get("reason", "deleted") if isinstance(removed, Mapping) else "deleted"
                self.add_removal(str(obj["id"]), str(reason))
            else:
                self.add_user(obj)


class Source(Protocol):
    """Reads a source tenant's users."""

    def read_round(self, delta_link: str | None, select: tuple[str, ...]) -> DeltaRound:
        """Every change since `delta_link`, or every user when it is None.

        Raises `DeltaTokenExpired` when the link is no longer valid (the caller then starts a full round),
        `SourceThrottled` or `SourceError` when the tenant cannot be read.
        """
        ...

    def find_user(self, key: str, select: tuple[str, ...]) -> SourceUser | None:
        """One user by object id, UPN or mail, or None (for `explain`)."""
        ...
