"""What a failed sign-in or a refused call means, and what the admin does about it (pure).

Entra ID, Graph and the Exchange admin API answer a credential or permission problem with a code buried in a long
message (`AADSTS700027: Client assertion contains an invalid signature...`, `403 Authorization_RequestDenied`,
`401 User is not allowed to call Get-Recipient`). `diagnose` turns such a message into a `Diagnosis`: the cause
and the fix in an admin's words, naming the tenant, app and permission concerned. The connection test shows it
for each failed check, and a pair quarantined for its credentials keeps it as its reason.

`is_credentials_failure` says which errors quarantine a pair (kind `credentials`) instead of being retried.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

from sync.errors import CredentialUnusable, SourceAuthError, TargetAuthError

AADSTS = re.compile(r"AADSTS(\d{5,8})")


class Side(StrEnum):
    """Which sign-in of a pair a check or failure concerns."""

    SOURCE = "source"  # Microsoft Graph in the source tenant
    TARGET = "target"  # the Exchange admin API in the target tenant
    SOURCE_EXCHANGE = "source.exchange"  # the source's own Exchange (read-only), when the pair grants it

    @property
    def service(self) -> str:
        return "Microsoft Graph" if self is Side.SOURCE else "Exchange Online"

    @property
    def permissions(self) -> str:
        if self is Side.SOURCE:
            return "User.Read.All (and GroupMember.Read.All for group scoping, Group.Read.All for groups as contacts)"
        return "Exchange.ManageAsApp"

    @property
    def role(self) -> str:
        if self is Side.TARGET:
            return "Exchange Recipient Administrator (or a role group with Mail Recipient Creation and Mail Recipients)"
        return "Global Reader (or View-Only Recipients)"


@dataclass(frozen=True)
class Subject:
    """The app a sign-in is for: enough to write a fix an admin can follow."""

    side: Side
    tenant_id: str
    client_id: str
    authority: str = "https://login.microsoftonline.com"


@dataclass(frozen=True)
class Diagnosis:
    cause: str  # short: "missing admin consent"
    fix: str  # what to do, in words, with the tenant and app named
    code: str = ""  # the AADSTS code or HTTP status that told us, for the record

    def text(self) -> str:
        return f"{self.cause}: {self.fix}" + (f" ({self.code})" if self.code else "")


# Sign-in answers that only mean "try again later": never a reason to quarantine a pair.
TRANSIENT_SIGN_IN_CODES = frozenset({"50000", "50001", "90033", "500021", "50058"})
TRANSIENT_WORDS = ("temporarily_unavailable", "timed out", "connection", "temporarily unavailable")


def is_transient_sign_in(text: str) -> bool:
    """A token request that failed for a reason on Entra's side (500, throttled, unreachable)."""
    codes = set(AADSTS.findall(text))
    if codes & TRANSIENT_SIGN_IN_CODES:
        return True
    return not codes and any(word in text.lower() for word in TRANSIENT_WORDS)


def is_credentials_failure(error: BaseException) -> bool:
    """Errors an admin must fix before anything of this pair can work: quarantine, do not retry."""
    return isinstance(error, SourceAuthError | TargetAuthError | CredentialUnusable)


def consent_fix(subject: Subject) -> str:
    """How an admin grants the side's application permissions."""
    return (
        f"an admin of tenant {subject.tenant_id} grants admin consent to app {subject.client_id} for "
        f"{subject.side.permissions}: open {subject.authority}/{subject.tenant_id}/adminconsent?client_id="
        f"{subject.client_id}, or run scripts/register-apps.sh grant {_script_side(subject)} {subject.client_id}"
    )


def _script_side(subject: Subject) -> str:
    return "target" if subject.side is Side.TARGET else "source"


def _sign_in(code: str, subject: Subject) -> Diagnosis | None:
    """Entra's AADSTS codes for sign-ins that fail on the app's credential or registration."""
    app, tenant = subject.client_id, subject.tenant_id
    aadsts = f"AADSTS{code}"
    if code in ("700016", "65001"):
        return Diagnosis("missing admin consent", f"app {app} is not consented in tenant {tenant}: {consent_fix(subject)}", aadsts)
    if code == "700027":
        return Diagnosis(
            "certificate not registered on the app",
            f"the certificate ctcs signs with is not one of app {app}'s credentials: upload its public part "
            f"(az ad app credential reset --id {app} --cert @cert.cer --append) or point the pair at a registered one",
            aadsts,
        )
    if code in ("700024", "50012"):
        return Diagnosis(
            "expired or skewed client assertion",
            "Entra refused the signed client assertion as outside its valid time (Entra also answers AADSTS700024 "
            "for an expired federated assertion): with a certificate, the clock of the machine running ctcs is off by "
            "more than five minutes, so synchronise it (NTP) and test again; with managed identity federation, the "
            "identity's token had expired when Entra got it, so test again, and if it persists check the Function "
            f"App's clock and that app {app}'s federated credential names this identity",
            aadsts,
        )
    if code in ("7000215", "7000222", "7000218"):
        return Diagnosis(
            "wrong or expired client secret",
            f"the secret is not a current secret *value* of app {app}: create a new one (Certificates & secrets) and "
            "store it under the same reference",
            aadsts,
        )
    if code in ("70021", "700211", "700212", "700213", "7002138"):
        return Diagnosis(
            "federated credential does not match the managed identity",
            f"app {app}'s federated credential must have issuer {subject.authority}/<home tenant id>/v2.0, subject = "
            "the Function App identity's principal id (it changes when the identity is recreated, e.g. azd down then "
            "azd up) and the cloud's token-exchange audience: run scripts/register-apps.sh create again",
            aadsts,
        )
    if code in ("90002", "900023", "90072"):
        return Diagnosis(
            "wrong tenant",
            f"tenant {tenant} is not found in this cloud: check {subject.side.value}.tenant_id and {subject.side.value}.cloud",
            aadsts,
        )
    if code == "500011":
        return Diagnosis(
            "service not in the tenant",
            f"tenant {tenant} has no {subject.side.service} service principal (no licence, or the wrong cloud): check "
            f"{subject.side.value}.cloud and the tenant's subscriptions",
            aadsts,
        )
    if code in ("7000112", "7000114"):
        return Diagnosis("app disabled", f"app {app} is disabled in tenant {tenant}: enable its enterprise application", aadsts)
    return None


EXCHANGE_ROLE_WORDS = ("not allowed to call", "isn't assigned to any management roles", "role assigned to application")


def diagnose(subject: Subject, text: str, *, status: int | None = None) -> Diagnosis:
    """The cause and fix of a failure message (a sign-in error, a Graph or Exchange answer, a secret reference)."""
    lowered = text.lower()
    for code in AADSTS.findall(text):
        found = _sign_in(code, subject)
        if found is not None:
            return found
    side, app = subject.side, subject.client_id
    if "managedidentitycredential" in lowered and ("unavailable" in lowered or "no managed identity" in lowered):
        return Diagnosis(
            "managed identity not available here",
            "managed identity federation signs in only inside the Function App: test there (POST /api/pairs/{id}/test), "
            "or add the pair with --no-test",
        )
    if "cannot cross clouds" in lowered:
        return Diagnosis("managed identity federation across clouds", text.split(": ", 1)[-1])
    if "secret reference" in lowered:
        reference = re.search(r"secret reference (\S+):", text)
        name = reference.group(1) if reference else "the reference"
        if "no such secret in the key vault" in lowered:
            return Diagnosis(
                "certificate not found in Key Vault",
                f"the vault named by CTCS_KEY_VAULT_URI has no secret or certificate {name.removeprefix('kv:')}: create "
                f"or import it under that name (az keyvault certificate import), or correct {side.value}.credential",
            )
        if "key vault read failed" in lowered:
            return Diagnosis(
                "Key Vault not readable",
                "the Function App's identity needs Key Vault Secrets User on the vault named by CTCS_KEY_VAULT_URI "
                "(your own account needs it for local runs)",
            )
        if "ctcs_key_vault_uri" in lowered:
            return Diagnosis("Key Vault not configured", "set the app setting CTCS_KEY_VAULT_URI to the vault that holds kv: references")
        return Diagnosis("secret not available", f"{name} cannot be read: {text.split(': ', 1)[-1]}")
    if "not a pem or pfx" in lowered:
        return Diagnosis("not a usable certificate", "the reference must hold a PEM or PFX certificate with its private key, and the password must match")
    if side is Side.SOURCE and (status == 403 or "authorization_requestdenied" in lowered or "insufficient privileges" in lowered):
        return Diagnosis("missing Graph permission", consent_fix(subject), "HTTP 403")
    if side is not Side.SOURCE and any(words in lowered for words in EXCHANGE_ROLE_WORDS):
        return Diagnosis(
            "missing Exchange role",
            f"assign {side.role} to app {app}'s service principal in tenant {subject.tenant_id} (Entra admin center > "
            "Roles & admins); role changes take up to an hour to reach Exchange",
            f"HTTP {status}" if status else "",
        )
    if side is not Side.SOURCE and ("exchange.manageasapp" in lowered or status == 403):
        return Diagnosis("missing Exchange.ManageAsApp", consent_fix(subject), f"HTTP {status}" if status else "")
    if status in (401, 403):
        return Diagnosis(
            f"{side.service} refused the token",
            f"check {side.value}.tenant_id, {side.value}.client_id and {side.value}.cloud, and that app {app} has "
            f"{side.permissions} with admin consent",
            f"HTTP {status}",
        )
    return Diagnosis("sign-in or call failed", text[:300])
