"""What the engine needs from a target tenant: find, create, change and remove mail contacts.

The Exchange Online implementation lives in `sync.exchange.contacts`. Identities are contact Guids; the engine
only ever passes a Guid it found by its own anchor or recorded after creating the contact itself (invariant 1).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from sync.contract.contact_params import ContactParams


@dataclass(frozen=True)
class Recipient:
    """Any recipient of the target organisation, as far as the engine cares."""

    guid: str
    name: str
    recipient_type: str  # RecipientTypeDetails: MailContact, UserMailbox, GuestMailUser, MailUser, ...
    primary_address: str
    custom_attributes: Mapping[str, str] = field(default_factory=dict)  # CustomAttribute1..15 that are set
    addresses: tuple[str, ...] = ()  # every proxy address without its prefix, when the lookup returned them
    values: Mapping[str, Any] = field(default_factory=dict)  # contact parameters the listing returned, as Exchange holds them
    when_changed: str = ""  # Exchange's WhenChanged (ISO 8601), when the listing returned it

    def anchor(self, attribute: str) -> str:
        return self.custom_attributes.get(attribute, "")


class Target(Protocol):
    """A target organisation's mail contacts."""

    def find_recipients(
        self, *, anchor_attribute: str, anchor: str, address: str, name: str, guid: str = ""
    ) -> list[Recipient]:
        """Every recipient that carries `anchor`, holds `address` (any proxy address), is called `name` or has
        the Guid `guid`.

        One call, so a create costs one look-up: the engine adopts its own contact, or reports who holds
        the address; an update or delete checks that its contact still carries the anchor. Concurrent look-ups
        may share one call. Values are escaped by the implementation.
        """
        ...

    def recipients_by_guid(self, anchor_attribute: str, guids: Iterable[str]) -> dict[str, Recipient]:
        """The recipients with these Guids (lower-cased Guid -> recipient; absent when gone), many per call."""
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
        """Every mail contact whose anchor attribute starts with `anchor_prefix`, page by page, with the contact
        parameters one listing can return in `values` (the reconcile round compares them)."""
        ...

    def holds_owned(self, anchor_attribute: str, anchor_prefix: str) -> bool:
        """Whether any mail contact carries an anchor with this prefix (one call, one object at most)."""
        ...

    def read_contact(self, guid: str) -> Mapping[str, Any]:
        """The contact parameters the listing does not return (`UNLISTED_PARAMETERS`), read for one contact."""
        ...

    def contact_details(self, guids: Collection[str]) -> dict[str, Mapping[str, Any]]:
        """`UNLISTED_PARAMETERS` of many contacts (lower-cased Guid -> values): one paged listing of the
        organisation's contacts, for rebuilding lost rows, where a call per contact would cost thousands."""
        ...


# Contact parameters Get-Recipient does not return (docs/reconcile.md; Microsoft's Get-Recipient reference):
# a reconcile reads them with one Get-Contact for a contact changed behind ctcs's back.
UNLISTED_PARAMETERS = frozenset({"Initials", "MobilePhone", "HomePhone", "Fax", "StreetAddress", "MailTip"})
