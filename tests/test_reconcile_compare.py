"""sync.core.reconcile on plain data: what the target's owned contacts say ContactState should correct."""

from __future__ import annotations

from sync.contract.vocabulary import ContactStatus
from sync.core.mapping import contact_name
from sync.core.reconcile import KnownRow, compare_target, drift, in_applied_form, same_value
from sync.core.target import Recipient

ATTR, PREFIX = "CustomAttribute15", "ctcs|t|"


def contact(user: str, guid: str, *, name: str = "", when: str = "2026-01-01T00:00:00+00:00", **values: object) -> Recipient:
    return Recipient(guid, name or contact_name(user), "MailContact", f"{user}@x.com", {ATTR: PREFIX + user},
                     values=values, when_changed=when)


def test_values_compare_in_the_form_exchange_gives_them_back() -> None:
    assert same_value("ExternalEmailAddress", "Adele@Contoso.com", "SMTP:adele@contoso.com")
    assert same_value("CountryOrRegion", "DE", "Germany") and not same_value("CountryOrRegion", "DE", "France")
    assert same_value("Title", "", None) and same_value("Manager", "ctcs-a", "CTCS-A")
    assert same_value("HiddenFromAddressListsEnabled", False, False) and not same_value("HiddenFromAddressListsEnabled", False, True)
    assert in_applied_form({"CountryOrRegion": "Germany", "Title": "x"}) == {"CountryOrRegion": "DE", "Title": "x"}


def test_drift_compares_only_what_ctcs_applied_and_the_listing_returned() -> None:
    applied = {"Name": "n", "Title": "Rep", "MobilePhone": "1", "DisplayName": "A"}
    assert drift(applied, {"Title": "Boss", "DisplayName": "A", "Company": "Other", "Name": "m"}) == {"Title": "Boss"}


def test_each_kind_of_finding() -> None:
    rows = {
        "same": KnownRow(ContactStatus.OK, "g-same", {"Title": "Rep"}),
        "edited": KnownRow(ContactStatus.OK, "g-edited", {"Title": "Rep"}),
        "gone": KnownRow(ContactStatus.OK, "g-gone", {"Title": "Rep"}),
        "moved": KnownRow(ContactStatus.OK, "g-old", {}),
        "taken": KnownRow(ContactStatus.RELEASED, "g-taken", {}),
        "queued": KnownRow(ContactStatus.QUEUED, ""),
        "dup": KnownRow(ContactStatus.OK, "g-dup-kept", {}),
    }
    listing = [
        contact("same", "g-same", Title="Rep"), contact("edited", "g-edited", Title="Boss"),
        contact("moved", "g-new"), contact("lost", "g-lost"), contact("queued", "g-queued"),
        contact("dup", "g-dup-extra", when="2020-01-01T00:00:00+00:00"), contact("dup", "g-dup-kept"),
        contact("orphan", "g-copy", name="copy", when="2020-01-01T00:00:00+00:00"), contact("orphan", "g-orig"),
    ]
    found = compare_target(rows, listing, anchor_attribute=ATTR, anchor_prefix=PREFIX)
    assert found.drifted == {"edited": {"Title": "Boss"}}
    assert found.missing == {"gone": "g-gone"}
    assert {k: r.guid for k, r in found.rebuilt.items()} == {"lost": "g-lost", "queued": "g-queued", "orphan": "g-orig"}
    assert {k: r.guid for k, r in found.relinked.items()} == {"moved": "g-new"}
    assert sorted(r.guid for r in found.duplicates) == ["g-copy", "g-dup-extra"], "the row's, then ctcs's own Name, stays"
    assert found.listed == len(listing)
