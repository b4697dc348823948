"""The secret path of a pair's notification URL: `<notification url>/<pair>/<token>`, checked without any storage.

    token = <address id>.<mac>     address id: random, new with every subscription ctcs creates (16 URL-safe chars)
                                   mac: HMAC-SHA256(CTCS_NOTIFICATION_KEY, "ctcs-notifications|<pair>|<address id>"),
                                        URL-safe base64 without padding (43 chars)

Graph posts to exactly the URL a subscription was given and can send no header of ours, so the secret has to be in
the URL. Deriving it with HMAC from one app-level key means the route can tell a token it handed out from a guess
by arithmetic alone: a stranger's request is refused before any table, queue or log is touched. Which address id a
pair's subscription currently has is kept on its subscription row (not secret without the key); the route compares
it only after the token has passed, so a URL of a replaced subscription is refused too, at the cost of one read
that only a holder of an issued URL can cause. The key never leaves the process: not in a table, not in a log.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets

ADDRESS_ID_BYTES = 12  # 16 URL-safe characters
_SHAPE = re.compile(r"^[A-Za-z0-9_-]{16}\.[A-Za-z0-9_-]{43}$")
MAX_TOKEN = 60


def new_address_id() -> str:
    return secrets.token_urlsafe(ADDRESS_ID_BYTES)


def _mac(key: str, pair_id: str, address_id: str) -> str:
    digest = hmac.new(key.encode("utf-8"), f"ctcs-notifications|{pair_id}|{address_id}".encode(), hashlib.sha256)
    return base64.urlsafe_b64encode(digest.digest()).decode("ascii").rstrip("=")


def path_token(key: str, pair_id: str, address_id: str) -> str:
    return f"{address_id}.{_mac(key, pair_id, address_id)}"


def notification_address(base_url: str, key: str, pair_id: str, address_id: str) -> str:
    """The URL a subscription of this pair and address id is given (for both notifications and lifecycle events)."""
    return f"{base_url.rstrip('/')}/{pair_id}/{path_token(key, pair_id, address_id)}"


def checked_address_id(key: str, pair_id: str, token: str) -> str | None:
    """The token's address id when ctcs issued this token for this pair, else None (constant time in the mac)."""
    if not key or len(token) > MAX_TOKEN or len(pair_id) > MAX_TOKEN or not _SHAPE.match(token):
        return None
    address_id, mac = token.split(".", 1)
    try:
        expected = _mac(key, pair_id, address_id)
    except UnicodeEncodeError:
        return None
    return address_id if hmac.compare_digest(mac.encode("ascii"), expected.encode("ascii")) else None


def key_id(key: str) -> str:
    """Which key made a token, without saying what it is: an HMAC of a constant, so a changed key is noticed."""
    return hmac.new(key.encode("utf-8"), b"ctcs-notifications key id", hashlib.sha256).hexdigest()[:16]
