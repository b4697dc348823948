"""Names on the group side of the mapping: Graph group properties ctcs reads for groups-as-contacts.

`groups/delta` returns these with `$select` (Microsoft Graph's group resource and group delta documentation);
`hideFromAddressLists` is not among them: Graph returns it only from `GET /groups/{id}` with an explicit `$select`,
so ctcs reads it separately, and only for the Microsoft 365 groups a round shows (`sync.graph.groups`).
"""

from __future__ import annotations

from typing import Literal

# What a groups round asks `groups/delta` for: scope (kind, mail, domain), the default mapping and the filters.
GROUP_SELECT = (
    "id", "displayName", "description", "mail", "mailEnabled", "securityEnabled", "groupTypes", "proxyAddresses",
    "mailNickname", "visibility",
)

# Group properties `groups.display_name` and `groups.filters` may name (each is in GROUP_SELECT, or read with it).
GROUP_ATTRIBUTES = frozenset({*GROUP_SELECT, "hideFromAddressLists", "kind"})

GroupType = Literal["unified", "distribution", "mail_enabled_security"]
GROUP_TYPES: tuple[GroupType, ...] = ("unified", "distribution", "mail_enabled_security")
