"""Secret references: env:, file: and kv: (with an injected SecretClient: there is no Key Vault emulator)."""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError

from sync.errors import ConfigError
from sync.identity.secrets import SecretResolver

SECRET = "pa55-w0rd-value"
UNRESOLVED = "@Microsoft.KeyVault(SecretUri=https://v.vault.azure.net/secrets/x/)"
VAULT = "https://ctcs-test.vault.azure.net"


@dataclass
class FakeProperties:
    content_type: str | None = None


@dataclass
class FakeSecret:
    value: str | None
    properties: FakeProperties = field(default_factory=FakeProperties)


class FakeSecretClient:
    def __init__(self, secrets: dict[str, FakeSecret]) -> None:
        self.secrets = secrets
        self.calls: list[str] = []

    def get_secret(self, name: str) -> FakeSecret:
        self.calls.append(name)
        if name == "broken":
            raise HttpResponseError(message="(Forbidden) Caller is not authorized to perform action on resource.")
        if name not in self.secrets:
            raise ResourceNotFoundError(message=f"A secret with (name/id) {name} was not found in this key vault.")
        return self.secrets[name]


def kv_resolver(secrets: dict[str, FakeSecret], environ: dict[str, str] | None = None) -> tuple[SecretResolver, Any]:
    client = FakeSecretClient(secrets)
    vaults: list[str] = []

    def factory(vault_uri: str) -> FakeSecretClient:
        vaults.append(vault_uri)
        return client

    resolver = SecretResolver(environ={"CTCS_KEY_VAULT_URI": VAULT, **(environ or {})}, secret_client_factory=factory)
    return resolver, (client, vaults)


def files_in(directory: Path) -> dict[str, str]:
    return {"CTCS_SECRET_FILE_DIR": str(directory)}


def assert_no_secret(error: BaseException) -> None:
    assert SECRET not in str(error) and SECRET not in repr(error)


def test_env_reference() -> None:
    assert SecretResolver(environ={"CTCS_SECRET_MY": SECRET}).resolve("env:CTCS_SECRET_MY") == SECRET


def test_env_reference_missing_names_the_variable() -> None:
    with pytest.raises(ConfigError, match=r"env:CTCS_SECRET_NOPE.*CTCS_SECRET_NOPE is not set"):
        SecretResolver(environ={}).resolve("env:CTCS_SECRET_NOPE")


def test_env_reference_holding_an_unresolved_key_vault_reference() -> None:
    with pytest.raises(ConfigError, match=r"env:CTCS_SECRET_S holds an unresolved Key Vault reference"):
        SecretResolver(environ={"CTCS_SECRET_S": UNRESOLVED}).resolve("env:CTCS_SECRET_S")


def test_file_reference_text_and_bytes(tmp_path: Path) -> None:
    (tmp_path / "secret.txt").write_text(SECRET + "\n")
    (tmp_path / "cert.pfx").write_bytes(b"\x30\x82\x01\x00binary")
    resolver = SecretResolver(environ=files_in(tmp_path), base_dir=tmp_path)
    assert resolver.resolve("file:secret.txt") == SECRET
    assert resolver.resolve(f"file:{tmp_path / 'secret.txt'}") == SECRET
    assert resolver.resolve_bytes("file:cert.pfx") == b"\x30\x82\x01\x00binary"


def test_file_reference_errors_name_the_reference(tmp_path: Path) -> None:
    resolver = SecretResolver(environ=files_in(tmp_path), base_dir=tmp_path)
    with pytest.raises(ConfigError, match=r"file:missing\.txt: cannot read the file"):
        resolver.resolve("file:missing.txt")
    (tmp_path / "empty").write_text("  \n")
    with pytest.raises(ConfigError, match="file:empty: the file is empty"):
        resolver.resolve("file:empty")
    (tmp_path / "unresolved").write_text(UNRESOLVED)
    with pytest.raises(ConfigError, match="unresolved Key Vault reference"):
        resolver.resolve("file:unresolved")


@pytest.mark.parametrize("reference", [SECRET, "vault:x", "kv:", "env:", ""])
def test_malformed_reference_is_refused_without_echo(reference: str) -> None:
    with pytest.raises(ConfigError, match="kv:<name>, env:<NAME> or file:<path>") as caught:
        SecretResolver(environ={}).resolve(reference)
    assert_no_secret(caught.value)


def test_kv_reference_reads_the_vault_once_per_name() -> None:
    resolver, (client, vaults) = kv_resolver({"graph-secret": FakeSecret(SECRET)})
    assert resolver.resolve("kv:graph-secret") == SECRET
    assert resolver.resolve("kv:graph-secret") == SECRET
    assert client.calls == ["graph-secret"]
    assert vaults == [VAULT]
    assert SECRET not in repr(resolver)


def test_kv_certificate_pfx_is_base64_decoded_and_pem_is_text() -> None:
    pfx = b"\x30\x82binary-pfx"
    resolver, _ = kv_resolver({
        "cert-pfx": FakeSecret(base64.b64encode(pfx).decode(), FakeProperties("application/x-pkcs12")),
        "cert-pem": FakeSecret("-----BEGIN CERTIFICATE-----\nabc\n", FakeProperties("application/x-pem-file")),
    })
    assert resolver.resolve_bytes("kv:cert-pfx") == pfx
    assert resolver.resolve_bytes("kv:cert-pem").startswith(b"-----BEGIN CERTIFICATE-----")


def test_env_certificate_may_be_base64_pfx_or_pem() -> None:
    resolver = SecretResolver(environ={"CTCS_SECRET_PFX": base64.b64encode(b"\x30\x82x").decode(), "CTCS_SECRET_PEM": "-----BEGIN X-----"})
    assert resolver.resolve_bytes("env:CTCS_SECRET_PFX") == b"\x30\x82x"
    assert resolver.resolve_bytes("env:CTCS_SECRET_PEM") == b"-----BEGIN X-----"
    with pytest.raises(ConfigError, match="env:CTCS_SECRET_BAD: expected PEM text or base64 PFX"):
        SecretResolver(environ={"CTCS_SECRET_BAD": "not base64 !!"}).resolve_bytes("env:CTCS_SECRET_BAD")


def test_kv_errors_name_the_reference_never_the_value() -> None:
    resolver, _ = kv_resolver({"empty": FakeSecret(""), "unresolved": FakeSecret(UNRESOLVED)})
    with pytest.raises(ConfigError, match="kv:gone: no such secret in the key vault"):
        resolver.resolve("kv:gone")
    with pytest.raises(ConfigError, match=r"kv:broken: key vault read failed: .*not authorized"):
        resolver.resolve("kv:broken")
    with pytest.raises(ConfigError, match="kv:empty: the key vault secret is empty"):
        resolver.resolve("kv:empty")
    with pytest.raises(ConfigError, match="kv:unresolved holds an unresolved Key Vault reference"):
        resolver.resolve("kv:unresolved")


def test_kv_without_vault_setting() -> None:
    resolver = SecretResolver(environ={}, secret_client_factory=lambda uri: FakeSecretClient({}))
    with pytest.raises(ConfigError, match="CTCS_KEY_VAULT_URI is not set"):
        resolver.resolve("kv:anything")


def test_kv_vault_setting_itself_unresolved() -> None:
    resolver = SecretResolver(environ={"CTCS_KEY_VAULT_URI": UNRESOLVED}, secret_client_factory=lambda uri: FakeSecretClient({}))
    with pytest.raises(ConfigError, match="CTCS_KEY_VAULT_URI still holds an unresolved Key Vault reference"):
        resolver.resolve("kv:anything")


def test_default_vault_client_uses_managed_identity_in_azure() -> None:
    from azure.identity import DefaultAzureCredential, ManagedIdentityCredential

    from sync.identity.secrets import key_vault_credential

    in_azure = {"IDENTITY_ENDPOINT": "http://127.0.0.1:1/msi", "IDENTITY_HEADER": "h",
                "AZURE_CLIENT_ID": "00000000-0000-0000-0000-000000000001"}
    assert isinstance(key_vault_credential(in_azure), ManagedIdentityCredential)
    assert isinstance(key_vault_credential({}), DefaultAzureCredential)


def test_env_references_read_only_the_secret_prefix() -> None:
    environ = {"PATH": "/usr/bin", "AzureWebJobsStorage": "UseDevelopmentStorage=true", "CTCS_SECRET_OK": SECRET}
    for name in ("PATH", "AzureWebJobsStorage", "CTCS_SECRET_"):
        with pytest.raises(ConfigError, match=rf"env:{name} is not allowed: env: references must start with "
                                              r"CTCS_SECRET_ \(setting CTCS_SECRET_ENV_PREFIX\)") as caught:
            SecretResolver(environ=environ).resolve(f"env:{name}")
        assert "/usr/bin" not in str(caught.value)
    assert SecretResolver(environ={**environ, "CTCS_SECRET_ENV_PREFIX": "MINE_", "MINE_X": SECRET}).resolve(
        "env:MINE_X") == SECRET


def test_file_references_read_only_under_the_secret_directory(tmp_path: Path) -> None:
    allowed, outside = tmp_path / "secrets", tmp_path / "elsewhere"
    allowed.mkdir()
    outside.mkdir()
    (outside / "key.pem").write_text(SECRET)
    (allowed / "link.pem").symlink_to(outside / "key.pem")
    (allowed / "ok.pem").write_text(SECRET)
    resolver = SecretResolver(environ=files_in(allowed), base_dir=allowed)
    assert resolver.resolve("file:ok.pem") == SECRET
    for reference in (f"file:{outside / 'key.pem'}", "file:../elsewhere/key.pem", "file:link.pem", "file:/etc/hostname"):
        with pytest.raises(ConfigError, match=r"is not allowed: file: references must lie under .*CTCS_SECRET_FILE_DIR"):
            resolver.resolve_bytes(reference)
