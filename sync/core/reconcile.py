"""Reconcile (pure): the target's owned contacts against ContactState: what a reconcile round repairs in the state
before it plans a full round against the source.

    listing (every contact with this pair's anchor)  ─┐
    ContactState rows                                 ├─► compare_target ─► TargetComparison
                                                      ┘
The comparison corrects what ContactState believes, so that the full round that follows (the ordinary planner, its
safety gate and the worker) brings the target back to the desired contacts:

- drift: a managed parameter differs from what the row says was applied → the row takes the target's value (and
  loses its hash), so the round plans an update and the worker sends only the parameters that differ;
- missing: the row names a contact the listing does not hold → the caller asks Exchange about that Guid: gone
  (deleted by hand: a tombstone, the round creates it again) or without our anchor (released, never written again);
- rebuilt: a listed contact with no row (lost state, a pair re-added) → a row from the target, so nothing is created
  twice; one whose user is gone or out of scope is then removed by the round as an orphan, through the gate;
- duplicates: more listed contacts with one anchor → the one the row names (else the one with ctcs's own Name for
  the user, else the earliest changed) stays.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from sync.contract.countries import country_code
from sync.contract.vocabulary import ContactStatus
from sync.core.mapping import contact_name
from sync.core.target import Recipient


@dataclass(frozen=True)
class KnownRow:
    """What a reconcile needs of one ContactState row."""

    status: ContactStatus
    guid: str
    applied: Mapping[str, Any] = field(default_factory=dict)
    updated_at: str = ""  # when ctcs last wrote the row (ISO 8601)


@dataclass
class TargetComparison:
    """What the target says ContactState should correct (keys are source ids as the rows spell them)."""

    drifted: dict[str, dict[str, Any]] = field(default_factory=dict)  # id -> {parameter: the target's value}
    missing: dict[str, str] = field(default_factory=dict)  # id -> the Guid the row names and the listing lacks
    rebuilt: dict[str, Recipient] = field(default_factory=dict)  # id -> its contact, for a row that is missing
    relinked: dict[str, Recipient] = field(default_factory=dict)  # id -> the listed contact now carrying its anchor
    duplicates: list[Recipient] = field(default_factory=list)  # extra contacts with one anchor, to remove
    listed: int = 0

    @property
    def changes(self) -> int:
        return len(self.drifted) + len(self.missing) + len(self.rebuilt) + len(self.relinked) + len(self.duplicates)


def source_id_of(anchor: str, prefix: str) -> str:
    return anchor[len(prefix):] if anchor.startswith(prefix) else ""


def compare_target(
    rows: Mapping[str, KnownRow], listing: Iterable[Recipient], *, anchor_attribute: str, anchor_prefix: str
) -> TargetComparison:
    """Compare the owned contacts (`listing`) with the rows; `values` of each listed contact are compared with the
    row's applied parameters that the listing returned."""
    result = TargetComparison()
    by_lower = {source_id.lower(): source_id for source_id in rows}
    by_user: dict[str, list[Recipient]] = {}
    for contact in listing:
        result.listed += 1
        user = source_id_of(contact.anchor(anchor_attribute), anchor_prefix)
        if user:
            by_user.setdefault(user, []).append(contact)
    for user, contacts in by_user.items():
        source_id = by_lower.get(user, user)
        row = rows.get(source_id)
        named = row.guid.lower() if row is not None else ""
        # Keep the one the row names, else the one with ctcs's own Name for the user, else the oldest change.
        own_name = contact_name(user)
        contacts.sort(key=lambda c: (c.guid.lower() != named, c.name.lower() != own_name, c.when_changed, c.guid.lower()))
        keep, extra = contacts[0], contacts[1:]
        result.duplicates.extend(extra)
        if row is None or not row.status.live or (row.status is ContactStatus.QUEUED and not row.guid):
            result.rebuilt[source_id] = keep  # lost state, or a create that was applied but never recorded
        elif row.status is ContactStatus.RELEASED:
            continue
        elif not row.guid or keep.guid.lower() != named:
            result.relinked[source_id] = keep
        else:
            differing = drift(row.applied, keep.values)
            if differing:
                result.drifted[source_id] = differing
    for source_id, row in rows.items():
        if row.status.ours and row.guid and source_id.lower() not in by_user and row.status is not ContactStatus.QUEUED:
            result.missing[source_id] = row.guid
    return result


def drift(applied: Mapping[str, Any], observed: Mapping[str, Any]) -> dict[str, Any]:
    """The parameters ctcs applied whose value in the target (`observed`) is another: {parameter: observed value}.
    Parameters the target did not report, and ones ctcs never set, are not compared."""
    return {
        name: observed[name] for name, value in applied.items()
        if name in observed and name != "Name" and not same_value(name, value, observed[name])
    }


def same_value(name: str, applied: Any, observed: Any) -> bool:
    """Whether Exchange holds the value ctcs applied, in the form Exchange gives it back (`SMTP:` prefixes, country
    names for codes, `$null` for cleared values, the manager's Name in any case)."""
    if name == "HiddenFromAddressListsEnabled":
        return bool(applied) is bool(observed)
    left, right = ("" if applied is None else str(applied)).strip(), ("" if observed is None else str(observed)).strip()
    if name == "ExternalEmailAddress":
        return _address(left) == _address(right)
    if name == "CountryOrRegion" and left and right:
        return (country_code(left) or left.lower()) == (country_code(right) or right.lower())
    if name == "Manager":
        return left.lower() == right.lower()
    return left == right


def in_applied_form(values: Mapping[str, Any]) -> dict[str, Any]:
    """Values as Exchange gives them back, in the form ctcs writes them (a country's ISO code for its name), so that
    the worker, comparing the desired contact with what was applied, sends only what truly differs."""
    out = dict(values)
    country = out.get("CountryOrRegion")
    if isinstance(country, str) and country:
        out["CountryOrRegion"] = country_code(country) or country
    return out


def _address(text: str) -> str:
    return (text[5:] if text[:5].lower() == "smtp:" else text).lower()
