"""`ExchangeTarget`: a target organisation's mail contacts, as cmdlets on its admin API (`AdminApiClient`).

Implements `sync.core.target.Target`: find recipients by anchor, address or name with `Get-Recipient` (concurrent
look-ups share one call: `sync.exchange.lookup`); create (New-MailContact, then Set-MailContact with the anchor and
Set-Contact for the rest); update only the changed parameters; remove; and list this pair's contacts by anchor
prefix.
"""

from __future__ import annotations

import contextlib
import re
import threading
from collections import Counter
from collections.abc import Collection, Iterable, Iterator, Mapping
from dataclasses import replace
from typing import Any

from sync.contract.contact_params import NEW_MAIL_CONTACT_PARAMS, ContactParams, split_by_cmdlet
from sync.core.target import UNLISTED_PARAMETERS, Recipient
from sync.errors import ManagerNotFound, TargetError, TargetRejected
from sync.exchange import opath
from sync.exchange.client import NAME_EXISTS, AdminApiClient, ConflictAfterRetry
from sync.exchange.lookup import CUSTOM_ATTRIBUTES, MAX_KEYS, LookupCoalescer, LookupKey, RecipientLookup, recipient_of

_ANCHOR_ATTRIBUTE = re.compile(r"^CustomAttribute([1-9]|1[0-5])$")


class ExchangeTarget:
    """Mail contacts of one target organisation, through `api` (which it closes with itself).

    `lookup_batch` is how many concurrent look-ups may share one Get-Recipient (1: one call each)."""

    def __init__(self, api: AdminApiClient, *, lookup_batch: int = MAX_KEYS) -> None:
        self.api = api
        self.lookup_batch = max(1, lookup_batch)
        self._lookups: dict[str, tuple[RecipientLookup, LookupCoalescer]] = {}
        self._lookups_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"<ExchangeTarget {self.api.url}>"

    def close(self) -> None:
        self.api.close()

    def __enter__(self) -> ExchangeTarget:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    @property
    def requests(self) -> Counter[str]:
        """HTTP requests per cmdlet so far, for run reports and tests."""
        return self.api.requests

    @property
    def total_requests(self) -> int:
        return self.api.total_requests

    def thread_counts(self) -> tuple[int, int]:
        return self.api.thread_counts()

    def invoke(
        self, cmdlet: str, parameters: Mapping[str, Any], *, select: tuple[str, ...] = (), retry_not_found: bool = False,
        paced: bool = True,
    ) -> list[dict[str, Any]]:
        return self.api.invoke(cmdlet, parameters, select=select, retry_not_found=retry_not_found, paced=paced)

    # --- the Target protocol -------------------------------------------------------------------------------

    def find_recipients(
        self, *, anchor_attribute: str, anchor: str, address: str, name: str, guid: str = ""
    ) -> list[Recipient]:
        """Get-Recipient with an OR filter of the values given (empty ones are left out), shared with the look-ups
        other threads make at the same moment."""
        key = LookupKey(anchor=anchor, address=address, name=name, guid=guid)
        lookup, coalescer = self._lookup(anchor_attribute)
        if not key.clauses(lookup.anchor_attribute):
            return []
        if self.lookup_batch == 1:
            return lookup.find_many([key])[key]
        return coalescer.find(key)

    def find_many(self, anchor_attribute: str, keys: Iterable[LookupKey]) -> dict[LookupKey, list[Recipient]]:
        """Many keys at once (anchors, addresses, names, Guids): one Get-Recipient per `lookup_batch` keys."""
        return self._lookup(anchor_attribute)[0].find_many(keys)

    def recipients_by_guid(self, anchor_attribute: str, guids: Iterable[str]) -> dict[str, Recipient]:
        keys = [LookupKey(guid=guid) for guid in dict.fromkeys(g.lower() for g in guids if g)]
        found = self.find_many(anchor_attribute, keys)
        return {key.guid: matches[0] for key, matches in found.items() if matches}

    def _lookup(self, anchor_attribute: str) -> tuple[RecipientLookup, LookupCoalescer]:
        attribute = _anchor_attribute(anchor_attribute)
        with self._lookups_lock:
            if attribute not in self._lookups:
                lookup = RecipientLookup(self.api, anchor_attribute=attribute, max_keys=self.lookup_batch)
                hold = self.api.pacer.slot if self.api.pacer is not None else None
                self._lookups[attribute] = (lookup, LookupCoalescer(lookup.find_many, max_keys=self.lookup_batch,
                                                                    hold=hold))
            return self._lookups[attribute]

    def create(self, contact: ContactParams) -> Recipient:
        """New-MailContact, then Set-MailContact (which carries the anchor) and Set-Contact for the rest.

        Empty values mean "not set" on a new contact and are not sent. If a Set-* fails for good after the New
        succeeded, the half-made contact (it has no anchor yet, so nothing would ever find it as ours) is
        removed again before the error is raised.
        """
        for required in ("Name", "ExternalEmailAddress"):
            if not contact.get(required):
                raise ValueError(f"a new mail contact needs {required}")
        wanted = {key: value for key, value in contact.items() if not _is_empty(value)}
        new_params = {key: value for key, value in wanted.items() if key in NEW_MAIL_CONTACT_PARAMS}
        rest = {key: value for key, value in wanted.items() if key not in NEW_MAIL_CONTACT_PARAMS}
        try:
            created = self.invoke("New-MailContact", new_params)
        except ConflictAfterRetry:
            created = self._own_earlier_attempt(wanted)
        if not created or not created[0].get("Guid"):
            raise TargetError("New-MailContact answered without the new contact's Guid", status=200)
        row = created[0]
        guid = str(row["Guid"])
        try:
            for cmdlet, params in _in_cmdlet_order(split_by_cmdlet(rest)):
                self.invoke(cmdlet, {"Identity": guid, **params}, retry_not_found=True)
        except ManagerNotFound:
            raise  # Set-MailContact ran first: the contact carries its anchor, and the retried op adopts it
        except TargetError:
            self._remove_quietly(guid)
            raise
        attributes = {key: str(value) for key, value in wanted.items() if key in CUSTOM_ATTRIBUTES}
        primary = str(row.get("PrimarySmtpAddress") or _strip_prefix(str(contact["ExternalEmailAddress"])))
        return Recipient(
            guid=guid,
            name=str(row.get("Name") or contact["Name"]),
            recipient_type=str(row.get("RecipientTypeDetails") or "MailContact"),
            primary_address=primary,
            custom_attributes=attributes,
        )

    def _own_earlier_attempt(self, wanted: Mapping[str, Any]) -> list[dict[str, Any]]:
        """The contact a retried New-MailContact had already created, if it is exactly that: same name and
        address, and not a single custom attribute set yet (so it carries no anchor, ours or anyone's). Adopting it
        instead of failing on the taken name is what keeps a retried create from leaving a duplicate (invariant 3)."""
        rows = self.invoke("Get-MailContact", {"Identity": str(wanted["Name"])})
        address = _strip_prefix(str(wanted["ExternalEmailAddress"])).lower()
        fresh = [
            row for row in rows
            if _strip_prefix(str(row.get("ExternalEmailAddress") or "")).lower() == address
            and not any(row.get(name) for name in CUSTOM_ATTRIBUTES)
        ]
        if len(fresh) != 1:
            raise TargetRejected(
                f"New-MailContact: the name {wanted['Name']!r} is taken by an object this call did not create",
                status=400, exception_type=NAME_EXISTS,
            )
        return fresh

    def update(self, guid: str, changes: ContactParams) -> None:
        """One Set-* per cmdlet that owns a changed parameter; empty values clear the property."""
        _require_guid(guid)
        for cmdlet, params in _in_cmdlet_order(split_by_cmdlet(changes)):
            self.invoke(cmdlet, {"Identity": guid, **{key: _clearing(value) for key, value in params.items()}})

    def delete(self, guid: str) -> None:
        """Remove-MailContact; `TargetNotFound` when it is already gone."""
        _require_guid(guid)
        self.invoke("Remove-MailContact", {"Identity": guid, "Confirm": False})

    def list_owned(self, anchor_attribute: str, anchor_prefix: str) -> Iterator[Recipient]:
        """Every mail contact whose anchor starts with `anchor_prefix`, page by page: one paged Get-Recipient, which
        (unlike Get-MailContact) returns most Set-Contact parameters too, trimmed by `$select` to what ctcs manages."""
        attribute = _anchor_attribute(anchor_attribute)
        params = {"RecipientTypeDetails": "MailContact", "Filter": opath.starts_with(attribute, anchor_prefix),
                  "ResultSize": "Unlimited"}
        for row in self.api.iter_rows("Get-Recipient", params, select=LISTED_PROPERTIES):
            recipient = recipient_of(row, default_type="MailContact")
            # -like is a pattern match; the exact prefix check keeps "ours" exact (invariant 1).
            if recipient.anchor(attribute).startswith(anchor_prefix):
                yield replace(recipient, values=_contact_values(row), when_changed=str(row.get("WhenChanged") or ""))

    def holds_owned(self, anchor_attribute: str, anchor_prefix: str) -> bool:
        attribute = _anchor_attribute(anchor_attribute)
        rows = self.invoke("Get-Recipient", {"RecipientTypeDetails": "MailContact", "ResultSize": 1,
                                             "Filter": opath.starts_with(attribute, anchor_prefix)},
                           select=("Guid", attribute), paced=False)
        return any(str(row.get(attribute) or "").startswith(anchor_prefix) for row in rows)

    def contact_details(self, guids: Collection[str]) -> dict[str, Mapping[str, Any]]:
        """Get-Contact of every mail contact, paged ($select: Guid and the unlisted parameters): Get-Contact's filter
        cannot name the anchor (a custom attribute is not a property of the contact object), so the wanted Guids are
        picked from the pages."""
        wanted = {guid.lower() for guid in guids}
        found: dict[str, Mapping[str, Any]] = {}
        if not wanted:
            return found
        names = sorted(UNLISTED_PARAMETERS - {"MailTip"})
        params = {"RecipientTypeDetails": "MailContact", "ResultSize": "Unlimited"}
        for row in self.api.iter_rows("Get-Contact", params, select=("Guid", *names)):
            guid = str(row.get("Guid") or "").lower()
            if guid in wanted:
                found[guid] = {name: _plain(row.get(name)) for name in names if name in row}
        return found

    def read_contact(self, guid: str) -> dict[str, Any]:
        """Get-Contact for the parameters Get-Recipient does not return (`UNLISTED_PARAMETERS`)."""
        _require_guid(guid)
        rows = self.invoke("Get-Contact", {"Identity": guid}, select=("Guid", *sorted(UNLISTED_PARAMETERS - {"MailTip"})))
        if not rows:
            return {}
        return {name: _plain(rows[0].get(name)) for name in UNLISTED_PARAMETERS - {"MailTip"} if name in rows[0]}

    # --- what the connection test reads ------------------------------------------------------------------------

    def first_recipient(self) -> dict[str, Any] | None:
        """`Get-Recipient -ResultSize 1`: the cheapest call that proves token, permission and Exchange role."""
        rows = self.invoke("Get-Recipient", {"ResultSize": 1}, select=("Guid", "Name", "DistinguishedName"))
        return rows[0] if rows else None

    def count_foreign_anchors(self, anchor_attribute: str, anchor_prefix: str, *, limit: int = 1000) -> int:
        """Mail contacts whose anchor attribute holds a value that is not a ctcs anchor (`anchor_prefix`, e.g.
        `ctcs|`): another tool uses the attribute. Counted up to `limit`."""
        attribute = _anchor_attribute(anchor_attribute)
        rows = self.invoke(
            "Get-Recipient",
            {"RecipientTypeDetails": "MailContact", "ResultSize": limit,
             "Filter": opath.all_of(opath.is_set(attribute), opath.not_starts_with(attribute, anchor_prefix))},
            select=("Guid", attribute),
        )
        return sum(1 for row in rows if str(row.get(attribute) or "") and not str(row[attribute]).startswith(anchor_prefix))

    def _remove_quietly(self, guid: str) -> None:
        # The original failure is the one to report; a failed rollback leaves an anchorless contact behind.
        with contextlib.suppress(TargetError):
            self.invoke("Remove-MailContact", {"Identity": guid, "Confirm": False})


# What the reconcile listing asks Get-Recipient for: identity, the anchor and every managed parameter it returns.
LISTED_PARAMETERS = ("DisplayName", "ExternalEmailAddress", "Alias", "HiddenFromAddressListsEnabled", "FirstName",
                     "LastName", "Company", "Department", "Title", "Office", "Phone", "City", "StateOrProvince",
                     "PostalCode", "CountryOrRegion", "Manager", "Notes", *CUSTOM_ATTRIBUTES)
LISTED_PROPERTIES = ("Guid", "Name", "RecipientTypeDetails", "PrimarySmtpAddress", "EmailAddresses", "WhenChanged",
                     *LISTED_PARAMETERS)


def _contact_values(row: Mapping[str, Any]) -> dict[str, Any]:
    """The managed parameters of a listed contact, in the form ctcs writes them (no `SMTP:` prefix, "" for unset)."""
    values: dict[str, Any] = {}
    for name in LISTED_PARAMETERS:
        if name not in row:
            continue
        value = row[name]
        if name == "HiddenFromAddressListsEnabled":
            values[name] = value is True or str(value).lower() == "true"
        elif name == "ExternalEmailAddress":
            values[name] = _strip_prefix(str(value or ""))
        else:
            values[name] = _plain(value)
    return values


def _plain(value: object) -> str:
    return "" if value is None else str(value)


def _in_cmdlet_order(groups: dict[str, dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    # Set-MailContact first: on a create it carries the anchor, which makes the contact ours.
    order = {"Set-MailContact": 0, "Set-Contact": 1}
    return sorted(groups.items(), key=lambda item: order.get(item[0], 2))


def _anchor_attribute(name: str) -> str:
    if not _ANCHOR_ATTRIBUTE.match(name):
        raise ValueError(f"{name!r} is not CustomAttribute1..15")
    return name


def _require_guid(guid: str) -> None:
    if not isinstance(guid, str) or not guid.strip():
        raise ValueError("an empty contact Guid would name no object (or every object)")


def _is_empty(value: object) -> bool:
    return value is None or value == "" or value == []


def _clearing(value: object) -> object:
    # The admin API clears a property given $null; an empty string is refused by some parameters.
    return None if value == "" else value


def _strip_prefix(address: str) -> str:
    return address.split(":", 1)[1] if address[:5].lower() == "smtp:" else address
