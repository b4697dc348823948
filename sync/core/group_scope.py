"""Which source groups get a contact (pure). Every "no" carries a reason an admin can act on, like user scope.

The kind of a group follows Graph's group resource documentation: `groupTypes` containing `Unified`
is a Microsoft 365 group; otherwise `mailEnabled` and `securityEnabled` tell a distribution list (mail, not
security) from a mail-enabled security group (both). A security group without mail has nothing to write to.
"""

from __future__ import annotations

from sync.contract.filters import failing_clause
from sync.contract.pairs import TenantPair
from sync.core.scope import ScopeDecision, is_smtp, mail_address
from sync.core.source import SourceUser

SourceGroup = SourceUser
"""A group as Graph returns it: property name → value (`id` always present)."""

GROUP_SKIP_REASONS = {
    "no_mail": "the group has no mail address (a security group without mail, or mail not set up yet)",
    "type_excluded": "the group's kind is not in groups.include_types",
    "hidden_from_gal": "hidden from the source's address lists (hideFromAddressLists, or the source's Exchange)",
    "invalid_mail": "the group's mail address is not a routable SMTP address",
    "domain_excluded": "the group's mail domain is listed in groups.exclude_domains",
    "domain_not_included": "the group's mail domain is not in groups.include_domains",
    "not_included": "the group is not listed in groups.include_groups",
    "excluded": "the group is listed in groups.exclude_groups",
    "filtered_out": "a groups.filters clause does not hold for this group",
}


def group_kind(group: SourceGroup) -> str:
    """unified, distribution, mail_enabled_security or security (no mail: never a contact)."""
    if "Unified" in (group.get("groupTypes") or ()):
        return "unified"
    if group.get("mailEnabled") is True:
        return "mail_enabled_security" if group.get("securityEnabled") is True else "distribution"
    return "security"


def decide_group_scope(pair: TenantPair, group: SourceGroup, hidden_in_source: bool | None = None) -> ScopeDecision:
    """`hidden_in_source`: what the source's Exchange says (authoritative, covers distribution lists); None falls back
    to the group's `hideFromAddressLists` (Microsoft 365 groups, read with `GET /groups/{id}`)."""
    scope = pair.groups
    group_id = str(group["id"]).lower()
    kind = group_kind(group)
    address = mail_address(group)
    if kind == "security" or not address:
        return ScopeDecision(False, "no_mail", detail=f"kind {kind}")
    if kind not in scope.include_types:
        return ScopeDecision(False, "type_excluded", address, f"kind {kind}")
    hidden = group.get("hideFromAddressLists") is True if hidden_in_source is None else hidden_in_source
    if scope.honor_hidden_from_gal and hidden:
        return ScopeDecision(False, "hidden_from_gal", address, "source Exchange" if hidden_in_source else "")
    if not is_smtp(address):
        return ScopeDecision(False, "invalid_mail", address)
    domain = address.rsplit("@", 1)[1].lower()
    if domain in scope.exclude_domains:
        return ScopeDecision(False, "domain_excluded", address)
    if scope.include_domains and domain not in scope.include_domains:
        return ScopeDecision(False, "domain_not_included", address)
    if group_id in scope.exclude_groups:
        return ScopeDecision(False, "excluded", address)
    if scope.include_groups and group_id not in scope.include_groups:
        return ScopeDecision(False, "not_included", address)
    if scope.filters:
        failed = failing_clause(scope.filter_groups, {**group, "kind": kind})
        if failed is not None:
            return ScopeDecision(False, "filtered_out", address, f"failed: {failed.describe()}")
    return ScopeDecision(True, None, address)
