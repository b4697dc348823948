"""Exchange mail contact parameters, and which cmdlet sets each (Microsoft's reference of each mail contact cmdlet).

Both sides of the contract use these names: the pair file's `contact.attributes`, the planner's desired contact, the
op message and the Exchange edge.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

ContactParams = Mapping[str, Any]
"""Contact parameters by their cmdlet parameter name (`DisplayName`, `Company`, `CustomAttribute15`, ...)."""

# Which cmdlet sets which contact parameter (the parameters Microsoft's reference lists for each cmdlet).
NEW_MAIL_CONTACT_PARAMS = frozenset({"Name", "ExternalEmailAddress", "Alias", "DisplayName", "FirstName", "LastName", "Initials"})
SET_MAIL_CONTACT_PARAMS = frozenset(
    {"DisplayName", "ExternalEmailAddress", "Alias", "EmailAddresses", "HiddenFromAddressListsEnabled", "MailTip"}
    | {f"CustomAttribute{n}" for n in range(1, 16)}
    | {f"ExtensionCustomAttribute{n}" for n in range(1, 6)}
)
SET_CONTACT_PARAMS = frozenset(
    {
        "FirstName", "LastName", "Initials", "Company", "Department", "Title", "Office", "Phone", "MobilePhone",
        "HomePhone", "Fax", "StreetAddress", "City", "StateOrProvince", "PostalCode", "CountryOrRegion", "Manager",
        "Notes",
    }
)


def split_by_cmdlet(changes: ContactParams) -> dict[str, dict[str, Any]]:
    """Group parameters by the Set-* cmdlet that changes them; Set-MailContact wins where both could."""
    groups: dict[str, dict[str, Any]] = {}
    for name, value in changes.items():
        if name in SET_MAIL_CONTACT_PARAMS:
            groups.setdefault("Set-MailContact", {})[name] = value
        elif name in SET_CONTACT_PARAMS:
            groups.setdefault("Set-Contact", {})[name] = value
        elif name != "Name":
            raise ValueError(f"no Set-* cmdlet changes the contact parameter {name!r}")
    return groups
