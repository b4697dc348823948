"""`python -m sync handback`: an admin gives a released contact back to ctcs.

A contact whose anchor an admin cleared is released (sync.state.ownership): no round, reconcile or worker writes it
again, whatever happens to ContactState or the pair. Handing it back is the one way out: its mark is removed, this
pair's anchor is written on the contact (only when its anchor attribute is empty: a value another tool put there
is never overwritten), the user's row becomes a tombstone and the pair's next round is a full one, whose create
finds the contact by its anchor and sets every value from the source. A contact that is gone meanwhile is simply made again by that round.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from sync.app.wiring.runtime import Runtime
from sync.contract.pairs import TenantPair
from sync.contract.vocabulary import ContactStatus
from sync.errors import ConfigError
from sync.state.contacts import Correction
from sync.state.entities import iso, now_utc
from sync.state.ownership import Mark, MarkKind

log = logging.getLogger("ctcs.admin")


@dataclass(frozen=True)
class HandedBack:
    source_id: str
    guid: str  # the contact handed back ("" when it is gone: the next round makes it again)
    name: str
    anchor_written: bool


def released_mark(rt: Runtime, pair: TenantPair, who: str) -> Mark:
    """The released mark named by source object id or by the contact's address; `ConfigError` when none is."""
    wanted = who.strip().lower().removeprefix("smtp:")
    for source_id, mark in rt.stores.ownership.marks(pair).items():
        named = wanted in (source_id.lower(), mark.address.lower().removeprefix("smtp:"))
        if named and mark.kind is MarkKind.RELEASED:
            return mark
    for row in rt.stores.contacts.rows(pair.id, status=ContactStatus.RELEASED.value):  # released before marks existed
        address = str(row.applied.get("ExternalEmailAddress") or "").lower().removeprefix("smtp:")
        if wanted in (row.source_id.lower(), address):
            return Mark(row.source_id, MarkKind.RELEASED, pair.id, row.guid, str(row.applied.get("Name") or ""),
                        address, row.last_error)
    raise ConfigError(f"pair {pair.id}: no contact is released for {who!r} (give the source object id or the "
                      "contact's address; python -m sync status --pair ID lists the released ones)")


def hand_back(rt: Runtime, pair_id: str, who: str) -> HandedBack:
    """Give the released contact of `who` (a source object id or the contact's address) back to the pair."""
    pair = rt.stores.pairs.get(pair_id)
    mark = released_mark(rt, pair, who)
    attribute, anchor = pair.contact.anchor_attribute, pair.anchor(mark.source_id)
    target = rt.target(pair)
    contact = target.recipients_by_guid(attribute, [mark.guid]).get(mark.guid.lower()) if mark.guid else None
    written = False
    if contact is not None:
        held = contact.anchor(attribute)
        if held and held != anchor:
            raise ConfigError(f"pair {pair.id}: contact {contact.name!r} holds another value in {attribute}; "
                              "clear it in the target first, then hand the contact back")
        if not held:
            target.update(contact.guid, {attribute: anchor})  # the one write: our anchor on an empty attribute
            written = True
    rt.stores.ownership.forget(pair, mark.source_id)
    row = rt.stores.contacts.get(pair.id, mark.source_id)
    if row.etag is not None:
        rt.stores.contacts.correct(row, Correction.handed_back(at=iso(now_utc())))
    rt.stores.pair_state.request_full_round(pair.id)  # an unchanged user is planned again only by a full round
    log.warning("pair %s: released contact of %s handed back", pair.id, mark.source_id,
                extra={"pair_id": pair.id, "source_id": mark.source_id, "outcome": "handed_back"})
    return HandedBack(mark.source_id, contact.guid if contact else "", contact.name if contact else mark.name, written)
