"""What the engine needs from a source tenant: a round of user changes, page by page.

The Graph implementation lives in `sync.graph.users`; tests may use any object with the same shape.
"""

from __future__ import annotations

import contextlib
from collections.abc import Generator, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from sync.contract.pairs import TenantPair, template_fields
from sync.contract.userattrs import BASE_SELECT

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


@dataclass
class DeltaPage:
    """One page of a delta round as the source sent it: its objects, and the link that follows it, a nextLink (more
    pages) or the round's deltaLink (the last page)."""

    objects: list[Mapping[str, Any]] = field(default_factory=list)
    next_link: str | None = None
    delta_link: str | None = None
    requests: int = 0  # HTTP attempts this page took, retries included

    @property
    def last(self) -> bool:
        return self.delta_link is not None

    def as_round(self, *, full: bool) -> DeltaRound:
        """The page's objects net of duplicates (last occurrence wins), as a round of its own."""
        folded = DeltaRound(full=full, requests=self.requests, delta_link=self.delta_link)
        folded.add_page(self.objects)
        return folded


class Source(Protocol):
    """Reads a source tenant's users."""

    def read_pages(self, link: str | None, select: tuple[str, ...]) -> Generator[DeltaPage, None, None]:
        """The pages of a round, one at a time, from `link`: a deltaLink (the changes since), a nextLink (the rest of
        a round begun earlier: a checkpoint), or None (every user: a full round). The last page carries the
        deltaLink. A source may read the next page while the caller works on this one; close the iterator to stop.

        Raises (when the page is taken) `DeltaTokenExpired` when the link is no longer valid, `SourceThrottled` or
        `SourceError` when the tenant cannot be read.
        """
        ...

    def find_user(self, key: str, select: tuple[str, ...]) -> SourceUser | None:
        """One user by object id, UPN or mail, or None (for `explain`)."""
        ...


def read_whole_round(source: Source, link: str | None, select: tuple[str, ...]) -> DeltaRound:
    """Every page of a round folded into one `DeltaRound` (a dry run, `explain`): the whole round in memory."""
    folded = DeltaRound(full=link is None)
    with contextlib.closing(source.read_pages(link, select)) as pages:
        for page in pages:
            folded.add_page(page.objects)
            folded.requests += page.requests
            if page.delta_link is not None:
                folded.delta_link = page.delta_link
    return folded


def source_select(pair: TenantPair) -> tuple[str, ...]:
    """Exactly the user properties mapping and scope read: the base set plus what templates name."""
    names = list(BASE_SELECT)
    wanted = [name for template in (pair.contact.display_name, *pair.contact.attributes.values())
              for name in template_fields(template)]
    wanted += [clause.attribute for group in pair.scope.filter_groups for clause in group]
    for name in wanted:
        top = name.split(".", 1)[0]
        if top != "source" and top not in names:
            names.append(top)
    return tuple(names)
