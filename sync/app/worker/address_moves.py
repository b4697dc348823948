"""Address moves between ctcs's own contacts: an address another of this pair's contacts still holds is freed when
that contact's user no longer has it, so swaps and chains complete in the run that sees them.

    A: a → b, B: b → a (a swap)      A's Set-MailContact is refused: B holds b. B's user now has a, not b, so B is
                                      parked on a temporary address (under B's row's claim) and A takes b; B's own op
                                      then takes a. A chain (A → b, B → c, C → d) unwinds the same way, whatever order
                                      the ops arrive in. A hidden contact of a leaver that holds a new hire's address
                                      is parked the same way (its user is gone, or has another address).

The holder's user is read from the source (one Graph request, only when such a refusal happens). A holder whose user
still has the address is a true conflict (two users with one address) and is left alone; so is any holder that does
not carry this pair's anchor (invariant 1).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime

from sync.contract.pairs import TenantPair
from sync.contract.vocabulary import ObjectKind
from sync.core.scope import decide_scope
from sync.core.source import Source, source_select
from sync.core.target import Recipient, Target
from sync.errors import RowBusy, TargetNotFound
from sync.state.contacts import ClaimLost, ContactStateStore
from sync.state.entities import now_utc

log = logging.getLogger("ctcs.worker")

MOVING_DOMAIN = "moving.ctcs.invalid"  # RFC 2606: never routable, so a parked contact can receive nothing by mistake
CLAIM_SECONDS = 120

SourceOpener = Callable[[TenantPair], Source]


def temporary_address(holder: Recipient) -> str:
    return f"{holder.name.lower()}@{MOVING_DOMAIN}"


def free_address(
    pair: TenantPair, target: Target, contacts: ContactStateStore, address: str, *, version: int,
    open_source: SourceOpener | None, holders: list[Recipient] | None = None,
) -> bool:
    """Park this pair's own contacts that hold `address` when their users no longer have it. True when the address
    is free now (the caller tries again); False when a holder is not ours or its user still has the address.
    `RowBusy` when a holder's own op is being applied right now (the caller's op waits a moment, then finds it moved)."""
    if open_source is None:
        return False
    attribute = pair.contact.anchor_attribute
    if holders is None:
        holders = target.find_recipients(anchor_attribute=attribute, anchor="", address=address, name="")
    holding = [r for r in holders if address.lower() in {a.lower() for a in (*r.addresses, r.primary_address)}]
    if not holding:
        return True  # the holder moved away since Exchange refused the address: try again
    if not all(r.anchor(attribute).startswith(pair.anchor_prefix) for r in holding):
        return False
    source_ids = [holder.anchor(attribute)[len(pair.anchor_prefix):] for holder in holding]
    if any(contacts.get(pair.id, source_id).kind is not ObjectKind.USER for source_id in source_ids):
        return False  # a group's contact (issue 15): its address is the group's, never parked by a user's op
    source = open_source(pair)
    for source_id in source_ids:
        if _still_has(pair, source, source_id, address):
            return False
    for holder in holding:
        _park(pair, target, contacts, holder, address, version=version)
    return True


def _still_has(pair: TenantPair, source: Source, source_id: str, address: str) -> bool:
    user = source.find_user(source_id, source_select(pair))
    if user is None:
        return False
    decision = decide_scope(pair, user)
    current = decision.address if decision.in_scope else str(user.get("mail") or "")
    return current.lower() == address.lower()


def _park(pair: TenantPair, target: Target, contacts: ContactStateStore, holder: Recipient, address: str, *,
          version: int) -> None:
    source_id = holder.anchor(pair.contact.anchor_attribute)[len(pair.anchor_prefix):]
    row = contacts.get(pair.id, source_id)
    if row.claim_version and row.claim_until and datetime.fromisoformat(row.claim_until) > now_utc():
        # Any op holds it, even one of this very plan (same version): it is moving it; wait, then look again.
        raise RowBusy(f"the contact holding the address ({holder.name}) is being changed by its own op", retry_after=2)
    try:
        # A claim no op can mistake for its own: ops of one plan share a version.
        row = contacts.claim(row, -version, CLAIM_SECONDS)
    except ClaimLost:
        raise RowBusy("the state row of the contact holding the address changed; trying again", retry_after=1) from None
    temporary = temporary_address(holder)
    try:
        # Under the holder's claim its own op cannot move it; it may have moved just before: look again.
        again = target.find_recipients(anchor_attribute=pair.contact.anchor_attribute, anchor="", address=address,
                                       name="")
        if not any(r.guid.lower() == holder.guid.lower() for r in again):
            contacts.release(row)
            return
        target.update(holder.guid, {"ExternalEmailAddress": temporary})
    except TargetNotFound:
        pass  # gone meanwhile: the address is free
    except BaseException:
        contacts.release(row)
        raise
    # Its own op (or the next plan) sees the temporary address as applied and sends the real one.
    if not contacts.park_holder(row, guid=holder.guid, temporary_address=temporary):
        contacts.release(row)
    log.info("pair %s: contact %s gave up its address for another of the pair's contacts (parked on %s)",
             pair.id, holder.name, temporary)
