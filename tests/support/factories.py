"""Small builders for pairs and Graph-shaped users."""

from __future__ import annotations

import copy
import uuid
from typing import Any

from sync.contract.pairs import TenantPair, parse_pair

SOURCE_TENANT = "11111111-1111-1111-1111-111111111111"
TARGET_TENANT = "22222222-2222-2222-2222-222222222222"


def pair_definition(pair_id: str = "contoso-to-fabrikam", **overrides: Any) -> dict[str, Any]:
    definition: dict[str, Any] = {
        "id": pair_id,
        "enabled": True,
        "source": {
            "tenant_id": SOURCE_TENANT,
            "client_id": "33333333-3333-3333-3333-333333333333",
            "name": "Contoso",
            "credential": {"type": "client_secret", "secret": "env:CTCS_SECRET_CONTOSO_GRAPH"},
        },
        "target": {
            "tenant_id": TARGET_TENANT,
            "organization": "fabrikam.onmicrosoft.com",
            "client_id": "44444444-4444-4444-4444-444444444444",
            "credential": {"type": "certificate", "certificate": "kv:fabrikam-exo-cert"},
        },
    }
    return merged(definition, overrides)


def merged(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """A copy of a pair definition with `overrides` applied: a dict merges into the section it names (one level
    deep), anything else replaces the key."""
    result = copy.deepcopy(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(result.get(key), dict):
            result[key] = {**result[key], **value}
        else:
            result[key] = value
    return result


def make_pair(pair_id: str = "contoso-to-fabrikam", **overrides: Any) -> TenantPair:
    return parse_pair(pair_definition(pair_id, **overrides))


def make_user(n: int = 0, **fields: Any) -> dict[str, Any]:
    user_id = fields.pop("id", None) or str(uuid.UUID(int=n + 1))
    user: dict[str, Any] = {
        "id": user_id,
        "displayName": f"User {n}",
        "givenName": "User",
        "surname": str(n),
        "mail": f"user{n}@contoso.com",
        "userPrincipalName": f"user{n}@contoso.com",
        "userType": "Member",
        "accountEnabled": True,
        "showInAddressList": None,
        "companyName": "Contoso",
        "department": "Sales",
        "jobTitle": "Rep",
        "officeLocation": "B1",
        "businessPhones": ["+1 555 0100"],
        "mobilePhone": "+1 555 0101",
        "faxNumber": None,
        "streetAddress": "1 Main St",
        "city": "Seattle",
        "state": "WA",
        "postalCode": "98052",
        "country": "United States",
    }
    user.update(fields)
    return user
