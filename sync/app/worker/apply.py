"""Apply one contact op to the target: idempotent, order-safe by version (invariant 3), and only ever on our own
contacts (invariant 1).

Outcomes that need no retry (applied, stale, conflict, rejected) are returned; errors worth retrying
(`TargetTransient`, `TargetThrottled`, `RowBusy`, `ManagerNotFound`) and `CreationQuotaReached` (creates wait for
the target's creation quota, `sync.app.worker.quota_gate`) are raised for the queue to defer or redeliver the op. An op
that raises gives up its claim on the user's row first, so a newer op of that user never waits for it.

A partial update (a manager link, see sync.core.managers) is merged into the contact as applied and the state row keeps
the hash of the merged contact, so the next plan sees it unchanged. It does not advance the row's version: it is a
fix-up on top of whatever full op was applied, never a newer desired state, so an older full op still queued is
not dropped as stale because of it (that op may unset the link again; the next plan's fix-up restores it).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum
from typing import Any

from sync.app.worker.address_moves import SourceOpener, free_address
from sync.app.worker.quota_gate import QuotaGate
from sync.contract.ops import ContactOp, OpKind
from sync.contract.pairs import TenantPair
from sync.contract.vocabulary import ContactStatus
from sync.core.mapping import contact_hash
from sync.core.target import Recipient, Target
from sync.errors import AddressInUse, CreationQuotaReached, RowBusy, TargetNotFound, TargetRejected
from sync.state.contacts import ClaimLost, ContactRow, ContactStateStore, RowUpdate
from sync.state.entities import iso, now_utc
from sync.state.ownership import Mark, MarkKind, OwnershipStore

log = logging.getLogger("ctcs.worker")

CLAIM_SECONDS = 300
ROW_BUSY_MAX_WAIT = 15  # a claim is held while its op runs: look again within seconds, not when the claim expires
MAIL_CONTACT = "MailContact"
_HAS_CONTACT = (ContactStatus.OK, ContactStatus.FAILED, ContactStatus.HIDDEN)


class Outcome(StrEnum):
    CREATED = "created"
    ADOPTED = "adopted"  # our own contact found by anchor or by its own Name (an earlier attempt made it)
    UPDATED = "updated"
    UNCHANGED = "unchanged"
    DELETED = "deleted"
    HIDDEN = "hidden"  # staged delete: hidden from the address lists
    RESTORED = "restored"  # a hidden contact shown again
    ALREADY_GONE = "already_gone"
    STALE = "stale"  # a newer op for this user was applied already
    CONFLICT = "conflict"  # another recipient holds the address or name
    REJECTED = "rejected"  # Exchange refused a value; fixing the source data fixes it
    RELEASED = "released"  # the contact lost this pair's anchor (taken over by an admin): never written again
    DISCARDED = "discarded"  # an op of a replaced pair (another generation of its id): never applied

    @property
    def failed(self) -> bool:
        return self in (Outcome.CONFLICT, Outcome.REJECTED)


@dataclass
class Applied:
    outcome: Outcome
    guid: str = ""
    detail: str = ""
    holders: list[Recipient] = field(default_factory=list)  # a conflict: who holds the address, when looked up


def apply_op(
    op: ContactOp, *, pair: TenantPair, target: Target, contacts: ContactStateStore, quota: QuotaGate | None = None,
    open_source: SourceOpener | None = None, ownership: OwnershipStore | None = None,
) -> Applied:
    """Apply `op` unless a newer one won; record the result in ContactState. With `quota`, a create waits (raises
    `CreationQuotaReached`) while the target organisation's creation quota is spent, before it claims the row. With
    `open_source`, an address held by another of the pair's own contacts whose user gave it up is freed first
    (sync.app.worker.address_moves). With `ownership`, a create of a contact an admin took over (recorded apart
    from ContactState, sync.state.ownership) is not applied: it stays released, and what the worker learns is
    released is recorded there."""
    organization = pair.target.organization
    admitted = quota is None
    for _ in range(3):
        row = contacts.get(op.pair_id, op.source_id)
        if row.status and row.version >= op.version:
            return Applied(Outcome.STALE, row.guid, f"version {row.version} already applied")
        if row.status is ContactStatus.RELEASED:
            return Applied(Outcome.RELEASED, row.guid, row.last_error)  # not ours any more (invariant 1)
        now = now_utc()
        if row.claimed_by_other(op.version, now):
            raise RowBusy(f"another op (version {row.claim_version}) is applying to this user",
                          retry_after=_claim_left(row, now))
        if not admitted and quota is not None and _creates(op, row):
            quota.admit(organization)
            admitted = True
        try:
            row = contacts.claim(row, op.version, CLAIM_SECONDS)
        except ClaimLost:
            continue
        break
    else:
        raise RowBusy("the state row kept changing while claiming it")

    try:
        if op.partial:
            result, update = _apply_partial(op, row, pair, target)
        else:
            result = _apply_moving(op, row, pair, target, contacts, open_source, ownership)
            update = replace(_row_update(op, row, result), kind=op.object_kind)  # the row says whose contact it is
    except CreationQuotaReached as error:
        _release(contacts, row)
        raise (quota.refused(organization, error) if quota is not None else error) from error
    except BaseException:
        _release(contacts, row)  # a newer op of this user must not wait for this one's retry
        raise
    try:
        contacts.commit(row, update, op=f"{op.kind.value}:{result.outcome.value}", run_id=op.run_id)
    except ClaimLost:
        return Applied(Outcome.STALE, result.guid, "a newer op took over this user while this one ran")
    if quota is not None and result.outcome is Outcome.CREATED:
        quota.created(organization)
    if ownership is not None and result.outcome is Outcome.RELEASED:
        ownership.released(pair, op.source_id, guid=result.guid, why=result.detail,
                           name=str(row.applied.get("Name") or ""),
                           address=str(row.applied.get("ExternalEmailAddress") or ""))
    return result


def _release(contacts: ContactStateStore, row: ContactRow) -> None:
    try:
        contacts.release(row)
    except Exception as error:  # the op's own failure is the one to report; the claim expires on its own
        log.warning("could not release the claim on %s/%s: %s", row.pair_id, row.source_id, error)


def _creates(op: ContactOp, row: ContactRow) -> bool:
    """The op will make a new contact (so it waits for the creation quota): a create with no contact in place."""
    return op.kind is OpKind.CREATE and not op.partial and not (row.guid and row.status in _HAS_CONTACT)


def _claim_left(row: ContactRow, now: datetime) -> float:
    left = (datetime.fromisoformat(row.claim_until) - now).total_seconds() if row.claim_until else 0.0
    return max(1.0, min(float(ROW_BUSY_MAX_WAIT), left))


def _row_update(op: ContactOp, row: ContactRow, result: Applied) -> RowUpdate:
    """What the state row says after the op: its status, the contact as applied, and for a failure, why."""
    if result.outcome is Outcome.RELEASED:
        return RowUpdate(ContactStatus.RELEASED, op.version, row.hash, result.guid, row.applied, error=result.detail,
                         manager_id=row.manager_id, manager_set=row.manager_set)
    if result.outcome is Outcome.CONFLICT or result.outcome is Outcome.REJECTED:
        # The attempted hash (and manager) is kept, so an unchanged user is not retried on every run.
        status = ContactStatus.CONFLICT if result.outcome is Outcome.CONFLICT else ContactStatus.FAILED
        return RowUpdate(status, op.version, op.hash, result.guid, row.applied, error=result.detail,
                         manager_id=op.manager_id, manager_set=row.manager_set)
    if op.kind is OpKind.DELETE or result.outcome is Outcome.ALREADY_GONE:
        return RowUpdate(ContactStatus.DELETED, op.version, "", "", None)
    if op.kind is OpKind.HIDE:
        return RowUpdate(ContactStatus.HIDDEN, op.version, row.hash, result.guid,
                         {**row.applied, "HiddenFromAddressListsEnabled": True}, hidden_at=iso(now_utc()),
                         manager_id=row.manager_id, manager_set=row.manager_set)
    contact = op.contact or {}
    return RowUpdate(ContactStatus.OK, op.version, op.hash, result.guid, op.contact,
                     manager_id=op.manager_id, manager_set=bool(contact.get("Manager")))


def _apply_partial(op: ContactOp, row: ContactRow, pair: TenantPair, target: Target) -> tuple[Applied, RowUpdate]:
    """Merge a partial update into the applied contact: Exchange gets only what differs from it."""
    assert op.contact is not None
    unchanged = RowUpdate(row.status, row.version, row.hash, row.guid, row.applied, error=row.last_error,
                          hidden_at=row.hidden_at, manager_id=row.manager_id, manager_set=row.manager_set)
    if row.status is not ContactStatus.OK or not row.guid:
        return Applied(Outcome.STALE, row.guid, f"the contact is not in place ({row.status or 'no row'})"), unchanged
    merged = {**row.applied, **op.contact}
    if not _changes(op.contact, row.applied):
        return Applied(Outcome.UNCHANGED, row.guid), replace(unchanged, hash=contact_hash(merged), applied=merged,
                                                             error="", manager_id=op.manager_id,
                                                             manager_set=bool(merged.get("Manager")))
    owned = _verify_owner(op, row, pair, target)
    if owned.released:
        released = replace(unchanged, status=ContactStatus.RELEASED, error=owned.released)
        return Applied(Outcome.RELEASED, row.guid, owned.released), released
    if not owned.guid:
        detail = "the contact is missing from the target; a full round makes it again"
        return Applied(Outcome.REJECTED, row.guid, detail), replace(unchanged, status=ContactStatus.FAILED, error=detail)
    try:
        applied = _update(owned.guid, op.contact, row.applied, target)
    except TargetNotFound:
        # Removed behind our back; a partial op cannot make it again. Failed rows are re-planned in full rounds.
        detail = "the contact is missing from the target; a full round makes it again"
        return Applied(Outcome.REJECTED, row.guid, detail), replace(unchanged, status=ContactStatus.FAILED, error=detail)
    except TargetRejected as error:
        failed = replace(unchanged, status=ContactStatus.FAILED, error=str(error))
        return Applied(Outcome.REJECTED, row.guid, str(error)), failed
    return applied, replace(unchanged, hash=contact_hash(merged), applied=merged, error="", manager_id=op.manager_id,
                            manager_set=bool(merged.get("Manager")))


def _apply_moving(op: ContactOp, row: ContactRow, pair: TenantPair, target: Target, contacts: ContactStateStore,
                  open_source: SourceOpener | None, ownership: OwnershipStore | None) -> Applied:
    """The op, and once more after freeing its address when another of the pair's own contacts held it."""
    applied = _apply_to_target(op, row, pair, target, ownership)
    address = str((op.contact or {}).get("ExternalEmailAddress") or "")
    if applied.outcome is not Outcome.CONFLICT or not address or open_source is None:
        return applied
    holders = applied.holders if applied.holders else None
    if free_address(pair, target, contacts, address, version=op.version, open_source=open_source, holders=holders):
        return _apply_to_target(op, row, pair, target, ownership)
    return applied


def _apply_to_target(op: ContactOp, row: ContactRow, pair: TenantPair, target: Target,
                     ownership: OwnershipStore | None = None) -> Applied:
    try:
        if op.kind is OpKind.DELETE:
            return _delete(op, row, pair, target)
        if op.kind is OpKind.HIDE:
            return _hide(op, row, pair, target)
        assert op.contact is not None
        if row.guid and row.status in _HAS_CONTACT:
            if not _changes(op.contact, row.applied):
                return Applied(Outcome.UNCHANGED, row.guid)  # nothing to write, so nothing to check
            owned = _verify_owner(op, row, pair, target)
            if owned.released:
                return Applied(Outcome.RELEASED, row.guid, owned.released)
            try:
                # A contact found under another Guid (recreated by hand with our anchor) is unknown: send everything.
                applied = _update(owned.guid, op.contact, row.applied if owned.guid == row.guid else {}, target) \
                    if owned.guid else None
            except TargetNotFound:
                applied = None
            if applied is not None:
                restored = op.kind is OpKind.RESTORE and applied.outcome is not Outcome.UNCHANGED
                return Applied(Outcome.RESTORED, applied.guid) if restored else applied
            # removed behind our back: make it again
        return _create(op, pair, target, ownership)
    except AddressInUse as error:
        return Applied(Outcome.CONFLICT, row.guid, f"address in use by {error.holder or 'another recipient'}")
    except TargetRejected as error:
        return Applied(Outcome.REJECTED, row.guid, str(error))


# Parameters a contact applied by an earlier release never had: absent means "never set by ctcs", so an empty
# desired value needs no call (the upgrade's full round would otherwise send one Set-Contact per contact).
_ABSENT_MEANS_EMPTY = {"Manager": ""}


def _changes(desired: Mapping[str, Any], applied: Mapping[str, Any]) -> dict[str, Any]:
    if not applied:
        return {name: value for name, value in desired.items() if name != "Name"}
    return {
        name: value for name, value in desired.items()
        if name != "Name" and applied.get(name, _ABSENT_MEANS_EMPTY.get(name)) != value
    }


def _update(guid: str, desired: Mapping[str, Any], applied: Mapping[str, Any], target: Target) -> Applied:
    changes = _changes(desired, applied)
    if not changes:
        return Applied(Outcome.UNCHANGED, guid)
    target.update(guid, changes)
    return Applied(Outcome.UPDATED, guid)


def _is_ours(recipient: Recipient, pair: TenantPair, anchor: str, name: str) -> bool:
    attribute = pair.contact.anchor_attribute
    if recipient.anchor(attribute) == anchor:
        return True
    # A New-MailContact that succeeded just before a crash left our derived Name without the anchor yet.
    return recipient.recipient_type == MAIL_CONTACT and recipient.name == name and not recipient.anchor(attribute)


def _create(op: ContactOp, pair: TenantPair, target: Target, ownership: OwnershipStore | None) -> Applied:
    """Make the user's contact, or adopt its own: one that carries the anchor, or a half-made one with ctcs's Name
    and no anchor yet, unless that is a contact an admin took over (released, sync.state.ownership: one table read,
    only when such a contact is found)."""
    assert op.contact is not None
    contact = op.contact
    anchor = pair.anchor(op.source_id)
    name = str(contact["Name"])
    address = str(contact["ExternalEmailAddress"])
    found = target.find_recipients(
        anchor_attribute=pair.contact.anchor_attribute, anchor=anchor, address=address, name=name
    )
    own = [recipient for recipient in found if _is_ours(recipient, pair, anchor, name)]
    released = _released(op, pair, own, ownership)
    if released is not None:
        return Applied(Outcome.RELEASED, own[0].guid, released.why)  # the admin's now: never adopted (invariant 1)
    if own:
        target.update(own[0].guid, _changes(contact, {}))
        return Applied(Outcome.ADOPTED, own[0].guid, "found its own contact from an earlier attempt")
    if found:
        holder = found[0]
        # Never taken over here, whatever the pair says: `python -m sync adopt` takes existing contacts, listed first.
        what = f"the name {name}" if holder.name == name else f"the address {address}"
        return Applied(Outcome.CONFLICT, "", f"{_describe(holder)} already holds {what}",
                       holders=found if holder.name != name else [])
    try:
        created = target.create(contact)
    except TargetRejected:
        # Two deliveries of this very op hold the claim together (same version): the other one may have made the
        # contact since we looked, and Exchange then refuses ours for its name or address. Adopt it, not a failure.
        again = target.find_recipients(
            anchor_attribute=pair.contact.anchor_attribute, anchor=anchor, address=address, name=name
        )
        own = [recipient for recipient in again if _is_ours(recipient, pair, anchor, name)]
        if not own:
            raise
        target.update(own[0].guid, _changes(contact, {}))
        return Applied(Outcome.ADOPTED, own[0].guid, "another delivery of this op made it a moment ago")
    return Applied(Outcome.CREATED, created.guid)


def _released(op: ContactOp, pair: TenantPair, own: list[Recipient], ownership: OwnershipStore | None) -> Mark | None:
    """The released mark of a contact found by ctcs's Name without an anchor: a half-made contact, or one an admin
    took over (cleared its anchor) whose ContactState row was lost since."""
    if ownership is None or not own or own[0].anchor(pair.contact.anchor_attribute):
        return None
    mark = ownership.get(pair, op.source_id)
    return mark if mark is not None and mark.kind is MarkKind.RELEASED else None


def _describe(recipient: Recipient) -> str:
    return f"{recipient.recipient_type} {recipient.name!r} ({recipient.primary_address or 'no address'})"


@dataclass(frozen=True)
class _Owner:
    guid: str = ""  # the contact that carries this user's anchor ("" when there is none)
    released: str = ""  # why the contact the row names is not ours any more ("" when it is)


def _verify_owner(op: ContactOp, row: ContactRow, pair: TenantPair, target: Target) -> _Owner:
    """Before a write: does the contact the row names still carry this user's anchor (invariant 1)? One Get-Recipient
    by Guid and anchor, shared with the concurrent ops of the batch (`find_recipients` coalesces them), so ownership
    costs a share of one call, not a call per op. An admin who cleared or overwrote the anchor took the contact over:
    it is released. A row without a Guid finds its contact by anchor."""
    attribute = pair.contact.anchor_attribute
    anchor = pair.anchor(op.source_id)
    found = target.find_recipients(anchor_attribute=attribute, anchor=anchor, address="", name="", guid=row.guid)
    named = next((r for r in found if row.guid and r.guid.lower() == row.guid.lower()), None)
    if named is not None and named.anchor(attribute) != anchor:
        held = named.anchor(attribute)
        why = "was cleared" if not held else "now holds another value"
        return _Owner(released=f"released: {attribute} on contact {named.name!r} {why} in the target; "
                               "ctcs no longer changes it")
    if named is not None:
        return _Owner(named.guid)
    return _Owner(next((r.guid for r in found if r.anchor(attribute) == anchor), ""))


def _delete(op: ContactOp, row: ContactRow, pair: TenantPair, target: Target) -> Applied:
    return _on_owned(op, row, pair, target, target.delete, done=Outcome.DELETED)


def _hide(op: ContactOp, row: ContactRow, pair: TenantPair, target: Target) -> Applied:
    def hide(guid: str) -> None:
        target.update(guid, {"HiddenFromAddressListsEnabled": True})

    return _on_owned(op, row, pair, target, hide, done=Outcome.HIDDEN)


def _on_owned(op: ContactOp, row: ContactRow, pair: TenantPair, target: Target, write: Callable[[str], object], *,
              done: Outcome) -> Applied:
    """A removal (delete or hide) written only to the contact that still carries this user's anchor (invariant 1):
    released when an admin took it over, already gone when no contact carries the anchor or it vanished meanwhile."""
    owned = _verify_owner(op, row, pair, target)
    if owned.released:
        return Applied(Outcome.RELEASED, row.guid, owned.released)
    if not owned.guid:
        return Applied(Outcome.ALREADY_GONE)
    try:
        write(owned.guid)
    except TargetNotFound:
        return Applied(Outcome.ALREADY_GONE)
    return Applied(done, owned.guid if done is Outcome.HIDDEN else "")  # a hidden contact stays; a deleted one is gone
