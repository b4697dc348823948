"""`python -m sync adopt`: onboarding, once, of contacts the target already holds for the pair's source users.

A target that had contacts before ctcs (made by hand or by another tool) would meet them as conflicts: another
recipient holds the address. Adoption takes them over explicitly instead of as a standing pair option:

1. every user of the source is read (a full round, nothing written) and scoped and mapped as a round would;
2. for each in-scope user without a contact of this pair, one shared `Get-Recipient` by anchor and address: a mail
   contact holding the user's address, with an empty anchor attribute, is a candidate. One that carries any anchor
   (another pair's, another tool's) or that an admin took over from ctcs (released, sync.state.ownership) is skipped
   and listed with the reason; a mailbox or guest is never a candidate;
3. with `dry_run` that list is the answer; otherwise each candidate is looked at once more by Guid (still a mail
   contact, still no anchor) and gets this pair's anchor, its adoption is recorded apart from ContactState (so it
   holds after the rows are lost), its row becomes a tombstone and the pair's next round is a full one, whose
   create finds the contact by its anchor and sets every value from the source.

An adopted contact whose user leaves is hidden, not deleted (`deletion.adopted`, sync.core.plan).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from sync.app.planner import group_round
from sync.app.wiring.runtime import Runtime
from sync.contract.pairs import TenantPair
from sync.core.scope import decide_scope
from sync.core.source import SourceUser, source_select
from sync.core.target import Recipient, Target
from sync.state.contacts import Correction
from sync.state.entities import iso, now_utc
from sync.state.ownership import Mark, MarkKind

log = logging.getLogger("ctcs.admin")
MAIL_CONTACT = "MailContact"


@dataclass(frozen=True)
class Candidate:
    source_id: str
    user: str  # the source user's display name
    address: str
    guid: str = ""  # the target contact that holds the address
    contact: str = ""  # its Name
    skipped: str = ""  # why it is not taken ("" when it is)

    @property
    def taken(self) -> bool:
        return bool(self.guid) and not self.skipped


@dataclass
class AdoptReport:
    pair_id: str
    dry_run: bool
    candidates: list[Candidate] = field(default_factory=list)  # every contact found for an in-scope user
    adopted: int = 0  # anchors written (0 in a dry run)
    users_read: int = 0

    @property
    def taken(self) -> list[Candidate]:
        return [c for c in self.candidates if c.taken]

    def as_json(self) -> dict[str, object]:
        return {"pair": self.pair_id, "dry_run": self.dry_run, "users_read": self.users_read,
                "adopted": self.adopted,
                "contacts": [{"source_id": c.source_id, "user": c.user, "address": c.address, "guid": c.guid,
                              "contact": c.contact, "action": "skip" if c.skipped else "adopt",
                              "reason": c.skipped or None} for c in self.candidates]}


def adopt_contacts(rt: Runtime, pair_id: str, *, dry_run: bool) -> AdoptReport:
    pair = rt.stores.pairs.get(pair_id)
    report = AdoptReport(pair.id, dry_run)
    in_scope = _in_scope_users(rt, pair, report)
    rows = rt.stores.contacts.summaries(pair.id)
    marks = rt.stores.ownership.marks(pair)
    target = rt.target(pair)
    for source_id, (user, address) in sorted(in_scope.items()):
        row = rows.get(source_id)
        if row is not None and row.status.ours and row.guid:
            continue  # ctcs holds this user's contact already
        candidate = _candidate(target, pair, source_id, user, address, marks.get(source_id))
        if candidate is not None:
            report.candidates.append(candidate)
    if not dry_run:
        for candidate in report.taken:
            report.adopted += _adopt(rt, target, pair, candidate)
        if report.adopted:
            rt.stores.pair_state.request_full_round(pair.id)  # their users are planned again only by a full round
    log.info("pair %s adopt%s: %d contact(s) to take, %d adopted", pair.id, " (dry run)" if dry_run else "",
             len(report.taken), report.adopted, extra={"pair_id": pair.id, "outcome": "adopt"})
    return report


def _in_scope_users(rt: Runtime, pair: TenantPair, report: AdoptReport) -> dict[str, tuple[str, str]]:
    """source id -> (display name, the address its contact would have), for every in-scope user (a full read)."""
    memberships = group_round.stored_memberships(rt.stores.groups, pair) or {}
    hidden_ids = rt.hidden_ids(pair)
    users: dict[str, tuple[str, str]] = {}
    for page in rt.open_source(pair).read_pages(None, source_select(pair)):
        for user in page.as_round(full=True).users.values():
            report.users_read += 1
            source_id = str(user["id"])
            decision = _scope(pair, user, memberships.get(source_id, frozenset()), hidden_ids)
            if decision:
                users[source_id] = (str(user.get("displayName") or ""), decision)
    return users


def _scope(pair: TenantPair, user: SourceUser, groups: frozenset[str], hidden_ids: frozenset[str] | None) -> str:
    hidden = None if hidden_ids is None else str(user["id"]).lower() in hidden_ids
    decision = decide_scope(pair, user, groups, hidden)
    return decision.address if decision.in_scope else ""


def _candidate(target: Target, pair: TenantPair, source_id: str, user: str, address: str,
               mark: Mark | None) -> Candidate | None:
    attribute, anchor = pair.contact.anchor_attribute, pair.anchor(source_id)
    found = target.find_recipients(anchor_attribute=attribute, anchor=anchor, address=address, name="")
    if any(r.anchor(attribute) == anchor for r in found):
        return None  # the user's own contact exists already (a round adopts it by its anchor)
    holder = next((r for r in found if _holds(r, address)), None)
    if holder is None:
        return None  # nobody holds the address: an ordinary create
    skipped = ""
    if holder.recipient_type != MAIL_CONTACT:
        skipped = f"held by a {holder.recipient_type}, not a mail contact"
    elif holder.anchor(attribute):
        skipped = f"carries another anchor in {attribute}"
    elif mark is not None and mark.kind is MarkKind.RELEASED and (not mark.guid or mark.guid.lower() == holder.guid.lower()):
        skipped = "released: an admin took it over from ctcs (python -m sync handback gives it back)"
    return Candidate(source_id, user, address, holder.guid, holder.name, skipped)


def _holds(recipient: Recipient, address: str) -> bool:
    wanted = address.lower()
    held = {recipient.primary_address.lower(), *(a.lower() for a in recipient.addresses)}
    external = str(recipient.values.get("ExternalEmailAddress") or "").lower().removeprefix("smtp:")
    return wanted in held or wanted == external


def _adopt(rt: Runtime, target: Target, pair: TenantPair, candidate: Candidate) -> int:
    """Write this pair's anchor on one listed contact, after one more look that it is still unowned."""
    attribute, anchor = pair.contact.anchor_attribute, pair.anchor(candidate.source_id)
    now = target.recipients_by_guid(attribute, [candidate.guid]).get(candidate.guid.lower())
    if now is None or now.recipient_type != MAIL_CONTACT or now.anchor(attribute):
        return 0  # gone or taken meanwhile: left alone (invariant 1)
    target.update(now.guid, {attribute: anchor})
    rt.stores.ownership.record(pair, Mark(candidate.source_id, MarkKind.ADOPTED, pair.id, now.guid, now.name,
                                          candidate.address, "adopted by python -m sync adopt"))
    row = rt.stores.contacts.get(pair.id, candidate.source_id)
    if row.etag is not None:
        rt.stores.contacts.correct(row, Correction.adopted(at=iso(now_utc())))
    return 1
