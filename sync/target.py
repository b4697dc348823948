"""What the engine needs from a target tenant: find, create, change and remove mail contacts.

The Exchange Online implementation lives in `sync.exchange_target`. Identities are contact Guids; the engine
only ever passes a Guid it found by its own anchor or recorded after creating the contact itself.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

ContactParams = Mapping[str, Any]
"""Contact parameters by their cmdlet parameter name (`DisplayName`, `Company`, `CustomAttribute15`, ...)."""


@dataclass(frozen=True)
class Recipient:
    """Any recipient of the target organisation, as far as the engine cares."""

    guid: str
    name: str
    recipient_type: str  # RecipientTypeDetails: MailContact, UserMailbox, GuestMailUser, MailUser, ...
    primary_address: str
    custom_attributes: Mapping[str, str] = field(default_factory=dict)  # CustomAttribute1..15 that are set

    def anchor(self, attribute: str) -> str:
        return self.custom_attributes.get(attribute, "")


class Target(Protocol):
    """A target organisation's mail contacts."""

    def find_recipients(self, *, anchor_attribute: str, anchor: str, address: str, name: str) -> list[Recipient]:
        """Every recipient that carries `anchor`, holds `address` (any proxy address) or is called `name`.

        One call, so a create costs one look-up: the engine adopts its own contact, or reports who holds
        the address. Values are escaped by the implementation.
        """
        ...

    def create(self, contact: ContactParams) -> Recipient:
        """Create a mail contact with every parameter of `contact` (New-MailContact, then Set-MailContact and
        Set-Contact for the parameters New-MailContact does not take). Raises `AddressInUse`,
        `TargetRejected`, `TargetTransient`."""
        ...

    def update(self, guid: str, changes: ContactParams) -> None:
        """Set only the given parameters (Set-MailContact and/or Set-Contact, whichever they belong to)."""
        ...

    def delete(self, guid: str) -> None:
        """Remove the mail contact. Raises `TargetNotFound` when it is already gone."""
        ...

    def list_owned(self, anchor_attribute: str, anchor_prefix: str) -> Iterator[Recipient]:
        """Every mail contact whose anchor attribute starts with `anchor_prefix` (to rebuild state)."""
        ...


# Which cmdlet sets which contact parameter (reference: exchange-admin-api.md, "Mail contact cmdlets").
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
