"""Which role a request's function key carries: `ctcs-read`, `ctcs-operate` or `ctcs-dangerous`.

The Functions host lets a request in with any of the app's keys (auth level FUNCTION) but does not tell the worker
which one it was, so ctcs compares the key the request presented (`x-functions-key` header or `?code=`) with the
values of its three named keys, which it reads from app settings (in Azure: Key Vault references to the secrets the
named host keys are made from, infra/app/hostkeys.bicep). Each role includes the ones below it:

    read       GET /api/pairs, GET /api/pairs/{id}                       status and definitions
    operate    + resync, reconcile, test, users/{user}/sync              work that follows the pair's own rules
    dangerous  + allow_deletes=true on resync or reconcile               release a quarantine, removals during one

Every key is compared (hmac.compare_digest), none short-circuits. No role key set: locally every caller is let in
(as `func start` lets in every request); in Azure (`sync.settings.in_azure`) every request is refused until they are.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from enum import IntEnum

from sync.settings import in_azure, setting

KEY_HEADER = "x-functions-key"
KEY_PARAM = "code"


class Role(IntEnum):
    READ = 1
    OPERATE = 2
    DANGEROUS = 3

    @property
    def key_name(self) -> str:
        return f"ctcs-{self.name.lower()}"


class KeyRefused(Exception):
    """The request's key does not allow what it asks for: 401 (no role key at all) or 403 (a lesser one)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _configured(environ: Mapping[str, str] | None) -> dict[Role, str]:
    values = {
        Role.READ: setting("CTCS_KEY_READ", environ),
        Role.OPERATE: setting("CTCS_KEY_OPERATE", environ),
        Role.DANGEROUS: setting("CTCS_KEY_DANGEROUS", environ),
    }
    return {role: value for role, value in values.items() if value}


def presented_key(headers: Mapping[str, str], params: Mapping[str, str]) -> str:
    header = next((value for name, value in headers.items() if name.lower() == KEY_HEADER), "")
    return header or params.get(KEY_PARAM, "")


def caller_role(headers: Mapping[str, str], params: Mapping[str, str],
                environ: Mapping[str, str] | None = None) -> Role:
    """The highest role whose key the request presented; KeyRefused(401) when it presented none of them."""
    keys = _configured(environ)
    if not keys:
        if in_azure(environ):
            raise KeyRefused(403, "the role keys are not configured: set CTCS_KEY_READ, CTCS_KEY_OPERATE and "
                                  "CTCS_KEY_DANGEROUS (see docs/deploy.md)")
        return Role.DANGEROUS
    presented = presented_key(headers, params).encode("utf-8", "surrogatepass")
    matched = [role for role, value in keys.items()
               if hmac.compare_digest(presented, value.encode("utf-8", "surrogatepass"))]
    if not matched:
        raise KeyRefused(401, "this route needs one of the function keys ctcs-read, ctcs-operate or ctcs-dangerous")
    return max(matched)


def require(role: Role, needed: Role, what: str) -> None:
    """Refuse (403) unless `role` includes `needed`, naming the keys that would do."""
    if role < needed:
        allowed = " or ".join(r.key_name for r in Role if r >= needed)
        raise KeyRefused(403, f"{what} needs the function key {allowed}; this request used {role.key_name}")
