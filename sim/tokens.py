"""Access tokens of the simulated clouds: issued by the token authority, checked by Graph and Exchange.

Tokens are RS256 JWTs signed with one key per `SimCloud` run. Claims follow Entra's app-only tokens: `aud` is the
resource (scope without `/.default`), `tid` the tenant, `appid`/`azp` the client id, `roles` the app roles granted,
`iss` = `{authority}/{tid}/v2.0`. Managed-identity tokens carry `aud=api://AzureADTokenExchange` and
`sub`/`oid` = the identity's object id, so an app can trust them as a federated credential.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa

TOKEN_EXCHANGE_AUDIENCE = "api://AzureADTokenExchange"


class TokenRejected(Exception):
    """A bearer token failed validation; the message says why (safe to return: it never holds the token)."""


class TokenExpired(TokenRejected):
    """The token's lifetime is over (`exp` in the past); `expires` says when it ended."""

    def __init__(self, message: str, *, expires: float, not_before: float) -> None:
        super().__init__(message)
        self.expires, self.not_before = expires, not_before


class Forbidden(Exception):
    """The token is valid but its app lacks the role the service needs (→ 403)."""


@dataclass(frozen=True)
class TokenClaims:
    tenant_id: str
    client_id: str
    audience: str
    roles: tuple[str, ...]
    raw: dict[str, Any]


class TokenSigner:
    """Signs and verifies the simulator's JWTs."""

    def __init__(self, issuer_base: str) -> None:
        self.issuer_base = issuer_base.rstrip("/")
        self._key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.key_id = uuid.uuid4().hex

    def issue(
        self,
        *,
        tenant_id: str,
        client_id: str,
        audience: str,
        roles: tuple[str, ...] = (),
        lifetime: int = 3600,
        subject: str | None = None,
        now: float | None = None,
    ) -> tuple[str, int]:
        """Return (jwt, expires_in). A negative `lifetime` makes an already expired token (for tests)."""
        issued = int(now if now is not None else time.time())
        claims: dict[str, Any] = {
            "aud": audience,
            "iss": f"{self.issuer_base}/{tenant_id}/v2.0",
            "iat": issued + min(lifetime, 0) - 60,
            "nbf": issued + min(lifetime, 0) - 300,
            "exp": issued + lifetime,
            "tid": tenant_id,
            "appid": client_id,
            "azp": client_id,
            "sub": subject or client_id,
            "oid": subject or client_id,
            "idtyp": "app",
            "roles": list(roles),
            "ver": "2.0",
            "uti": uuid.uuid4().hex,
        }
        token = jwt.encode(claims, self._key, algorithm="RS256", headers={"kid": self.key_id})
        return token, lifetime

    def jwk(self) -> dict[str, Any]:
        """The public key as a JWK (for the authority's keys endpoint)."""
        key: dict[str, Any] = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self._key.public_key()))
        key.update({"kid": self.key_id, "use": "sig", "alg": "RS256"})
        return key

    def verify(self, token: str, *, audience: str | tuple[str, ...]) -> TokenClaims:
        """Check signature, lifetime and audience; raise TokenRejected otherwise."""
        audiences = (audience,) if isinstance(audience, str) else audience
        accepted = [a for aud in audiences for a in (aud.rstrip("/"), aud.rstrip("/") + "/")]
        try:
            claims = jwt.decode(
                token,
                self._key.public_key(),
                algorithms=["RS256"],
                audience=accepted,
                options={"require": ["exp", "aud", "tid", "appid"]},
                leeway=0,
            )
        except jwt.ExpiredSignatureError as exc:
            unverified = jwt.decode(token, options={"verify_signature": False})
            raise TokenExpired("Lifetime validation failed, the token is expired.", expires=float(unverified["exp"]),
                               not_before=float(unverified.get("nbf") or 0)) from exc
        except jwt.InvalidAudienceError as exc:
            raise TokenRejected("Invalid audience: the token was issued for another resource.") from exc
        except jwt.PyJWTError as exc:
            raise TokenRejected(f"Invalid token: {type(exc).__name__}.") from exc
        return TokenClaims(
            tenant_id=str(claims["tid"]),
            client_id=str(claims["appid"]),
            audience=str(claims["aud"]),
            roles=tuple(claims.get("roles") or ()),
            raw=claims,
        )


def bearer_token(headers: Any) -> str | None:
    """The token of an `Authorization: Bearer ...` header (header names are case-insensitive in Starlette)."""
    value = headers.get("authorization")
    if not isinstance(value, str) or not value:
        return None
    scheme, _, token = value.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()
