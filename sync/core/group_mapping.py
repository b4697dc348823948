"""Source group → desired mail contact (pure), beside `ContactMapper` for users.

A group's contact carries what a group has that a contact can hold: its address, its display name (through the
pair's `groups.display_name` template) and its description as Notes (cut to Exchange's limit). Name and Alias come
from the object id and the anchor has the users' form, `ctcs|<source tenant id>|<object id>`: group and user ids never
collide, so one ContactState partition and one anchor space hold both. Membership is not mapped: a mail contact has no
members.
"""

from __future__ import annotations

from sync.contract.pairs import TenantPair
from sync.core.group_scope import SourceGroup, group_kind
from sync.core.mapping import LIMITS, DesiredContact, Mapped, Template, contact_hash, contact_name


class GroupMapper:
    """Maps groups of one pair; build once per plan (the display name template is parsed here)."""

    links_managers = False  # a group has no manager: the planner's manager links stay off for groups

    def __init__(self, pair: TenantPair) -> None:
        self.pair = pair
        self.display_name = Template(pair.groups.display_name)
        self.notes = Template("{description}")

    def map(self, group: SourceGroup, address: str, *, manager: str = "") -> Mapped:
        group_id = str(group["id"])
        name = contact_name(group_id)
        source_name = self.pair.source.name
        warnings: list[str] = []
        view = {**group, "kind": group_kind(group)}
        contact: DesiredContact = {"Name": name, "Alias": name, "ExternalEmailAddress": address}
        for parameter, template in (("DisplayName", self.display_name), ("Notes", self.notes)):
            value = template.render(view, source_name)
            limit = LIMITS[parameter]
            if len(value) > limit:
                warnings.append(f"truncated: {parameter} cut from {len(value)} to {limit} characters")
                value = value[:limit].rstrip()
            contact[parameter] = value
        if not contact["DisplayName"]:
            contact["DisplayName"] = address
        contact["HiddenFromAddressListsEnabled"] = self.pair.contact.hidden_from_gal
        contact[self.pair.contact.anchor_attribute] = self.pair.anchor(group_id)
        return Mapped(contact, contact_hash(contact), warnings)
