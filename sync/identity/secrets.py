"""Resolve the secret references of a pair definition: `kv:<name>`, `env:<NAME>`, `file:<path>`.

Pair files hold references, never values (docs/design.md, "Tenant pair definition"). `SecretResolver` turns a
reference into its value at run time. Every error (`CredentialUnusable`, a `ConfigError`) names the reference and
what is wrong with it, never the value; the resolver's repr never shows what it has cached
(invariant 6).

Key Vault is reached with the Function App's user-assigned managed identity in Azure and with
`DefaultAzureCredential` on a developer machine. Tests inject `secret_client_factory`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol

from azure.core.credentials import TokenCredential
from azure.core.exceptions import AzureError, ResourceNotFoundError

from sync.contract.pairs import TenantPair
from sync.errors import CredentialUnusable
from sync.identity.rooms import credential_references, reference_problem, secret_file
from sync.settings import setting

UNRESOLVED_KEY_VAULT_PREFIX = "@Microsoft.KeyVault("

# Key Vault stores a certificate's secret as base64 PFX or as PEM text, told apart by the content type.
PKCS12_CONTENT_TYPE = "application/x-pkcs12"

# Set by the Azure Functions / App Service platform when a managed identity is available. These are
# platform variables, not app settings, so they are not in sync.settings.
_MANAGED_IDENTITY_MARKERS = ("IDENTITY_ENDPOINT", "MSI_ENDPOINT")


class SecretLike(Protocol):
    """What the resolver reads from `SecretClient.get_secret` (a `KeyVaultSecret`)."""

    @property
    def value(self) -> str | None: ...

    @property
    def properties(self) -> Any: ...


class SecretClientLike(Protocol):
    """The part of `azure.keyvault.secrets.SecretClient` the resolver uses."""

    def get_secret(self, name: str) -> SecretLike: ...


SecretClientFactory = Callable[[str], SecretClientLike]
"""Builds a secret client for a vault URL."""


class SecretResolver:
    """Turns secret references into values; Key Vault secrets are cached per name for the resolver's life.

    `environ` defaults to `os.environ` and serves both `env:` references and the app settings the resolver
    reads (`CTCS_KEY_VAULT_URI`, `AZURE_CLIENT_ID`). `base_dir` anchors relative `file:` paths (default: the
    current directory).
    """

    def __init__(
        self,
        *,
        environ: Mapping[str, str] | None = None,
        secret_client_factory: SecretClientFactory | None = None,
        base_dir: Path | None = None,
    ) -> None:
        self._environ: Mapping[str, str] = os.environ if environ is None else environ
        self._secret_client_factory = secret_client_factory or self._default_secret_client
        self._base_dir = base_dir
        self._client: SecretClientLike | None = None
        self._cache: dict[str, tuple[str, str | None, str]] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"<SecretResolver cached={len(self._cache)}>"

    def clear(self) -> None:
        """Forget the Key Vault secrets read so far: after an admin replaced a certificate, the next read fetches it."""
        with self._lock:
            self._cache.clear()

    def version(self, reference: str) -> str:
        """Which value the reference holds now, without the value: the Key Vault secret's version, or a short hash
        of an `env:` or `file:` value. Credentials are cached by it, so a replaced secret or certificate is used
        as soon as it is read again."""
        kind, name = _split(reference)
        if kind == "kv":
            value, _, version = self._key_vault_secret(reference, name)
            if version:
                return f"kv:{version}"
            data = value.encode("utf-8")
        else:
            data = self.resolve_bytes(reference) if kind == "file" else self.resolve(reference).encode("utf-8")
        return "sha256:" + hashlib.sha256(data).hexdigest()[:16]

    def resolve(self, reference: str) -> str:
        """The value of a reference as text (client secrets, passwords)."""
        kind, name = self._allowed(reference)
        if kind == "kv":
            value, _, _ = self._key_vault_secret(reference, name)
        elif kind == "env":
            value = self._environ.get(name, "")
            if not value:
                raise CredentialUnusable(f"secret reference {reference}: environment variable {name} is not set or empty")
        else:
            raw = self._read_file(reference, name)
            try:
                value = raw.decode("utf-8").strip()
            except UnicodeDecodeError:
                raise CredentialUnusable(f"secret reference {reference}: the file is not UTF-8 text") from None
            if not value:
                raise CredentialUnusable(f"secret reference {reference}: the file is empty")
        _refuse_unresolved(reference, value)
        return value

    def resolve_bytes(self, reference: str) -> bytes:
        """The value of a reference as bytes (PEM or PFX certificates).

        A Key Vault certificate's secret is base64 PFX (content type application/x-pkcs12) or PEM text; a
        `file:` certificate is read as it is; an `env:` certificate is PEM text or base64 PFX.
        """
        kind, name = self._allowed(reference)
        if kind == "file":
            data = self._read_file(reference, name)
            _refuse_unresolved(reference, data[:64].decode("latin-1"))
            return data
        if kind == "kv":
            text, content_type, _ = self._key_vault_secret(reference, name)
            _refuse_unresolved(reference, text)
            if content_type == PKCS12_CONTENT_TYPE:
                return _base64(reference, text)
            return text.encode("utf-8")
        text = self.resolve(reference)
        if "-----BEGIN" in text:
            return text.encode("utf-8")
        return _base64(reference, text)

    def _allowed(self, reference: str) -> tuple[str, str]:
        """The reference split, once it is one a pair row may name (`sync.identity.rooms`): a row stored before
        the rules is refused here, at use."""
        kind, name = _split(reference)
        problem = reference_problem(reference, environ=self._environ, base_dir=self._base_dir)
        if problem:
            raise CredentialUnusable(f"secret reference {problem}")
        return kind, name

    def _key_vault_secret(self, reference: str, name: str) -> tuple[str, str | None, str]:
        with self._lock:
            cached = self._cache.get(name)
            if cached is not None:
                return cached
            client = self._vault_client()
            try:
                secret = client.get_secret(name)
            except ResourceNotFoundError:
                raise CredentialUnusable(f"secret reference {reference}: no such secret in the key vault") from None
            except AzureError as error:
                # Azure SDK messages describe the request (status, vault, auth), never the secret value.
                raise CredentialUnusable(f"secret reference {reference}: key vault read failed: {_first_line(error)}") from None
            if not secret.value:
                raise CredentialUnusable(f"secret reference {reference}: the key vault secret is empty")
            content_type = getattr(secret.properties, "content_type", None)
            version = getattr(secret.properties, "version", None)
            cached = (secret.value, content_type if isinstance(content_type, str) else None,
                      version if isinstance(version, str) else "")
            self._cache[name] = cached
            return cached

    def _vault_client(self) -> SecretClientLike:
        if self._client is None:
            vault_uri = setting("CTCS_KEY_VAULT_URI", self._environ)
            if not vault_uri:
                raise CredentialUnusable("app setting CTCS_KEY_VAULT_URI is not set: kv: secret references need it")
            self._client = self._secret_client_factory(vault_uri)
        return self._client

    def _default_secret_client(self, vault_uri: str) -> SecretClientLike:
        from azure.keyvault.secrets import SecretClient

        return SecretClient(vault_url=vault_uri, credential=key_vault_credential(self._environ))

    def _read_file(self, reference: str, name: str) -> bytes:
        path = secret_file(name, base_dir=self._base_dir)
        try:
            data = path.read_bytes()
        except OSError as error:
            raise CredentialUnusable(f"secret reference {reference}: cannot read the file ({error.strerror})") from None
        if not data.strip():
            raise CredentialUnusable(f"secret reference {reference}: the file is empty")
        return data


def unreadable_secrets(pair: TenantPair, resolver: SecretResolver) -> list[str]:
    """The pair's secret references `resolver` cannot read, each as "field.path: why" (never the value)."""
    problems = []
    for field_path, reference in credential_references(pair):
        try:
            if field_path.endswith(".certificate"):
                resolver.resolve_bytes(reference)
            else:
                resolver.resolve(reference)
        except CredentialUnusable as error:
            problems.append(f"{field_path}: {error}")
    return problems


def key_vault_credential(environ: Mapping[str, str] | None = None) -> TokenCredential:
    """The app's own identity: the user-assigned managed identity in Azure, the developer's login locally."""
    from azure.identity import DefaultAzureCredential, ManagedIdentityCredential

    environ = os.environ if environ is None else environ
    client_id = setting("AZURE_CLIENT_ID", environ)
    if any(environ.get(marker) for marker in _MANAGED_IDENTITY_MARKERS):
        return ManagedIdentityCredential(client_id=client_id) if client_id else ManagedIdentityCredential()
    return DefaultAzureCredential(managed_identity_client_id=client_id, exclude_interactive_browser_credential=True)


def _split(reference: str) -> tuple[str, str]:
    kind, sep, name = reference.partition(":")
    if not sep or kind not in ("kv", "env", "file") or not name.strip():
        # The text may be a pasted secret: do not echo it.
        raise CredentialUnusable("a secret reference must have the form kv:<name>, env:<NAME> or file:<path>")
    return kind, name.strip()


def _refuse_unresolved(reference: str, value: str) -> None:
    if value.lstrip().startswith(UNRESOLVED_KEY_VAULT_PREFIX):
        raise CredentialUnusable(
            f"secret reference {reference} holds an unresolved Key Vault reference (@Microsoft.KeyVault(...)); "
            "check the app's keyVaultReferenceIdentity and its access to the vault"
        )


def _base64(reference: str, text: str) -> bytes:
    try:
        return base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError):
        raise CredentialUnusable(f"secret reference {reference}: expected PEM text or base64 PFX") from None


def _first_line(error: Exception) -> str:
    text = str(error).strip().splitlines()
    return text[0][:300] if text else type(error).__name__
