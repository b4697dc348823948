"""One azure-identity credential per (tenant, app, cloud, credential definition), built once and reused.

azure-identity caches and refreshes tokens inside each credential object, so the credential must outlive a single
call: `CredentialCache` keeps them for the life of the process (a Functions worker serves many invocations).
Kinds (docs/design.md, `credential.type`):

- `client_secret`: `ClientSecretCredential`.
- `certificate`: `CertificateCredential` from PEM or PFX bytes, with an optional password reference.
- `managed_identity_federation`: `ClientAssertionCredential` whose assertion is a token of the Function App's
  managed identity for the token-exchange audience: no secret to rotate. The managed identity lives in the cloud
  the app runs in (`CTCS_HOSTING_CLOUD`), so the audience is that cloud's, and a pair side in another cloud is
  refused: Entra does not federate a managed identity across clouds.

Custom clouds (the simulator, private endpoints) disable MSAL instance discovery: their authority is not one
Microsoft knows.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Mapping
from typing import Any

from azure.core.credentials import TokenCredential
from azure.identity import (
    CertificateCredential,
    ClientAssertionCredential,
    ClientSecretCredential,
    ManagedIdentityCredential,
)

from sync.contract import pairs
from sync.errors import ConfigError, CredentialUnusable
from sync.identity.rooms import cloud_problem, federation_problem
from sync.identity.secrets import SecretResolver
from sync.settings import setting

# Audience of the managed-identity token that a federated credential trusts, per cloud.
TOKEN_EXCHANGE_AUDIENCES: dict[str, str] = {
    "global": "api://AzureADTokenExchange",
    "usgov": "api://AzureADTokenExchangeUSGov",
    "usgovdod": "api://AzureADTokenExchangeUSGov",
    "china": "api://AzureADTokenExchangeChina",
}

# Clouds that share one Entra authority (and so can federate with each other's managed identities).
ENTRA_CLOUD_OF: dict[str, str] = {"global": "global", "usgov": "usgov", "usgovdod": "usgov", "china": "china"}

ManagedIdentityFactory = Callable[[str | None], TokenCredential]
"""Builds the app's managed identity credential for a client id (None: system-assigned)."""

CredentialKey = tuple[str, str, str, str, tuple[str, ...]]


def _managed_identity(client_id: str | None) -> TokenCredential:
    return ManagedIdentityCredential(client_id=client_id) if client_id else ManagedIdentityCredential()


class CredentialCache:
    """Credentials by (tenant, client id, cloud, credential definition, versions of its secrets): the definition
    holds references only, and a secret or certificate replaced behind the same reference (a new Key Vault version,
    another file content) makes a new credential, so the fix is used without a restart."""

    def __init__(
        self,
        *,
        managed_identity_factory: ManagedIdentityFactory = _managed_identity,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self._managed_identity_factory = managed_identity_factory
        self._environ = environ
        self._credentials: dict[CredentialKey, TokenCredential] = {}
        self._managed_identities: dict[str | None, TokenCredential] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._credentials)

    def clear(self) -> None:
        """Forget every credential (after a secret rotation, say); the next call builds them again."""
        with self._lock:
            self._credentials.clear()
            self._managed_identities.clear()

    def credential(
        self,
        *,
        tenant_id: str,
        client_id: str,
        cloud: str | pairs.CustomCloud,
        definition: pairs.ClientSecretCredential | pairs.CertificateCredential | pairs.FederatedCredential,
        resolver: SecretResolver,
        field: str = "credential",
    ) -> TokenCredential:
        """The cached credential for this app in this tenant, built on first use.

        `field` names the definition in error messages (`target.credential`).
        """
        cloud_key = cloud if isinstance(cloud, str) else cloud.model_dump_json()
        with self._lock:
            try:
                versions = tuple(resolver.version(reference) for reference in _references(definition))
                key: CredentialKey = (tenant_id.lower(), client_id.lower(), cloud_key, definition.model_dump_json(),
                                      versions)
                cached = self._credentials.get(key)
                if cached is None:
                    cached = self._build(tenant_id, client_id, cloud, definition, resolver, field)
                    for older in [known for known in self._credentials if known[:4] == key[:4]]:
                        del self._credentials[older]  # a replaced secret's credential is not used again
                    self._credentials[key] = cached
            except CredentialUnusable as unusable:
                message = str(unusable)
                # Name the pair side the reference belongs to (the resolver only knows the reference).
                named = message.startswith((field, f"{field.split('.', 1)[0]}.cloud"))
                raise CredentialUnusable(message if named else f"{field}: {message}") from None
            return cached

    def for_source(self, pair: pairs.TenantPair, resolver: SecretResolver) -> TokenCredential:
        source = pair.source
        return self.credential(
            tenant_id=source.tenant_id, client_id=source.client_id, cloud=source.cloud,
            definition=source.credential, resolver=resolver, field="source.credential",
        )

    def for_target(self, pair: pairs.TenantPair, resolver: SecretResolver) -> TokenCredential:
        target = pair.target
        return self.credential(
            tenant_id=target.tenant_id, client_id=target.client_id, cloud=target.cloud,
            definition=target.credential, resolver=resolver, field="target.credential",
        )

    def _build(
        self,
        tenant_id: str,
        client_id: str,
        cloud: str | pairs.CustomCloud,
        definition: pairs.ClientSecretCredential | pairs.CertificateCredential | pairs.FederatedCredential,
        resolver: SecretResolver,
        field: str,
    ) -> TokenCredential:
        side = field.split(".", 1)[0]
        problem = cloud_problem(f"{side}.cloud", cloud, environ=self._environ)
        if problem:
            raise CredentialUnusable(problem)
        options: dict[str, Any] = {"authority": pairs.cloud_endpoints(cloud).authority}
        custom = isinstance(cloud, pairs.CustomCloud)
        if isinstance(definition, pairs.ClientSecretCredential):
            secret = resolver.resolve(definition.secret)
            return ClientSecretCredential(
                tenant_id, client_id, secret, disable_instance_discovery=custom, **options
            )
        if isinstance(definition, pairs.CertificateCredential):
            data = resolver.resolve_bytes(definition.certificate)
            password = resolver.resolve(definition.password).encode("utf-8") if definition.password else None
            try:
                return CertificateCredential(
                    tenant_id, client_id, certificate_data=data, password=password,
                    disable_instance_discovery=custom, **options,
                )
            except (ValueError, TypeError):
                # cryptography's messages say nothing secret, but "wrong password" and "not a certificate" are
                # all an admin can act on.
                raise CredentialUnusable(
                    f"{field}.certificate ({definition.certificate}): not a PEM or PFX certificate with a private key,"
                    " or the password is wrong"
                ) from None
        problem = federation_problem(field, cloud)  # before any managed-identity token is asked for
        if problem:
            raise CredentialUnusable(problem)
        hosting = self._hosting_cloud()
        refuse_cross_cloud(field, cloud, hosting)
        managed_identity = self._managed_identity(definition.managed_identity_client_id)
        # The managed identity's token comes from the cloud the app runs in: so does the audience it is asked for.
        scope = f"{TOKEN_EXCHANGE_AUDIENCES[hosting]}/.default"

        def assertion() -> str:
            return managed_identity.get_token(scope).token

        # ClientAssertionCredential talks to the token endpoint directly (no MSAL instance discovery).
        return ClientAssertionCredential(tenant_id, client_id, assertion, **options)

    def _hosting_cloud(self) -> str:
        return hosting_cloud(os.environ if self._environ is None else self._environ)

    def _managed_identity(self, client_id: str | None) -> TokenCredential:
        client_id = client_id or setting("AZURE_CLIENT_ID", os.environ if self._environ is None else self._environ)
        cached = self._managed_identities.get(client_id)
        if cached is None:
            cached = self._managed_identity_factory(client_id)
            self._managed_identities[client_id] = cached
        return cached


def _references(
    definition: pairs.ClientSecretCredential | pairs.CertificateCredential | pairs.FederatedCredential,
) -> tuple[str, ...]:
    if isinstance(definition, pairs.ClientSecretCredential):
        return (definition.secret,)
    if isinstance(definition, pairs.CertificateCredential):
        return (definition.certificate, definition.password) if definition.password else (definition.certificate,)
    return ()


def hosting_cloud(environ: Mapping[str, str] | None = None) -> str:
    """The cloud the app runs in (app setting CTCS_HOSTING_CLOUD), checked."""
    name = (setting("CTCS_HOSTING_CLOUD", environ) or "global").strip().lower()
    if name not in ENTRA_CLOUD_OF:
        raise ConfigError(
            f"app setting CTCS_HOSTING_CLOUD must be one of {', '.join(ENTRA_CLOUD_OF)}, not {name!r}"
        )
    return name


def refuse_cross_cloud(field: str, cloud: str | pairs.CustomCloud, hosting: str) -> None:
    """Managed-identity federation cannot cross clouds: a named pair cloud must share the hosting cloud's Entra.
    A custom cloud (its own authority URL) is taken as the admin wrote it."""
    if isinstance(cloud, str) and ENTRA_CLOUD_OF[cloud] != ENTRA_CLOUD_OF[hosting]:
        side = field.split(".", 1)[0]
        raise CredentialUnusable(
            f"{field}: managed identity federation cannot cross clouds: the app runs in the {hosting} cloud "
            f"(CTCS_HOSTING_CLOUD) but {side}.cloud is {cloud}; use a certificate for this side, or run a ctcs "
            f"deployment in the {cloud} cloud"
        )


shared_credentials = CredentialCache()
"""The process-wide cache `sync.app.wiring.connectors` uses by default."""
