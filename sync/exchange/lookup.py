"""Batched recipient lookups: many anchors, addresses, names or Guids checked with one `Get-Recipient`.

    lookup = RecipientLookup(api, anchor_attribute="CustomAttribute15")
    found = lookup.find_many([LookupKey(anchor=a, address=x, name=n), LookupKey(guid=g), ...])
    found[key]            # every recipient that carries the key's anchor, holds its address, bears its name or Guid

    coalescer = LookupCoalescer(lookup.find_many, hold=pacer.slot)
    coalescer.find(key)   # called from many threads at once: the calls that meet share one Get-Recipient

One OR filter holds at most `MAX_KEYS` keys (three values each: about 50 values) and `MAX_FILTER_CHARS`
characters, every value escaped (`sync.exchange.opath`); more keys take more calls. The answer is matched back to
each key here, with the rules Exchange applies to the filter (case-insensitive values, any proxy address), so a key
never sees a recipient that another key's clause brought in.

The creates of a first load use it (`ExchangeTarget.find_recipients`: a batch of queued creates costs one lookup,
not one each); an ownership check before every write can use `find_many` with Guids and anchors the same way.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any

from sync.core.target import Recipient
from sync.exchange import opath
from sync.exchange.client import AdminApiClient

CUSTOM_ATTRIBUTES = tuple(f"CustomAttribute{n}" for n in range(1, 16))
RECIPIENT_PROPERTIES = ("Guid", "Name", "RecipientTypeDetails", "PrimarySmtpAddress", "EmailAddresses",
                        *CUSTOM_ATTRIBUTES)
MAX_KEYS = 16  # keys per Get-Recipient: with an anchor, an address and a name each, 48 values
MAX_FILTER_CHARS = 4000  # Exchange publishes no limit; the reference says a few thousand characters
GATHER_SECONDS = 0.1  # the longest a look-up waits for others to join it before it queues for its call slot
IDLE_SECONDS = 0.02  # ... and it stops waiting once no other joined for this long


@dataclass(frozen=True)
class LookupKey:
    """What one caller looks for; empty values are left out of the filter."""

    anchor: str = ""
    address: str = ""
    name: str = ""
    guid: str = ""

    def clauses(self, anchor_attribute: str) -> list[str]:
        clauses = []
        if self.anchor:
            clauses.append(opath.eq(anchor_attribute, self.anchor))
        if self.address:
            clauses.append(opath.eq("EmailAddresses", f"smtp:{self.address}"))
        if self.name:
            clauses.append(opath.eq("Name", self.name))
        if self.guid:
            clauses.append(opath.eq("Guid", self.guid))
        return clauses

    def matches(self, recipient: Recipient, anchor_attribute: str) -> bool:
        return bool(
            (self.anchor and recipient.anchor(anchor_attribute).lower() == self.anchor.lower())
            or (self.address and self.address.lower() in {a.lower() for a in recipient.addresses})
            or (self.name and recipient.name.lower() == self.name.lower())
            or (self.guid and recipient.guid.lower() == self.guid.lower())
        )


class RecipientLookup:
    """`find_many` over one organisation's admin API, for one anchor attribute."""

    def __init__(self, api: AdminApiClient, *, anchor_attribute: str, max_keys: int = MAX_KEYS) -> None:
        self.api = api
        self.anchor_attribute = opath.property_name(anchor_attribute)
        self.max_keys = max(1, max_keys)

    def find_many(self, keys: Iterable[LookupKey]) -> dict[LookupKey, list[Recipient]]:
        wanted = list(dict.fromkeys(key for key in keys if key.clauses(self.anchor_attribute)))
        found: dict[LookupKey, list[Recipient]] = {key: [] for key in wanted}
        for chunk in self.chunks(wanted):
            clauses = [clause for key in chunk for clause in key.clauses(self.anchor_attribute)]
            rows = self.api.invoke("Get-Recipient", {"Filter": opath.any_of(*clauses), "ResultSize": "Unlimited"},
                                   select=RECIPIENT_PROPERTIES)
            recipients = [recipient_of(row) for row in rows]
            for key in chunk:
                found[key] = [r for r in recipients if key.matches(r, self.anchor_attribute)]
        return found

    def chunks(self, keys: Sequence[LookupKey]) -> list[list[LookupKey]]:
        """Keys grouped so that each filter stays within MAX_KEYS keys and MAX_FILTER_CHARS characters."""
        chunks: list[list[LookupKey]] = []
        current: list[LookupKey] = []
        length = 0
        for key in keys:
            size = sum(len(clause) + 7 for clause in key.clauses(self.anchor_attribute))  # "(...) -or "
            if current and (len(current) >= self.max_keys or length + size > MAX_FILTER_CHARS):
                chunks.append(current)
                current, length = [], 0
            current.append(key)
            length += size
        if current:
            chunks.append(current)
        return chunks


def recipient_of(row: Mapping[str, Any], *, default_type: str = "") -> Recipient:
    """A Get-Recipient / Get-MailContact row as a `Recipient`."""
    attributes = {name: str(row[name]) for name in CUSTOM_ATTRIBUTES if isinstance(row.get(name), str) and row.get(name)}
    raw = row.get("EmailAddresses")
    addresses = tuple(_strip_prefix(str(a)) for a in raw) if isinstance(raw, list) else ()
    return Recipient(
        guid=str(row.get("Guid") or ""),
        name=str(row.get("Name") or ""),
        recipient_type=str(row.get("RecipientTypeDetails") or default_type),
        primary_address=_strip_prefix(str(row.get("PrimarySmtpAddress") or row.get("ExternalEmailAddress") or "")),
        custom_attributes=attributes,
        addresses=addresses,
    )


def _strip_prefix(address: str) -> str:
    return address.split(":", 1)[1] if address[:5].lower() == "smtp:" else address


@dataclass
class _Batch:
    keys: list[LookupKey] = field(default_factory=list)
    closed: bool = False
    joined: threading.Event = field(default_factory=threading.Event)  # set when a key joins (or the batch fills)
    done: threading.Event = field(default_factory=threading.Event)
    found: dict[LookupKey, list[Recipient]] = field(default_factory=dict)
    error: BaseException | None = None


class LookupCoalescer:
    """Lets concurrent callers share one `find_many` call. The first caller of a batch waits briefly for others
    (until `max_keys` joined, nobody joined for `idle_seconds`, or `gather_seconds` passed), then waits for a call
    slot (`hold`, the organisation's pacer) while more keep joining, and only then looks all of them up at once.
    So the busier Exchange is, the more creates share one look-up; an error reaches every caller of that batch."""

    def __init__(
        self, find_many: Callable[[list[LookupKey]], Mapping[LookupKey, list[Recipient]]], *, max_keys: int = MAX_KEYS,
        gather_seconds: float = GATHER_SECONDS, idle_seconds: float = IDLE_SECONDS,
        hold: Callable[[], AbstractContextManager[object]] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._find_many = find_many
        self._hold = hold or contextlib.nullcontext
        self.max_keys = max(1, max_keys)
        self.gather_seconds = gather_seconds
        self.idle_seconds = idle_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._open: _Batch | None = None
        self.lookups = 0  # find_many calls made, for tests and reports

    def find(self, key: LookupKey) -> list[Recipient]:
        with self._lock:
            batch = self._open
            leader = batch is None
            if batch is None:
                batch = self._open = _Batch()
            batch.keys.append(key)
            if len(batch.keys) >= self.max_keys:
                self._close(batch)
            batch.joined.set()
        if leader:
            self._gather(batch)
            with self._hold():  # more keys join while the slot is busy elsewhere
                with self._lock:
                    self._close(batch)
                self._run(batch)
        else:
            batch.done.wait()
        if batch.error is not None:
            raise batch.error
        return list(batch.found.get(key, []))

    def _gather(self, batch: _Batch) -> None:
        deadline = self._clock() + self.gather_seconds
        while True:
            with self._lock:
                if batch.closed:
                    return
                batch.joined.clear()
            left = deadline - self._clock()
            if left <= 0 or not batch.joined.wait(min(self.idle_seconds, left)):
                return

    def _close(self, batch: _Batch) -> None:
        batch.closed = True
        if self._open is batch:
            self._open = None

    def _run(self, batch: _Batch) -> None:
        try:
            with self._lock:
                self.lookups += 1
            batch.found = dict(self._find_many(list(batch.keys)))
        except BaseException as error:
            batch.error = error
        finally:
            batch.done.set()
