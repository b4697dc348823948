"""Which source users get a contact (pure). Every "no" carries a reason an admin can act on."""

from __future__ import annotations

import re
from dataclasses import dataclass

from sync.contract.filters import failing_clause
from sync.contract.pairs import TenantPair
from sync.core.source import SourceUser

# Deliberately simple: Exchange does the strict check; this one keeps obvious junk out of the target.
_SMTP = re.compile(r"^[^@\s\"(),:;<>\[\]\\]+@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)+$")

SKIP_REASONS = {
    "guest": "a guest (B2B) account; set scope.include_guests to sync guests",
    "disabled": "the account is disabled; set scope.include_disabled to sync disabled accounts",
    "hidden_from_gal": "hidden from the address list in the source (showInAddressList is false)",
    "no_mail": "no mail address and no primary SMTP proxy address",
    "invalid_mail": "the mail address is not a routable SMTP address",
    "domain_excluded": "the mail domain is listed in scope.exclude_domains",
    "domain_not_included": "the mail domain is not in scope.include_domains",
    "filtered_out": "a scope.filters clause does not hold for this user",
    "not_in_group": "not a member (directly or nested) of any group in scope.include_groups",
    "excluded_by_group": "a member (directly or nested) of a group in scope.exclude_groups",
}


@dataclass(frozen=True)
class ScopeDecision:
    in_scope: bool
    reason: str | None = None  # a key of SKIP_REASONS when out of scope
    address: str = ""
    detail: str = ""  # the rule that decided, for `explain`


def mail_address(user: SourceUser) -> str:
    """`mail`, else the primary (upper-case `SMTP:`) proxy address, else ""."""
    mail = user.get("mail")
    if isinstance(mail, str) and mail.strip():
        return mail.strip()
    for proxy in user.get("proxyAddresses") or ():
        if isinstance(proxy, str) and proxy.startswith("SMTP:"):
            return proxy[5:].strip()
    return ""


def is_smtp(address: str) -> bool:
    return bool(_SMTP.match(address)) and len(address) <= 320


def is_guest(user: SourceUser) -> bool:
    return user.get("userType") == "Guest" or "#EXT#" in str(user.get("userPrincipalName") or "")


def decide_scope(
    pair: TenantPair, user: SourceUser, groups: frozenset[str] = frozenset(), hidden_in_source: bool | None = None
) -> ScopeDecision:
    """`groups`: the ids of the pair's tracked groups the user is a member of, nested membership included.
    `hidden_in_source`: what the source's Exchange says (authoritative); None falls back to Graph's showInAddressList."""
    scope = pair.scope
    if is_guest(user) and not scope.include_guests:
        return ScopeDecision(False, "guest")
    if user.get("accountEnabled") is False and not scope.include_disabled:
        return ScopeDecision(False, "disabled")
    hidden = user.get("showInAddressList") is False if hidden_in_source is None else hidden_in_source
    if scope.honor_hidden_from_gal and hidden:
        return ScopeDecision(False, "hidden_from_gal", detail="source Exchange" if hidden_in_source else "")
    address = mail_address(user)
    if not address:
        return ScopeDecision(False, "no_mail")
    if not is_smtp(address):
        return ScopeDecision(False, "invalid_mail")
    domain = address.rsplit("@", 1)[1].lower()
    if domain in scope.exclude_domains:
        return ScopeDecision(False, "domain_excluded", address)
    if scope.include_domains and domain not in scope.include_domains:
        return ScopeDecision(False, "domain_not_included", address)
    if scope.exclude_groups and groups.intersection(scope.exclude_groups):
        return ScopeDecision(False, "excluded_by_group", address, f"member of {sorted(groups.intersection(scope.exclude_groups))[0]}")
    if scope.include_groups and not groups.intersection(scope.include_groups):
        return ScopeDecision(False, "not_in_group", address)
    if scope.filters:
        failed = failing_clause(scope.filter_groups, user)
        if failed is not None:
            return ScopeDecision(False, "filtered_out", address, f"failed: {failed.describe()}")
    return ScopeDecision(True, None, address)
