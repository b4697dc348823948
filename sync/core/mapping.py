"""Source user → desired mail contact (pure).

The desired contact holds every parameter ctcs manages for the pair, with "" for a cleared value, so that a
value removed in the source is removed in the target too. Parameters a pair maps to "" are not managed at all.

`Manager` is not a template: it names the manager's own contact (`contact_name` of the manager's id), which the
planner decides (sync.core.managers) and passes in; `"Manager": ""` in the pair's attributes turns it off.
"""

from __future__ import annotations

import hashlib
import json
import re
import string
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sync.contract.countries import country_code
from sync.contract.pairs import ANCHOR_ATTRIBUTES, TenantPair
from sync.core.source import SourceUser

DesiredContact = dict[str, Any]

# The default mapping (docs/pair-file.md, "Default mapping"; DisplayName comes from the pair;
# Manager, a link rather than a template, is added by `ContactMapper.map`).
DEFAULT_TEMPLATES: dict[str, str] = {
    "FirstName": "{givenName}",
    "LastName": "{surname}",
    "Company": "{companyName}",
    "Department": "{department}",
    "Title": "{jobTitle}",
    "Office": "{officeLocation}",
    "Phone": "{businessPhones}",
    "MobilePhone": "{mobilePhone}",
    "Fax": "{faxNumber}",
    "StreetAddress": "{streetAddress}",
    "City": "{city}",
    "StateOrProvince": "{state}",
    "PostalCode": "{postalCode}",
    "CountryOrRegion": "{country}",
}

# Longest value Exchange (and the Active Directory schema under it) keeps for each parameter.
LIMITS: dict[str, int] = {
    "DisplayName": 256, "FirstName": 64, "LastName": 64, "Initials": 6, "Company": 64, "Department": 64,
    "Title": 128, "Office": 128, "Phone": 64, "MobilePhone": 64, "HomePhone": 64, "Fax": 64,
    "StreetAddress": 1024, "City": 128, "StateOrProvince": 128, "PostalCode": 40, "Notes": 1024, "MailTip": 175,
    **{f"CustomAttribute{n}": 1024 for n in range(1, 16)},
    **{f"ExtensionCustomAttribute{n}": 2048 for n in range(1, 6)},
}
NAME_PREFIX = "ctcs-"
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]+")
_EMPTY_BRACKETS = re.compile(r"\(\s*\)|\[\s*\]")
_SPACES = re.compile(r"\s{2,}")
_UNSAFE_NAME = re.compile(r"[^a-z0-9-]")
ANCHOR_MARK = "ctcs|"  # how every anchor begins (TenantPair.anchor_prefix): a mapped custom attribute never does


@dataclass
class Mapped:
    contact: DesiredContact
    hash: str
    warnings: list[str] = field(default_factory=list)


def contact_name(source_object_id: str) -> str:
    """Name and Alias of a contact: unique per source object, safe characters, within 64 characters."""
    return (NAME_PREFIX + _UNSAFE_NAME.sub("", source_object_id.lower()))[:64]


def contact_hash(contact: Mapping[str, Any]) -> str:
    canonical = json.dumps(contact, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:32]


def clean_text(value: Any) -> str:
    """A source value as contact text: lists give their first entry, control characters become spaces."""
    if value is None:
        return ""
    if isinstance(value, list | tuple):
        value = next((item for item in value if item not in (None, "")), "")
    if isinstance(value, bool):
        return "True" if value else "False"
    text = str(value)
    if _CONTROL.search(text):
        text = _CONTROL.sub(" ", text)
    return text.strip()


def _lookup(user: SourceUser, path: str, source_name: str) -> Any:
    if path == "source.name":
        return source_name
    if "." not in path:
        return user.get(path)
    value: Any = user
    for part in path.split("."):
        value = value.get(part) if isinstance(value, Mapping) else None
    return value


class Template:
    """A `{attribute}` template, parsed once per pair and rendered per user."""

    def __init__(self, text: str) -> None:
        self.parts = [(literal, name) for literal, name, _, _ in string.Formatter().parse(text)]
        self.single = self.parts[0][1] if len(self.parts) == 1 and not self.parts[0][0] else None

    def render(self, user: SourceUser, source_name: str) -> str:
        if self.single is not None:
            return clean_text(_lookup(user, self.single, source_name))
        text = "".join(
            literal + (clean_text(_lookup(user, name, source_name)) if name is not None else "")
            for literal, name in self.parts
        )
        return _SPACES.sub(" ", _EMPTY_BRACKETS.sub("", text)).strip()


class ContactMapper:
    """Maps users of one pair; build once per plan, the templates are parsed here."""

    def __init__(self, pair: TenantPair) -> None:
        self.pair = pair
        templates = {"DisplayName": pair.contact.display_name, **DEFAULT_TEMPLATES, **pair.contact.attributes}
        self.templates = {name: Template(text) for name, text in templates.items() if text != "" and name != "Manager"}
        self.links_managers = pair.contact.attributes.get("Manager") != ""
        self.anchor_attribute = pair.contact.anchor_attribute
        self.hidden = pair.contact.hidden_from_gal

    def parameters(self) -> list[str]:
        """Every parameter a desired contact of this pair holds (what `map` fills in)."""
        names = ["Name", "Alias", "ExternalEmailAddress", *self.templates, "DisplayName", "HiddenFromAddressListsEnabled",
                 self.anchor_attribute]
        if self.links_managers:
            names.append("Manager")
        return list(dict.fromkeys(names))

    def map(self, user: SourceUser, address: str, *, manager: str = "") -> Mapped:
        """The desired contact; `manager` is the Name of the manager's contact ("" = none or not linkable yet)."""
        user_id = str(user["id"])
        name = contact_name(user_id)
        source_name = self.pair.source.name
        warnings: list[str] = []
        contact: DesiredContact = {"Name": name, "Alias": name, "ExternalEmailAddress": address}
        for parameter, template in self.templates.items():
            value = template.render(user, source_name)
            if parameter == "CountryOrRegion" and value:
                code = country_code(value)
                if code is None:
                    warnings.append(f"country_dropped: {value[:60]!r} is not an ISO 3166 country")
                value = code or ""
            if parameter in ANCHOR_ATTRIBUTES and value.lower().startswith(ANCHOR_MARK):
                # It would pass for an anchor (another pair's, or this one's): an anchor is only ever ctcs's own.
                warnings.append(f"anchor_like_value_blanked: {parameter} would begin with {ANCHOR_MARK!r}, the "
                                "anchor prefix; left blank")
                value = ""
            limit = LIMITS.get(parameter)
            if limit is not None and len(value) > limit:
                warnings.append(f"truncated: {parameter} cut from {len(value)} to {limit} characters")
                value = value[:limit].rstrip()
            contact[parameter] = value
        if self.links_managers:
            contact["Manager"] = manager
        if not contact.get("DisplayName"):
            contact["DisplayName"] = address
        contact["HiddenFromAddressListsEnabled"] = self.hidden
        contact[self.anchor_attribute] = self.pair.anchor(user_id)
        return Mapped(contact, contact_hash(contact), warnings)
