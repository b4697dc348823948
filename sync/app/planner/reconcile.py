"""A reconcile round: compare the target's owned contacts with ContactState, correct the state, then plan a full round.

    list every contact with the pair's anchor (one paged Get-Recipient)   ─┐
    ContactState rows                                                       ├─► sync.core.reconcile.compare_target
    contacts changed behind ctcs's back: Get-Contact for what the listing   │
      does not return (only when WhenChanged is newer than ctcs's write)   ─┘
        │
        ├─ rows corrected (ETag-guarded): drift → the target's values, missing → tombstone or `released`,
        │  lost rows rebuilt from the target, rows relinked to the contact that carries their anchor
        ├─ duplicates removed (the listing showed them with our anchor; counted against the safety gate)
        └─ a full round against the source (sync.app.planner.run.run_pair with this as its `prepare`): it updates
           what drifted (the worker sends only the parameters that differ), creates what was deleted by hand, and
           removes orphans through the safety gate, all as ordinary ops

It runs under the pair's lease, inside `run_pair`, so it gets the quarantine check, the planner's budget and a
SyncRuns row (trigger `reconcile`) like any round. `preview_reconcile` is the dry run: the same comparison, no write.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from sync.app.planner.rounds import Invocation
from sync.app.planner.run import RunResult, run_pair
from sync.app.wiring.runtime import Runtime
from sync.contract.ops import ContactOp, OpKind
from sync.contract.pairs import TenantPair
from sync.contract.vocabulary import ContactStatus, RunOutcome, RunTrigger
from sync.core.mapping import ContactMapper, contact_hash, contact_name
from sync.core.plan import Plan, unsafe_reason
from sync.core.reconcile import KnownRow, TargetComparison, compare_target, in_applied_form
from sync.core.target import UNLISTED_PARAMETERS, Recipient, Target
from sync.errors import TargetNotFound
from sync.state.contacts import ContactRow, Correction
from sync.state.entities import iso, now_utc
from sync.state.runs import RunRecord

log = logging.getLogger("ctcs.reconcile")

# Exchange's WhenChanged and ctcs's row time come from two clocks; a contact changed within this of ctcs's own write
# is not read again (its listed parameters are still compared on every reconcile).
CLOCK_SKEW = timedelta(minutes=2)
REPAIR_KINDS = ("drift_repaired", "recreated", "orphans_removed", "duplicates_removed", "rows_rebuilt", "released")


@dataclass
class ReconcileFindings:
    """What one reconcile found in the target (and, after the round, repaired)."""

    comparison: TargetComparison
    released: dict[str, str] = field(default_factory=dict)  # id -> why
    deleted_by_hand: list[str] = field(default_factory=list)
    busy: int = 0  # rows an op held while the reconcile wanted to correct them (the next reconcile looks again)
    duplicates_removed: int = 0
    gate_reason: str = ""
    rebuild_skipped: int = 0  # lost rows of a pair that syncs groups: left to the rounds to adopt by anchor

    def counts(self) -> dict[str, int]:
        c = self.comparison
        return {"drift_repaired": len(c.drifted), "recreated": len(self.deleted_by_hand),
                "rows_rebuilt": len(c.rebuilt) + len(c.relinked), "duplicates_removed": self.duplicates_removed,
                "released": len(self.released), "contacts_listed": c.listed}

    def lines(self) -> list[str]:
        """What it found, in admin words (the dry run prints these)."""
        c = self.comparison
        out = [f"{source_id}: changed by hand ({', '.join(sorted(values))})" for source_id, values in sorted(c.drifted.items())]
        out += [f"{source_id}: deleted by hand; created again" for source_id in sorted(self.deleted_by_hand)]
        out += [f"{source_id}: {why}" for source_id, why in sorted(self.released.items())]
        out += [f"{source_id}: no state row; rebuilt from contact {r.guid}" for source_id, r in sorted(c.rebuilt.items())]
        out += [f"{source_id}: state named another contact; relinked to {r.guid}" for source_id, r in sorted(c.relinked.items())]
        out += [f"duplicate contact {r.guid} ({r.name}) removed" for r in c.duplicates]
        if self.gate_reason:
            out.append(f"duplicates kept: {self.gate_reason}")
        return out


def reconcile_pair(
    rt: Runtime, pair_id: str, *, trigger: RunTrigger = RunTrigger.RECONCILE, allow_deletes: bool = False,
    budget_seconds: float | None = None, keep_ops: bool = True,
) -> tuple[RunResult, ReconcileFindings | None]:
    """Reconcile the pair: correct its state from the target, then plan a full round (its ops queued as usual).
    Returns the run (trigger `reconcile`, counts per repair kind) and what the target showed (None when the run
    never got to look: quarantined, lease held)."""
    found: list[ReconcileFindings] = []
    pairs: list[TenantPair] = []

    def prepare(pair: TenantPair, run: RunRecord) -> dict[str, int]:
        findings = repair_state(rt, pair, run_id=run.run_id, allow_deletes=allow_deletes)
        found.append(findings)
        pairs.append(pair)
        if findings.gate_reason:
            run.error = f"duplicates not removed: {findings.gate_reason}"
        return findings.counts()

    result = run_pair(rt, pair_id, trigger=trigger, full=True, allow_deletes=allow_deletes,
                      invocation=Invocation(budget_seconds, keep_ops=keep_ops), prepare=prepare)
    if found and result.outcome is not RunOutcome.FAILED:
        now = now_utc()
        due = now + timedelta(hours=pairs[0].reconcile_hours)
        rt.stores.pair_state.record_reconcile(pair_id, run_id=result.run.run_id, at=iso(now),
                                              counts=repair_counts(result.run.counts), due_at=iso(due))
    return result, found[0] if found else None


def spread_due_at(pair: TenantPair, now: datetime) -> datetime:
    """When a pair never reconciled is first due: a point of its interval fixed by its id (stable across timer runs
    and instances), so many pairs spread over `reconcile_hours` instead of all reconciling at once."""
    digest = int(hashlib.sha256(pair.id.encode()).hexdigest()[:8], 16)
    return now + timedelta(seconds=digest % (pair.reconcile_hours * 3600))


def repair_counts(counts: Mapping[str, int]) -> dict[str, int]:
    """The repair kinds of a reconcile run's counts (orphans are the round's removals)."""
    return {kind: int(counts.get(kind, 0)) for kind in REPAIR_KINDS}


def preview_reconcile(rt: Runtime, pair_id: str) -> ReconcileFindings:
    """The dry run: what the target shows against ContactState. Reads only (the Guid check included)."""
    pair = rt.stores.pairs.get(pair_id)
    return _findings(rt, pair, _rows(rt, pair))


def repair_state(rt: Runtime, pair: TenantPair, *, run_id: str, allow_deletes: bool = False) -> ReconcileFindings:
    """Compare and correct ContactState (the reconcile's `prepare` step, under the pair's lease)."""
    rows = _rows(rt, pair)
    findings = _findings(rt, pair, rows)
    now = iso(now_utc())
    contacts = rt.stores.contacts
    c = findings.comparison
    writes: list[tuple[ContactRow, Correction]] = []
    for source_id, values in c.drifted.items():
        row = rows[source_id]
        # A staged delete shown again by hand: as a shown contact, the round hides it again (its user is gone or
        # out of scope) through the safety gate, or shows it with current values when the user is back.
        shown_again = row.status is ContactStatus.HIDDEN and values.get("HiddenFromAddressListsEnabled") is False
        held = {**row.applied, **in_applied_form(values)}
        repair = f"changed by hand ({', '.join(sorted(values))}); set back"
        writes.append((row, Correction.drift_set_back(held, shown_again=shown_again, repair=repair, at=now)))
    for source_id in findings.deleted_by_hand:
        writes.append((rows[source_id], Correction.deleted_by_hand(repair="deleted by hand; created again", at=now)))
    for source_id, why in findings.released.items():
        writes.append((rows[source_id], Correction.released(why, run_id=run_id, at=now)))
    _mark_released(rt, pair, rows, findings.released)
    pending = set(rt.stores.contacts.pending_ids(pair.id)) if c.rebuilt else set()
    if pair.syncs_groups:
        # The target cannot tell a group's contact from a user's (same anchor form): a row rebuilt for a group's
        # contact as a user's would be swept by the users' full round. Lost rows of such pairs are left to the
        # rounds, whose creates adopt their contacts by anchor.
        findings.rebuild_skipped = len(c.rebuilt)
        c.rebuilt.clear()
    for source_id, contact in {**c.rebuilt, **c.relinked}.items():
        if source_id in pending:
            findings.busy += 1  # its first op is being applied right now: it writes the row itself
            continue
        row = rows.get(source_id) or ContactRow(pair.id, source_id)
        writes.append((row, _rebuilt(pair, source_id, contact, now, relinked=source_id in c.relinked)))
    # Rows that do not exist yet (a lost table: thousands) go in transactions of 100; the rest one by one, each
    # guarded by the ETag the reconcile read (an op that committed meanwhile wins; the next reconcile looks again).
    contacts.add_corrected(pair.id, [(row.source_id, correction) for row, correction in writes if row.etag is None])
    for row, correction in writes:
        if row.etag is None:
            continue
        if row.claim_version and row.claim_until and datetime.fromisoformat(row.claim_until) > now_utc():
            findings.busy += 1  # an op is applying to it right now; the next reconcile looks again
            continue
        if not contacts.correct(row, correction):
            findings.busy += 1
    _remove_duplicates(rt, pair, findings, allow_deletes=allow_deletes)
    log.info("pair %s reconcile %s: %s", pair.id, run_id, findings.counts(),
             extra={"pair_id": pair.id, "run_id": run_id, "counts": findings.counts()})
    return findings


def _mark_released(rt: Runtime, pair: TenantPair, rows: Mapping[str, ContactRow], found: Mapping[str, str]) -> None:
    """Record apart from ContactState every contact found released now, and every row released before without a
    mark (an older release), so that losing the rows or re-adding the pair never adopts them again."""
    marked = rt.stores.ownership.marks(pair)
    released = {source_id: row.last_error for source_id, row in rows.items() if row.status is ContactStatus.RELEASED}
    for source_id, why in {**released, **found}.items():
        if source_id in found or source_id not in marked:
            row = rows[source_id]
            rt.stores.ownership.released(pair, source_id, guid=row.guid, why=why, name=str(row.applied.get("Name") or ""),
                                         address=str(row.applied.get("ExternalEmailAddress") or ""))


def _rows(rt: Runtime, pair: TenantPair) -> dict[str, ContactRow]:
    return {row.source_id: row for row in rt.stores.contacts.rows(pair.id) if row.status}


def _findings(rt: Runtime, pair: TenantPair, rows: Mapping[str, ContactRow]) -> ReconcileFindings:
    target = rt.target(pair)
    attribute = pair.contact.anchor_attribute
    listing = [_with_unlisted(target, contact, rows, pair) for contact in target.list_owned(attribute, pair.anchor_prefix)]
    known = {source_id: KnownRow(row.status or ContactStatus.DELETED, row.guid, row.applied, row.updated_at)
             for source_id, row in rows.items()}
    comparison = compare_target(known, listing, anchor_attribute=attribute, anchor_prefix=pair.anchor_prefix)
    if comparison.rebuilt or comparison.relinked:
        # Rows rebuilt from the target need what the listing does not return, or the round would set it again on
        # every contact: a second paged listing (Get-Contact), only when rows are rebuilt.
        rebuilt = {**comparison.rebuilt, **comparison.relinked}
        details = target.contact_details([contact.guid for contact in rebuilt.values()])
        for group in (comparison.rebuilt, comparison.relinked):
            for source_id, contact in group.items():
                extra = details.get(contact.guid.lower())
                if extra:
                    group[source_id] = replace(contact, values={**contact.values, **extra})
    findings = ReconcileFindings(comparison)
    if comparison.missing:
        # One Get-Recipient per 16 Guids: is the contact gone, or did it lose our anchor (taken over)?
        held = target.recipients_by_guid(attribute, comparison.missing.values())
        for source_id, guid in comparison.missing.items():
            holder = held.get(guid.lower())
            if holder is None:
                findings.deleted_by_hand.append(source_id)
            else:
                anchor = holder.anchor(attribute)
                findings.released[source_id] = _released_reason(attribute, anchor)
    return findings


def _released_reason(attribute: str, anchor: str) -> str:
    if not anchor:
        return f"released: {attribute} was cleared on the contact in the target; ctcs no longer changes it"
    return f"released: {attribute} on the contact in the target now holds another value; ctcs no longer changes it"


def _with_unlisted(target: Target, contact: Recipient, rows: Mapping[str, ContactRow], pair: TenantPair) -> Recipient:
    """A contact Exchange changed after ctcs last wrote its row: read what the listing does not return (Get-Contact),
    so a hand edit of a parameter such as MobilePhone is seen too. Idle contacts cost nothing here."""
    source_id = contact.anchor(pair.contact.anchor_attribute)[len(pair.anchor_prefix):]
    row = rows.get(source_id)
    if row is None or row.status is not ContactStatus.OK or not _changed_after(contact.when_changed, row.updated_at):
        return contact
    if not any(name in row.applied for name in UNLISTED_PARAMETERS):
        return contact
    try:
        extra = target.read_contact(contact.guid)
    except TargetNotFound:
        return contact
    return replace(contact, values={**contact.values, **extra})


def _changed_after(when_changed: str, updated_at: str) -> bool:
    if not when_changed or not updated_at:
        return False
    try:
        return datetime.fromisoformat(when_changed) > datetime.fromisoformat(updated_at) + CLOCK_SKEW
    except ValueError:
        return False


def _rebuilt(pair: TenantPair, source_id: str, contact: Recipient, now: str, *, relinked: bool) -> Correction:
    """A row from the target's contact: what it holds counts as applied, in the shape of a desired contact, and its
    hash is that contact's hash. So a contact that holds what the source wants plans nothing at all (a lost table of
    10,000 rows costs no Exchange write), and one that differs gets an update with only the differing parameters."""
    # What the listing does not return is taken as unset: the round then sends such a parameter only when the user
    # has a value for it, instead of one Set-Contact per contact to clear what is most likely clear already.
    observed = {"Name": contact.name or contact_name(source_id),
                **dict.fromkeys(sorted(UNLISTED_PARAMETERS), ""), **in_applied_form(contact.values)}
    applied = {name: observed.get(name, "") for name in ContactMapper(pair).parameters()}
    hidden = bool(applied.get("HiddenFromAddressListsEnabled")) and not pair.contact.hidden_from_gal
    return Correction.rebuilt(  # hidden: by a staged delete of a leaver
        guid=contact.guid, applied=applied, hash="" if hidden else contact_hash(applied), hidden=hidden, at=now,
        repair="state named another contact; relinked" if relinked else "state was missing; rebuilt from the target",
    )


def _remove_duplicates(rt: Runtime, pair: TenantPair, findings: ReconcileFindings, *, allow_deletes: bool) -> None:
    duplicates = findings.comparison.duplicates
    if not duplicates:
        return
    # The safety gate counts them like any removal: a reconcile that finds hundreds removes none and says so.
    probe = Plan(pair.id, "", 0, True, managed=max(findings.comparison.listed, 1))
    probe.ops = [ContactOp(pair.id, "", OpKind.DELETE, r.guid.replace("-", ""), 1, "duplicate") for r in duplicates]
    reason = unsafe_reason(probe, pair)
    if reason and not allow_deletes:
        findings.gate_reason = reason
        return
    target = rt.target(pair)
    for duplicate in duplicates:
        with contextlib.suppress(TargetNotFound):  # gone already: as good as removed
            target.delete(duplicate.guid)  # the listing showed it with this pair's anchor (invariant 1)
        findings.duplicates_removed += 1
