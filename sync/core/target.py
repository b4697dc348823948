"""What the engine needs from a target tenant: find, create, change and remove mail contacts.

The Exchange Online implementation lives in `sync.exchange.contacts`. Identities are contact Guids; the engine
only ever passes a Guid it found by its own anchor or recorded after creating the contact itself (invariant 1).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Protocol

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
