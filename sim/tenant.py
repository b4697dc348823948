"""A simulated Microsoft 365 tenant: its app registrations, its directory (Graph) and its Exchange organisation."""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from sim.directory import Directory
from sim.exchange_org import ExchangeOrg

# What an app gets when the test does not say: enough for both sides of a pair.
DEFAULT_ROLES = ("User.Read.All", "GroupMember.Read.All", "Exchange.ManageAsApp")
# Entra roles on the app's service principal, and the Exchange management roles each brings (RBAC for the admin
# API: a cmdlet runs only when one of the app's management roles holds it).
DEFAULT_DIRECTORY_ROLES = ("Exchange Recipient Administrator",)
MANAGEMENT_ROLES_OF = {
    "Exchange Administrator": frozenset({"Mail Recipient Creation", "Mail Recipients", "View-Only Recipients"}),
    "Exchange Recipient Administrator": frozenset({"Mail Recipient Creation", "Mail Recipients", "View-Only Recipients"}),
    "Global Reader": frozenset({"View-Only Recipients"}),
}
# The management roles that hold each cmdlet ctcs calls (Get-ManagementRole -Cmdlet <name>).
CMDLET_ROLES = {
    "New-MailContact": frozenset({"Mail Recipient Creation"}),
    "Remove-MailContact": frozenset({"Mail Recipient Creation"}),
    "Set-MailContact": frozenset({"Mail Recipients"}),
    "Set-Contact": frozenset({"Mail Recipients"}),
    "Get-MailContact": frozenset({"Mail Recipients", "View-Only Recipients"}),
    "Get-Recipient": frozenset({"Mail Recipients", "View-Only Recipients"}),
    "Get-Contact": frozenset({"Mail Recipients", "View-Only Recipients"}),
}


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@dataclass(frozen=True)
class RegisteredCertificate:
    """A public certificate on an app registration, with the thumbprints MSAL puts in `x5t` / `x5t#S256`."""

    certificate: x509.Certificate
    x5t: str
    x5t_s256: str

    @classmethod
    def from_pem(cls, pem: bytes) -> RegisteredCertificate:
        cert = x509.load_pem_x509_certificate(pem)
        der = cert.public_bytes(serialization.Encoding.DER)
        return cls(cert, _b64url(hashlib.sha1(der).digest()), _b64url(hashlib.sha256(der).digest()))


@dataclass
class AppRegistration:
    """An app (service principal) in a tenant with the credentials it may use. Secrets never appear in repr."""

    client_id: str
    roles: tuple[str, ...] = DEFAULT_ROLES
    _secrets: list[str] = field(default_factory=list, repr=False)
    certificates: list[RegisteredCertificate] = field(default_factory=list)
    federated_subjects: list[str] = field(default_factory=list)
    consented: bool = True  # False: no service principal in the tenant (admin consent never given) → AADSTS700016
    directory_roles: tuple[str, ...] = DEFAULT_DIRECTORY_ROLES  # Entra roles assigned to its service principal
    role_groups: tuple[frozenset[str], ...] = ()  # custom Exchange role groups it is a member of (their roles)

    @property
    def management_roles(self) -> frozenset[str]:
        roles: set[str] = set()
        for role in self.directory_roles:
            roles |= MANAGEMENT_ROLES_OF.get(role, frozenset())
        for group in self.role_groups:
            roles |= group
        return frozenset(roles)

    def may_run(self, cmdlet: str) -> bool:
        """Exchange RBAC: the app holds a management role that has the cmdlet (unknown cmdlets: Exchange says so)."""
        needed = CMDLET_ROLES.get(cmdlet)
        return needed is None or bool(needed & self.management_roles)

    def secret_matches(self, presented: str) -> bool:
        return any(hmac.compare_digest(presented.encode(), secret.encode()) for secret in self._secrets)

    @property
    def has_secret(self) -> bool:
        return bool(self._secrets)

    def rotate_subjects(self, subject: str) -> None:
        """The managed identity was recreated (azd down, azd up): only the new principal id is trusted."""
        self.federated_subjects = [subject.lower()]

    def certificate_by_thumbprint(self, *, x5t: str | None, x5t_s256: str | None) -> RegisteredCertificate | None:
        # MSAL keeps the base64 padding ("...=") that Entra's own examples drop: compare without it.
        x5t = (x5t or "").rstrip("=")
        x5t_s256 = (x5t_s256 or "").rstrip("=")
        for cert in self.certificates:
            if (x5t_s256 and cert.x5t_s256 == x5t_s256) or (x5t and cert.x5t == x5t):
                return cert
        return None


class Tenant:
    """One tenant. `directory` is its Entra side (source), `exchange` its Exchange Online side (target)."""

    def __init__(self, tenant_id: str, domain: str, name: str) -> None:
        self.tenant_id = tenant_id.lower()
        self.domain = domain.lower()
        self.name = name
        self.apps: dict[str, AppRegistration] = {}
        self.directory = Directory(tenant_id=self.tenant_id, domain=self.domain)
        self.exchange = ExchangeOrg(tenant_id=self.tenant_id, domain=self.domain)

    def __repr__(self) -> str:
        return f"Tenant({self.tenant_id!r}, {self.domain!r})"

    def register_app(
        self,
        client_id: str,
        *,
        secret: str | None = None,
        certificate_pem: bytes | None = None,
        federated_subject: str | None = None,
        roles: tuple[str, ...] | list[str] | None = None,
    ) -> AppRegistration:
        """Register (or add a credential to) an app. `roles` None grants DEFAULT_ROLES.

        `certificate_pem` is the public certificate (a PEM holding a key too is fine: only the certificate is read).
        `federated_subject` is the managed identity's object id (or client id) whose token the app trusts.
        """
        app = self.apps.get(client_id.lower())
        if app is None:
            app = AppRegistration(client_id=client_id.lower())
            self.apps[app.client_id] = app
        if roles is not None:
            app.roles = tuple(roles)
        if secret is not None:
            app._secrets.append(secret)
        if certificate_pem is not None:
            app.certificates.append(RegisteredCertificate.from_pem(certificate_pem))
        if federated_subject is not None:
            app.federated_subjects.append(federated_subject.lower())
        return app
