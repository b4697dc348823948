"""What an access token says about the app it was issued to, read without verifying it (the service verifies).

The connection test reads the `roles` claim of the tokens it gets: an app-only token carries the application
permissions that admin consent granted (`User.Read.All`, `Exchange.ManageAsApp`), so a missing one is named before
any call is made. Tokens are never logged or stored; only the claim names and role names leave this module.
"""

from __future__ import annotations

import base64
import json
from typing import Any


def token_claims(token: str) -> dict[str, Any] | None:
    """The claims of a JWT access token, or None when it is not a readable JWT (an opaque or encrypted token)."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    payload = parts[1] + "=" * (-len(parts[1]) % 4)
    try:
        claims = json.loads(base64.urlsafe_b64decode(payload.encode("ascii")))
    except (ValueError, UnicodeError):
        return None
    return claims if isinstance(claims, dict) else None


def token_roles(token: str) -> frozenset[str] | None:
    """The application permissions (`roles` claim) of an app-only token; None when the token cannot be read.
    A readable token without the claim has no permission at all (none was consented)."""
    claims = token_claims(token)
    if claims is None:
        return None
    roles = claims.get("roles") or ()
    return frozenset(str(role) for role in roles) if isinstance(roles, list) else frozenset()
