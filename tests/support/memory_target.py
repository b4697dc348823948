"""An in-memory Exchange organisation behind the `Target` protocol, enforcing the rules Exchange enforces.

For worker and engine tests that need no HTTP: unique Name, Alias and addresses across every recipient,
the 64/256/1024 limits, Guid identities. Faults can be queued with `fail_next`.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from sync.contract.contact_params import NEW_MAIL_CONTACT_PARAMS, split_by_cmdlet
from sync.core.target import Recipient
from sync.errors import AddressInUse, TargetError, TargetNotFound, TargetRejected

LIMITS = {"Name": 64, "Alias": 64, "DisplayName": 256, **{f"CustomAttribute{n}": 1024 for n in range(1, 16)}}


@dataclass
class StoredRecipient:
    guid: str
    kind: str
    params: dict[str, Any]
    addresses: set[str] = field(default_factory=set)

    def as_recipient(self) -> Recipient:
        """The recipient as a look-up returns it."""
        attributes = {k: str(v) for k, v in self.params.items() if k.startswith("CustomAttribute") and v}
        return Recipient(self.guid, self.params["Name"], self.kind, self.params.get("ExternalEmailAddress", ""), attributes)


class MemoryTarget:
    def __init__(self) -> None:
        self.recipients: dict[str, StoredRecipient] = {}
        self.calls: Counter[str] = Counter()
        self.failures: list[TargetError] = []
        self.broken: dict[str, TargetError] = {}  # address → error raised on every call about it

    # --- test helpers -------------------------------------------------------------------------------------------
    def add_recipient(self, kind: str, name: str, address: str, **params: Any) -> str:
        guid = str(uuid.uuid4())
        self._check_unique(guid, name, params.get("Alias", name), address)
        self.recipients[guid] = StoredRecipient(
            guid, kind, {"Name": name, "Alias": params.pop("Alias", name), "ExternalEmailAddress": address, **params},
            {address.lower()},
        )
        return guid

    def fail_next(self, *errors: TargetError) -> None:
        self.failures.extend(errors)

    def break_address(self, address: str, error: TargetError | None) -> None:
        """Every call about `address` fails with `error` until it is set to None."""
        if error is None:
            self.broken.pop(address.lower(), None)
        else:
            self.broken[address.lower()] = error

    def contacts(self) -> list[StoredRecipient]:
        return [r for r in self.recipients.values() if r.kind == "MailContact"]

    def snapshot(self) -> dict[str, dict[str, Any]]:
        """Every recipient's parameters by Name (Guids differ between runs)."""
        return {r.params["Name"]: dict(r.params) for r in self.recipients.values()}

    # --- Target protocol ----------------------------------------------------------------------------------------
    def find_recipients(
        self, *, anchor_attribute: str, anchor: str, address: str, name: str, guid: str = ""
    ) -> list[Recipient]:
        self._call("Get-Recipient")
        if address.lower() in self.broken:
            raise self.broken[address.lower()]
        found = []
        for r in self.recipients.values():
            if (anchor and r.params.get(anchor_attribute) == anchor) or (address and address.lower() in r.addresses) or (
                name and r.params["Name"] == name
            ) or (guid and r.guid.lower() == guid.lower()):
                found.append(r.as_recipient())
        return found

    def create(self, contact: Mapping[str, Any]) -> Recipient:
        self._call("New-MailContact")
        name, address = str(contact["Name"]), str(contact["ExternalEmailAddress"])
        self._check_values(contact)
        guid = str(uuid.uuid4())
        self._check_unique(guid, name, str(contact.get("Alias", name)), address)
        stored = StoredRecipient(guid, "MailContact", {k: v for k, v in contact.items() if k in NEW_MAIL_CONTACT_PARAMS})
        stored.addresses = {address.lower()}
        self.recipients[guid] = stored
        rest = {k: v for k, v in contact.items() if k not in NEW_MAIL_CONTACT_PARAMS and v != ""}
        for cmdlet, params in split_by_cmdlet(rest).items():
            self._call(cmdlet)
            stored.params.update(params)
        return stored.as_recipient()

    def update(self, guid: str, changes: Mapping[str, Any]) -> None:
        stored = self._get(guid)
        self._check_values(changes)
        if "ExternalEmailAddress" in changes or "Alias" in changes:
            self._check_unique(
                guid, stored.params["Name"], str(changes.get("Alias", stored.params.get("Alias"))),
                str(changes.get("ExternalEmailAddress", stored.params["ExternalEmailAddress"])),
            )
        for cmdlet, params in split_by_cmdlet(changes).items():
            self._call(cmdlet)
            stored.params.update(params)
        if "ExternalEmailAddress" in changes:
            stored.addresses = {str(changes["ExternalEmailAddress"]).lower()}

    def delete(self, guid: str) -> None:
        self._call("Remove-MailContact")
        stored = self._get(guid)
        if stored.kind != "MailContact":
            raise TargetRejected(f"{guid} is not a mail contact")
        del self.recipients[guid]

    def list_owned(self, anchor_attribute: str, anchor_prefix: str) -> Iterator[Recipient]:
        self._call("Get-MailContact")
        for r in self.contacts():
            if str(r.params.get(anchor_attribute, "")).startswith(anchor_prefix):
                yield r.as_recipient()

    def recipients_by_guid(self, anchor_attribute: str, guids: Iterable[str]) -> dict[str, Recipient]:
        self._call("Get-Recipient")
        wanted = {guid.lower() for guid in guids}
        return {r.guid.lower(): r.as_recipient() for r in self.recipients.values() if r.guid.lower() in wanted}

    def holds_owned(self, anchor_attribute: str, anchor_prefix: str) -> bool:
        self._call("Get-Recipient")
        return any(str(r.params.get(anchor_attribute, "")).startswith(anchor_prefix) for r in self.contacts())

    def contact_details(self, guids: Iterable[str]) -> dict[str, Mapping[str, Any]]:
        self._call("Get-Contact")
        wanted = {guid.lower() for guid in guids}
        return {r.guid.lower(): dict(r.params) for r in self.contacts() if r.guid.lower() in wanted}

    def read_contact(self, guid: str) -> dict[str, Any]:
        self._call("Get-Contact")
        return dict(self._get(guid).params)

    # --- rules --------------------------------------------------------------------------------------------------
    def _call(self, cmdlet: str) -> None:
        self.calls[cmdlet] += 1
        if self.failures:
            raise self.failures.pop(0)

    def _get(self, guid: str) -> StoredRecipient:
        if not guid:
            raise TargetRejected("empty Identity")
        if guid not in self.recipients:
            raise TargetNotFound(f"The operation couldn't be performed because object '{guid}' couldn't be found.")
        return self.recipients[guid]

    def _check_values(self, params: Mapping[str, Any]) -> None:
        for key, value in params.items():
            limit = LIMITS.get(key)
            if limit is not None and isinstance(value, str) and len(value) > limit:
                raise TargetRejected(f"{key} is longer than {limit} characters")

    def _check_unique(self, guid: str, name: str, alias: str, address: str) -> None:
        for other in self.recipients.values():
            if other.guid == guid:
                continue
            if other.params["Name"] == name:
                raise TargetRejected(f"The object 'CN={name}' already exists.", exception_type="ADObjectAlreadyExistsException")
            if other.params.get("Alias") == alias:
                raise TargetRejected(f"Alias {alias} is already used")
            if address.lower() in other.addresses:
                raise AddressInUse(f"The proxy address SMTP:{address} is already being used by {other.params['Name']}", holder=other.params["Name"])
