"""An in-memory source tenant behind the `Source` protocol: a user list plus a change log.

Links are `mem:<sequence>`; a full round returns every user, later rounds the net changes since the link. A round is
fixed when it starts (`read_round`) and handed out in pages of `page_size` objects (all in one page by default);
nextLinks are `mem-page:<round>:<page>`. `expire_pages()` makes every nextLink issued so far expired, as Graph's
syncStateNotFound; `expire_at_page(n)` makes the next request for page n (of any round) fail that way, once;
`pages_read` counts the pages handed out.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Generator
from typing import Any

from sync.core.source import DeltaPage, DeltaRound
from sync.errors import DeltaTokenExpired


class MemorySource:
    def __init__(self, users: list[dict[str, Any]] | None = None, *, page_size: int | None = None) -> None:
        self.users: dict[str, dict[str, Any]] = {}
        self.log: list[tuple[int, str, dict[str, Any] | None, str]] = []  # (seq, id, user or None, removal reason)
        self.seq = 0
        self.reads = 0
        self.expired = False
        self.page_size = page_size
        self.pages_read = 0
        self._rounds: dict[int, tuple[list[dict[str, Any]], str]] = {}  # round -> (objects, deltaLink)
        self._expire_at: int | None = None
        self._round_ids = itertools.count(1)
        for user in users or []:
            self.add(user)

    def add(self, user: dict[str, Any]) -> None:
        self.users[user["id"]] = dict(user)
        self._log(user["id"], self.users[user["id"]])

    def update(self, user_id: str, **changes: Any) -> None:
        self.users[user_id].update(changes)
        self._log(user_id, self.users[user_id])

    def remove(self, user_id: str, reason: str = "deleted") -> None:
        del self.users[user_id]
        self._log(user_id, None, reason)

    def _log(self, user_id: str, user: dict[str, Any] | None, reason: str = "") -> None:
        self.seq += 1
        self.log.append((self.seq, user_id, copy.deepcopy(user), reason))

    def find_user(self, key: str, select: tuple[str, ...]) -> dict[str, Any] | None:
        wanted = key.lower()
        for user in self.users.values():
            if wanted in (str(user["id"]).lower(), str(user.get("userPrincipalName", "")).lower(),
                          str(user.get("mail", "")).lower()):
                return {k: v for k, v in user.items() if k in select}
        return None

    def read_round(self, delta_link: str | None, select: tuple[str, ...]) -> DeltaRound:
        self.reads += 1
        round_ = DeltaRound(delta_link=f"mem:{self.seq}", full=delta_link is None, requests=1)
        if delta_link is None:
            for user in self.users.values():
                round_.add_user({k: v for k, v in user.items() if k in select})
            return round_
        if self.expired:
            raise DeltaTokenExpired("the delta token is no longer valid (HTTP 400 syncStateNotFound)")
        since = int(delta_link.removeprefix("mem:"))
        for seq, user_id, user, reason in self.log:
            if seq <= since:
                continue
            if user is None:
                round_.add_removal(user_id, reason)
            else:
                round_.add_user({k: v for k, v in user.items() if k in select})
        return round_

    def read_pages(self, link: str | None, select: tuple[str, ...]) -> Generator[DeltaPage, None, None]:
        if link is not None and link.startswith("mem-page:"):
            _, round_text, page_text = link.split(":")
            round_id, page = int(round_text), int(page_text)
            if round_id not in self._rounds:
                raise DeltaTokenExpired("the delta token is no longer valid (HTTP 400 syncStateNotFound)")
        else:
            folded = self.read_round(link, select)  # the round is fixed when it starts, as Graph's
            objects = [*folded.users.values(), *({"id": uid, "@removed": {"reason": why}} for uid, why in folded.removed.items())]
            round_id, page = next(self._round_ids), 0
            self._rounds[round_id] = (objects, folded.delta_link or "")
        objects, delta_link = self._rounds[round_id]
        size = self.page_size or max(1, len(objects))
        pages = max(1, -(-len(objects) // size))
        while page < pages:
            if page == self._expire_at:
                self._expire_at = None
                self._rounds.pop(round_id, None)
                raise DeltaTokenExpired("the delta token is no longer valid (HTTP 400 syncStateNotFound)")
            self.pages_read += 1
            last = page == pages - 1
            yield DeltaPage(objects[page * size : (page + 1) * size], next_link=None if last else f"mem-page:{round_id}:{page + 1}",
                            delta_link=delta_link if last else None, requests=1)
            page += 1

    def expire_at_page(self, page: int) -> None:
        self._expire_at = page

    def expire_pages(self) -> None:
        """Every nextLink handed out so far answers as an expired token."""
        self._rounds.clear()
