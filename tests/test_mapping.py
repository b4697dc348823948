"""Source user → desired contact: the default mapping, templates, clearing, limits, countries, names, anchor."""

from __future__ import annotations

import pytest

from sync.core.mapping import ContactMapper, contact_hash, contact_name
from tests.support.factories import make_pair, make_user

PAIR = make_pair()


def mapped(**fields: object) -> dict[str, object]:
    return ContactMapper(PAIR).map(make_user(**fields), "adele@contoso.com").contact


@pytest.mark.parametrize(
    ("graph_property", "value", "parameter", "expected"),
    [
        ("displayName", "Adele Vance", "DisplayName", "Adele Vance"),
        ("givenName", "Adele", "FirstName", "Adele"),
        ("surname", "Vance", "LastName", "Vance"),
        ("companyName", "Contoso Ltd", "Company", "Contoso Ltd"),
        ("department", "Retail", "Department", "Retail"),
        ("jobTitle", "Retail Manager", "Title", "Retail Manager"),
        ("officeLocation", "18/2111", "Office", "18/2111"),
        ("businessPhones", ["+1 425 555 0109", "+1 425 555 0110"], "Phone", "+1 425 555 0109"),
        ("mobilePhone", "+1 425 555 0111", "MobilePhone", "+1 425 555 0111"),
        ("faxNumber", "+1 425 555 0112", "Fax", "+1 425 555 0112"),
        ("streetAddress", "205 108th Ave NE", "StreetAddress", "205 108th Ave NE"),
        ("city", "Bellevue", "City", "Bellevue"),
        ("state", "WA", "StateOrProvince", "WA"),
        ("postalCode", "98004", "PostalCode", "98004"),
        ("country", "United States", "CountryOrRegion", "US"),
    ],
)
def test_default_mapping(graph_property: str, value: object, parameter: str, expected: str) -> None:
    assert mapped(**{graph_property: value})[parameter] == expected


@pytest.mark.parametrize(
    ("graph_property", "parameter"),
    [("jobTitle", "Title"), ("department", "Department"), ("businessPhones", "Phone"), ("country", "CountryOrRegion"),
     ("city", "City"), ("givenName", "FirstName")],
)
@pytest.mark.parametrize("cleared", [None, "", [], "   "])
def test_cleared_source_values_clear_the_contact(graph_property: str, parameter: str, cleared: object) -> None:
    assert mapped(**{graph_property: cleared})[parameter] == ""


def test_absent_properties_clear_too() -> None:
    user = make_user()
    del user["jobTitle"]
    assert ContactMapper(PAIR).map(user, "a@contoso.com").contact["Title"] == ""


def test_mail_anchor_name_and_alias() -> None:
    contact = ContactMapper(PAIR).map(make_user(id="AAAAAAAA-0000-0000-0000-000000000001"), "adele@contoso.com").contact
    assert contact["ExternalEmailAddress"] == "adele@contoso.com"
    assert contact["Name"] == contact["Alias"] == "ctcs-aaaaaaaa-0000-0000-0000-000000000001"
    assert contact["CustomAttribute15"] == f"ctcs|{PAIR.source.tenant_id}|aaaaaaaa-0000-0000-0000-000000000001"
    assert contact["HiddenFromAddressListsEnabled"] is False


def test_name_is_safe_and_short_whatever_the_id() -> None:
    name = contact_name("weird id/with'chars" + "x" * 100)
    assert len(name) <= 64 and all(ch.isalnum() or ch == "-" for ch in name)


@pytest.mark.parametrize(
    ("country", "expected"),
    [("Germany", "DE"), ("DE", "DE"), ("deu", "DE"), ("UK", "GB"), ("United Kingdom", "GB"), ("USA", "US"),
     ("côte d'ivoire", "CI"), ("Korea, Republic of", "KR")],
)
def test_countries_become_iso_codes(country: str, expected: str) -> None:
    assert mapped(country=country)["CountryOrRegion"] == expected


@pytest.mark.parametrize("country", ["Narnia", "Deutschland", "Earth", "12"])
def test_unknown_countries_are_dropped_with_a_warning(country: str) -> None:
    result = ContactMapper(PAIR).map(make_user(country=country), "a@contoso.com")
    assert result.contact["CountryOrRegion"] == ""
    assert [w.split(":")[0] for w in result.warnings] == ["country_dropped"]


def test_values_are_trimmed_to_exchange_limits() -> None:
    result = ContactMapper(PAIR).map(make_user(jobTitle="T" * 300, displayName="D" * 300), "a@contoso.com")
    assert len(result.contact["Title"]) == 128
    assert len(result.contact["DisplayName"]) == 256
    assert sorted(w.split(":")[0] for w in result.warnings) == ["truncated", "truncated"]


def test_quotes_non_latin_and_control_characters() -> None:
    contact = mapped(displayName="Seán O'Brien \"Bob\"", givenName="Дмитрий", surname="山田\u0000\u0007", city="القاهرة")
    assert contact["DisplayName"] == "Seán O'Brien \"Bob\""
    assert contact["FirstName"] == "Дмитрий"
    assert contact["LastName"] == "山田"
    assert contact["City"] == "القاهرة"


def test_templates_and_overrides() -> None:
    pair = make_pair(contact={
        "display_name": "{displayName} ({companyName})",
        "attributes": {"Department": "", "CustomAttribute1": "{employeeId}", "Notes": "from {source.name}"},
    })
    contact = ContactMapper(pair).map(make_user(displayName="Adele", companyName="Contoso", employeeId="E1"), "a@c.com").contact
    assert contact["DisplayName"] == "Adele (Contoso)"
    assert contact["CustomAttribute1"] == "E1"
    assert contact["Notes"] == "from Contoso"
    assert "Department" not in contact  # mapped to "": not managed at all


def test_template_with_missing_value_reads_cleanly() -> None:
    pair = make_pair(contact={"display_name": "{displayName} ({companyName})"})
    contact = ContactMapper(pair).map(make_user(displayName="Adele", companyName=None), "a@c.com").contact
    assert contact["DisplayName"] == "Adele"


def test_empty_display_name_falls_back_to_the_address() -> None:
    assert mapped(displayName="")["DisplayName"] == "adele@contoso.com"


def test_hash_changes_with_any_value_and_only_then() -> None:
    first = ContactMapper(PAIR).map(make_user(), "a@c.com")
    again = ContactMapper(PAIR).map(make_user(), "a@c.com")
    changed = ContactMapper(PAIR).map(make_user(jobTitle="Boss"), "a@c.com")
    assert first.hash == again.hash == contact_hash(first.contact)
    assert changed.hash != first.hash


def test_hidden_from_gal_setting() -> None:
    pair = make_pair(contact={"hidden_from_gal": True})
    assert ContactMapper(pair).map(make_user(), "a@c.com").contact["HiddenFromAddressListsEnabled"] is True
