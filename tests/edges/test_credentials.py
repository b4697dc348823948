"""Credentials through the simulated token authority: secret, PEM and PFX certificates, managed-identity federation."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from azure.core.exceptions import ClientAuthenticationError
from azure.identity import CertificateCredential, ClientAssertionCredential, ClientSecretCredential

from sim import SimCloud, Tenant, make_client_certificate
from sync.contract.pairs import TenantPair
from sync.errors import ConfigError
from sync.identity.credentials import CredentialCache
from sync.identity.secrets import SecretResolver
from tests.support.sim_pairs import trust_sim_federation

from .conftest import SECRET, new_guid


def graph_scope(cloud: SimCloud) -> str:
    return cloud.endpoints["graph"] + "/.default"


def test_client_secret_token_and_cache(
    cloud: SimCloud, source_tenant: Tenant, target_tenant: Tenant, resolver: SecretResolver,
    credentials: CredentialCache, make_pair: Callable[..., TenantPair],
) -> None:
    client = new_guid()
    source_tenant.register_app(client, secret=SECRET)
    pair = make_pair(source_tenant, target_tenant, source_client=client, target_client=new_guid())
    credential = credentials.for_source(pair, resolver)
    assert isinstance(credential, ClientSecretCredential)
    assert credential.get_token(graph_scope(cloud)).token
    tokens_fetched = cloud.counts["token"]
    assert credentials.for_source(pair, resolver) is credential  # one credential per app, reused
    assert credential.get_token(graph_scope(cloud)).token  # served from azure-identity's cache
    assert cloud.counts["token"] == tokens_fetched
    assert len(credentials) == 1


def test_wrong_secret_fails_without_echoing_it(
    cloud: SimCloud, source_tenant: Tenant, target_tenant: Tenant, tmp_path: Path,
    credentials: CredentialCache, make_pair: Callable[..., TenantPair],
) -> None:
    client = new_guid()
    source_tenant.register_app(client, secret="the-right-one")
    pair = make_pair(source_tenant, target_tenant, source_client=client, target_client=new_guid())
    credential = credentials.for_source(pair, SecretResolver(environ={"CTCS_SECRET_EDGE": SECRET}))
    with pytest.raises(ClientAuthenticationError) as caught:
        credential.get_token(graph_scope(cloud))
    assert SECRET not in str(caught.value)


@pytest.mark.parametrize("form", ["pem", "pfx"])
def test_certificate_from_file(
    cloud: SimCloud, source_tenant: Tenant, target_tenant: Tenant, tmp_path: Path,
    credentials: CredentialCache, make_pair: Callable[..., TenantPair], form: str,
) -> None:
    password = "pfx-password" if form == "pfx" else None
    cert = make_client_certificate(password)
    client = new_guid()
    target_tenant.register_app(client, certificate_pem=cert.cert_pem)
    (tmp_path / "app.cert").write_bytes(cert.pfx_bytes if form == "pfx" else cert.pem_bytes)
    definition = {"type": "certificate", "certificate": "file:app.cert"}
    if password:
        definition["password"] = "env:CTCS_SECRET_PFX_PASSWORD"
    resolver = SecretResolver(environ={"CTCS_SECRET_PFX_PASSWORD": "pfx-password", "CTCS_SECRET_FILE_DIR": str(tmp_path)},
                              base_dir=tmp_path)
    pair = make_pair(source_tenant, target_tenant, source_client=new_guid(), target_client=client,
                     target_credential=definition)
    credential = credentials.for_target(pair, resolver)
    assert isinstance(credential, CertificateCredential)
    assert credential.get_token(cloud.endpoints["exchange"] + "/.default").token


def test_wrong_pfx_password_is_a_config_error_naming_the_reference(
    source_tenant: Tenant, target_tenant: Tenant, tmp_path: Path,
    credentials: CredentialCache, make_pair: Callable[..., TenantPair],
) -> None:
    cert = make_client_certificate("right")
    (tmp_path / "app.pfx").write_bytes(cert.pfx_bytes)
    pair = make_pair(source_tenant, target_tenant, source_client=new_guid(), target_client=new_guid(),
                     target_credential={"type": "certificate", "certificate": "file:app.pfx", "password": "env:CTCS_SECRET_PW"})
    resolver = SecretResolver(environ={"CTCS_SECRET_PW": "wrong-password", "CTCS_SECRET_FILE_DIR": str(tmp_path)},
                              base_dir=tmp_path)
    with pytest.raises(ConfigError, match=r"target\.credential\.certificate \(file:app\.pfx\)") as caught:
        credentials.for_target(pair, resolver)
    assert "wrong-password" not in str(caught.value)


@pytest.mark.parametrize("client_id_from", ["pair", "app_setting"])
def test_managed_identity_federation(
    monkeypatch: pytest.MonkeyPatch, cloud: SimCloud, source_tenant: Tenant, target_tenant: Tenant, resolver: SecretResolver,
    make_pair: Callable[..., TenantPair], client_id_from: str,
) -> None:
    trust_sim_federation(cloud, monkeypatch)
    identity = cloud.add_managed_identity()
    client = new_guid()
    target_tenant.register_app(client, federated_subject=identity.object_id)
    definition = {"type": "managed_identity_federation"}
    if client_id_from == "pair":
        definition["managed_identity_client_id"] = identity.client_id
    cache = CredentialCache(environ={"AZURE_CLIENT_ID": identity.client_id if client_id_from == "app_setting" else ""})
    pair = make_pair(source_tenant, target_tenant, source_client=new_guid(), target_client=client,
                     target_credential=definition)
    credential = cache.for_target(pair, resolver)
    assert isinstance(credential, ClientAssertionCredential)
    assert credential.get_token(cloud.endpoints["exchange"] + "/.default").token
    assert cloud.counts["identity"] == 1  # the managed identity's token became the assertion
    assert cloud.counts[("token", "issued")] == 1


def test_federation_with_an_untrusted_identity_is_refused(
    monkeypatch: pytest.MonkeyPatch, cloud: SimCloud, source_tenant: Tenant, target_tenant: Tenant, resolver: SecretResolver,
    credentials: CredentialCache, make_pair: Callable[..., TenantPair],
) -> None:
    trust_sim_federation(cloud, monkeypatch)
    trusted, other = cloud.add_managed_identity(), cloud.add_managed_identity()
    client = new_guid()
    target_tenant.register_app(client, federated_subject=trusted.object_id)
    pair = make_pair(source_tenant, target_tenant, source_client=new_guid(), target_client=client,
                     target_credential={"type": "managed_identity_federation",
                                        "managed_identity_client_id": other.client_id})
    with pytest.raises(ClientAuthenticationError):
        credentials.for_target(pair, resolver).get_token(cloud.endpoints["exchange"] + "/.default")


def test_cache_keys_on_the_definition(
    source_tenant: Tenant, target_tenant: Tenant, resolver: SecretResolver,
    credentials: CredentialCache, make_pair: Callable[..., TenantPair],
) -> None:
    client = new_guid()
    first = make_pair(source_tenant, target_tenant, source_client=client, target_client=new_guid())
    second = make_pair(source_tenant, target_tenant, source_client=client, target_client=new_guid(),
                       source_credential={"type": "client_secret", "secret": "env:CTCS_SECRET_OTHER"})
    other_resolver = SecretResolver(environ={"CTCS_SECRET_OTHER": "x"})
    assert credentials.for_source(first, resolver) is credentials.for_source(first, resolver)
    assert credentials.for_source(second, other_resolver) is not credentials.for_source(first, resolver)
    credentials.clear()
    assert len(credentials) == 0


def test_federation_never_crosses_clouds(
    source_tenant: Tenant, target_tenant: Tenant, resolver: SecretResolver, make_pair: Callable[..., TenantPair],
) -> None:
    from sync.contract.pairs import parse_pair
    from sync.errors import CredentialUnusable

    pair = make_pair(source_tenant, target_tenant, source_client=new_guid(), target_client=new_guid(),
                     target_credential={"type": "managed_identity_federation"})
    usgov = parse_pair({**json.loads(pair.to_json()), "target": {**json.loads(pair.to_json())["target"], "cloud": "usgov"}})
    with pytest.raises(CredentialUnusable) as caught:
        CredentialCache(environ={"CTCS_HOSTING_CLOUD": "global"}).for_target(usgov, resolver)
    message = str(caught.value)
    assert message.startswith("target.credential: managed identity federation cannot cross clouds")
    assert "runs in the global cloud" in message and "target.cloud is usgov" in message
    # DoD shares the US Government cloud's Entra: allowed from a usgov deployment.
    dod = parse_pair({**json.loads(pair.to_json()), "target": {**json.loads(pair.to_json())["target"], "cloud": "usgovdod"}})
    assert CredentialCache(environ={"CTCS_HOSTING_CLOUD": "usgov"}).for_target(dod, resolver) is not None
    with pytest.raises(ConfigError, match="CTCS_HOSTING_CLOUD must be one of"):
        CredentialCache(environ={"CTCS_HOSTING_CLOUD": "mars"}).for_target(dod, resolver)


@pytest.mark.parametrize(("hosting", "audience"), [("global", "api://AzureADTokenExchange"),
                                                   ("usgov", "api://AzureADTokenExchangeUSGov"),
                                                   ("china", "api://AzureADTokenExchangeChina")])
def test_the_token_exchange_audience_is_the_hosting_clouds(
    cloud: SimCloud, monkeypatch: pytest.MonkeyPatch, source_tenant: Tenant, target_tenant: Tenant, resolver: SecretResolver, make_pair: Callable[..., TenantPair],
    hosting: str, audience: str,
) -> None:
    """The assertion is the app's own managed-identity token: its audience is the cloud the app runs in, also for a
    pair side in a custom cloud (which is taken as the admin wrote it)."""
    trust_sim_federation(cloud, monkeypatch)
    asked: list[str] = []

    class RecordingIdentity:
        def get_token(self, *scopes: str, **_: object) -> object:
            asked.extend(scopes)
            raise ClientAuthenticationError("stop here: the scope is what this test is about")

    cache = CredentialCache(environ={"CTCS_HOSTING_CLOUD": hosting}, managed_identity_factory=lambda _: RecordingIdentity())  # type: ignore[arg-type,return-value]
    pair = make_pair(source_tenant, target_tenant, source_client=new_guid(), target_client=new_guid(),
                     target_credential={"type": "managed_identity_federation", "managed_identity_client_id": new_guid()})
    with pytest.raises(ClientAuthenticationError):
        cache.for_target(pair, resolver).get_token("https://outlook.office365.com/.default")
    assert asked == [f"{audience}/.default"]


def test_federation_never_posts_the_assertion_to_a_foreign_authority(
    cloud: SimCloud, source_tenant: Tenant, target_tenant: Tenant, resolver: SecretResolver,
    make_pair: Callable[..., TenantPair],
) -> None:
    """A pair row that names its own authority would capture the managed identity's assertion (issue 22): ctcs
    sends it only to the Microsoft clouds' authorities, even outside Azure, and asks the identity for nothing."""
    from sync.contract.pairs import parse_pair
    from sync.errors import CredentialUnusable

    identity = cloud.add_managed_identity()
    pair = make_pair(source_tenant, target_tenant, source_client=new_guid(), target_client=new_guid(),
                     target_credential={"type": "managed_identity_federation",
                                        "managed_identity_client_id": identity.client_id})
    identity_tokens = cloud.counts["identity"]
    with SimCloud.start() as foreign:
        definition = json.loads(pair.to_json())
        definition["target"]["cloud"] = dict(foreign.endpoints)
        with pytest.raises(CredentialUnusable, match=r"^target\.credential: managed_identity_federation is not "
                                                     r"allowed with the token authority 127\.0\.0\.1:"):
            CredentialCache().for_target(parse_pair(definition), resolver).get_token(
                foreign.endpoints["exchange"] + "/.default")
        with pytest.raises(CredentialUnusable, match="managed_identity_federation is not allowed"):
            CredentialCache().for_target(pair, resolver)  # the simulator's own authority is not Microsoft's either
        assert foreign.counts["token"] == 0 and foreign.counts["identity"] == 0
    assert cloud.counts["identity"] == identity_tokens, "no managed-identity token was asked for"


def test_a_custom_cloud_in_azure_needs_its_hosts_listed(
    source_tenant: Tenant, target_tenant: Tenant, resolver: SecretResolver, make_pair: Callable[..., TenantPair],
) -> None:
    from sync.errors import CredentialUnusable

    pair = make_pair(source_tenant, target_tenant, source_client=new_guid(), target_client=new_guid())
    in_azure = {"WEBSITE_INSTANCE_ID": "abc123"}
    with pytest.raises(CredentialUnusable, match=r"^target\.cloud\.authority: 127\.0\.0\.1 is not allowed: a custom "
                                                 r"cloud in Azure must list each of its hosts in the app setting "
                                                 r"CTCS_ALLOWED_CLOUD_HOSTS"):
        CredentialCache(environ=in_azure).for_target(pair, resolver)
    listed = CredentialCache(environ={**in_azure, "CTCS_ALLOWED_CLOUD_HOSTS": "login.example, 127.0.0.1"})
    assert listed.for_target(pair, resolver) is not None
    assert CredentialCache(environ={}).for_target(pair, resolver) is not None  # outside Azure: not checked


def test_a_replaced_secret_makes_a_new_credential_without_a_restart(
    source_tenant: Tenant, target_tenant: Tenant, make_pair: Callable[..., TenantPair],
) -> None:
    """Credentials are cached by the version of their secret: a Key Vault secret's version, a hash of an env: or
    file: value (never the value), so a fixed secret is used once it is read again, and the old one is dropped."""
    from types import SimpleNamespace

    versions = {"graph-secret": ("first-value", "v1")}

    class Vault:
        def get_secret(self, name: str) -> SimpleNamespace:
            value, version = versions[name]
            return SimpleNamespace(value=value, properties=SimpleNamespace(content_type=None, version=version))

    kv = make_pair(source_tenant, target_tenant, source_client=new_guid(), target_client=new_guid(),
                   source_credential={"type": "client_secret", "secret": "kv:graph-secret"})
    vault = SecretResolver(environ={"CTCS_KEY_VAULT_URI": "https://ctcs-test.vault.azure.net"},
                           secret_client_factory=lambda uri: Vault())
    cache = CredentialCache()
    first = cache.for_source(kv, vault)
    assert cache.for_source(kv, vault) is first
    versions["graph-secret"] = ("second-value", "v2")
    assert cache.for_source(kv, vault) is first, "the vault is read once per resolver until it is cleared"
    vault.clear()  # what a lifted quarantine does on every instance
    second = cache.for_source(kv, vault)
    assert second is not first and len(cache) == 1

    env = make_pair(source_tenant, target_tenant, source_client=new_guid(), target_client=new_guid())
    environ = {"CTCS_SECRET_EDGE": "first-value"}
    from_env = SecretResolver(environ=environ)
    before = cache.for_source(env, from_env)
    environ["CTCS_SECRET_EDGE"] = "second-value"
    assert cache.for_source(env, from_env) is not before
    assert "second-value" not in repr(cache.__dict__) and "first-value" not in repr(cache.__dict__.get("_credentials"))
