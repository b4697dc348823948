"""`python -m sync explain`: why is this person (or group) (not) in the target's address list?

Reads the user from the source, runs the same scope and mapping the planner runs, and puts the answer next to
what the state table says was last done for that user. For a pair whose `objects` include groups, a key that is no
user (a group's object id, or the address its contact was made with) is looked up as a group and explained by the
groups' scope and mapping.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from sync.app.planner import group_round
from sync.app.planner.group_contacts import GroupContactCapable
from sync.app.wiring.runtime import Runtime
from sync.contract.pairs import TenantPair
from sync.contract.vocabulary import ContactStatus, ObjectKind
from sync.core.group_mapping import GroupMapper
from sync.core.group_scope import GROUP_SKIP_REASONS, decide_group_scope
from sync.core.mapping import ContactMapper
from sync.core.scope import SKIP_REASONS, decide_scope
from sync.core.source import source_select
from sync.state.contacts import ContactRow
from sync.state.ownership import MarkKind


@dataclass
class Explanation:
    pair_id: str
    key: str
    found: bool
    user: dict[str, Any] = field(default_factory=dict)
    in_scope: bool = False
    reason: str = ""
    rule: str = ""
    desired: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    state: dict[str, Any] = field(default_factory=dict)
    verdict: str = ""
    kind: ObjectKind = ObjectKind.USER  # what `user` holds: the source user, or (kind group) the source group


def _state_of(row: ContactRow) -> dict[str, Any]:
    return {
        "status": row.status or "none",
        "contact_guid": row.guid,
        "version": row.version,
        "last_op": row.last_op,
        "last_run": row.last_run_id,
        "last_error": row.last_error,
        "updated_at": row.updated_at,
        "hidden_at": row.hidden_at,
        "repaired_at": row.repaired_at,  # when a reconcile last repaired this person's contact or row
        "repair": row.repair,  # ... and what it repaired
    }


def _verdict(explanation: Explanation, row: ContactRow, pair: TenantPair) -> str:
    verdict = _current(explanation, row, pair)
    if row.repaired_at and row.repair:
        verdict += f"; last repaired by a reconcile at {row.repaired_at}: {row.repair}"
    return verdict


def _current(explanation: Explanation, row: ContactRow, pair: TenantPair) -> str:
    status = row.status
    if status == ContactStatus.RELEASED:
        return (f"not managed by ctcs any more: {row.last_error or 'the contact lost its anchor'} "
                "(python -m sync handback gives it back)")
    if not explanation.found:
        if status and status != ContactStatus.DELETED:
            return "the user no longer exists in the source: the next full run removes the contact"
        return "no such user" + (" or group" if pair.syncs_groups else "") + " in the source tenant"
    if not explanation.in_scope:
        reasons = GROUP_SKIP_REASONS if explanation.kind is ObjectKind.GROUP else SKIP_REASONS
        why = reasons.get(explanation.reason, explanation.reason)
        if status in (ContactStatus.OK, ContactStatus.FAILED, ContactStatus.CONFLICT):
            action = "hides" if pair.deletion.mode != "delete" else "removes"
            return f"out of scope ({why}): the next run {action} the contact"
        if status == ContactStatus.HIDDEN:
            return f"out of scope ({why}): the contact is hidden from the address lists"
        return f"not in the address list: {why}"
    if status == ContactStatus.OK:
        return "in the address list" + ("" if explanation.desired.get("HiddenFromAddressListsEnabled") is False
                                       else " (as a hidden contact: contact.hidden_from_gal is true)")
    if status == ContactStatus.CONFLICT:
        return f"in scope, but another recipient holds the address: {row.last_error}"
    if status == ContactStatus.FAILED:
        return f"in scope, but the last attempt failed: {row.last_error} (fix it, then replay-poison or run --full)"
    if status == ContactStatus.HIDDEN:
        return "in scope again: the next run shows the hidden contact again"
    if status == ContactStatus.QUEUED:
        return f"in scope: its create is on the queue (run {row.last_run_id}), waiting for the worker"
    return "in scope: the next run creates the contact"


def explain(rt: Runtime, pair_id: str, key: str) -> Explanation:
    pair = rt.stores.pairs.get(pair_id)
    user = rt.open_source(pair).find_user(key.strip(), source_select(pair))
    explanation = Explanation(pair.id, key, found=user is not None, user=dict(user or {}))
    row = rt.stores.contacts.get(pair.id, str(user["id"])) if user else _row_by_key(rt, pair, key)
    if user is not None:
        memberships = group_round.stored_memberships(rt.stores.groups, pair) or {}
        decision = decide_scope(pair, user, memberships.get(str(user["id"]), frozenset()))
        explanation.in_scope, explanation.reason, explanation.rule = decision.in_scope, decision.reason or "", decision.detail
        if decision.in_scope:
            mapped = ContactMapper(pair).map(user, decision.address)
            explanation.desired, explanation.warnings = mapped.contact, mapped.warnings
    elif pair.syncs_groups:
        row = _explain_group(rt, pair, key, row, explanation)
    mark = rt.stores.ownership.get(pair, row.source_id) if row.source_id else None
    if mark is not None and mark.kind is MarkKind.RELEASED:  # kept apart from ContactState: its row may be lost
        row = replace(row, status=ContactStatus.RELEASED, guid=row.guid or mark.guid,
                      last_error=row.last_error or mark.why)
    explanation.state = _state_of(row)
    explanation.verdict = _verdict(explanation, row, pair)
    return explanation


def _explain_group(rt: Runtime, pair: TenantPair, key: str, row: ContactRow, explanation: Explanation) -> ContactRow:
    """No user has this key: the group with this object id (or whose contact has this address), if any."""
    source = rt.open_source(pair)
    group_id = row.source_id if row.status and row.kind is ObjectKind.GROUP else key.strip().lower()
    group = source.group_contact_reader().find_group(group_id) if isinstance(source, GroupContactCapable) else None
    if group is None:
        return row
    explanation.found, explanation.user, explanation.kind = True, dict(group), ObjectKind.GROUP
    decision = decide_group_scope(pair, group)
    explanation.in_scope, explanation.reason, explanation.rule = decision.in_scope, decision.reason or "", decision.detail
    if decision.in_scope:
        mapped = GroupMapper(pair).map(group, decision.address)
        explanation.desired, explanation.warnings = mapped.contact, mapped.warnings
    return rt.stores.contacts.get(pair.id, str(group["id"]))


def _row_by_key(rt: Runtime, pair: TenantPair, key: str) -> ContactRow:
    """The state row of a user the source no longer has: by object id, or by the address it was synced with."""
    row = rt.stores.contacts.get(pair.id, key.lower())
    if row.status:
        return row
    wanted = key.lower()
    for candidate in rt.stores.contacts.rows(pair.id):
        if str(candidate.applied.get("ExternalEmailAddress", "")).lower() == wanted:
            return candidate
    return row
