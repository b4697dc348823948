"""Token flows: client secret, certificate (PEM and PFX), managed-identity federation, and rejections."""

from __future__ import annotations

import uuid

import httpx
import jwt
import pytest
from azure.core.exceptions import ClientAuthenticationError
from azure.identity import (
    CertificateCredential,
    ClientAssertionCredential,
    ClientSecretCredential,
    ManagedIdentityCredential,
)

from sim import SimCloud, Tenant, make_client_certificate


def _claims(token: str) -> dict[str, object]:
    return jwt.decode(token, options={"verify_signature": False})


def _kw(cloud: SimCloud) -> dict[str, object]:
    return {"authority": cloud.endpoints["authority"], "disable_instance_discovery": True}


def test_client_secret_token_has_graph_audience_and_tenant(cloud: SimCloud, tenant: Tenant) -> None:
    cid = str(uuid.uuid4())
    tenant.register_app(cid, secret="s3cret")
    token = ClientSecretCredential(tenant.tenant_id, cid, "s3cret", **_kw(cloud)).get_token(
        cloud.endpoints["graph"] + "/.default"
    )
    claims = _claims(token.token)
    assert claims["aud"] == cloud.endpoints["graph"]
    assert claims["tid"] == tenant.tenant_id
    assert claims["appid"] == cid


def test_tenant_domain_works_as_authority_tenant(cloud: SimCloud, tenant: Tenant) -> None:
    cid = str(uuid.uuid4())
    tenant.register_app(cid, secret="s3cret")
    token = ClientSecretCredential(tenant.domain, cid, "s3cret", **_kw(cloud)).get_token(
        cloud.endpoints["exchange"] + "/.default"
    )
    assert _claims(token.token)["aud"] == cloud.endpoints["exchange"]


def test_wrong_secret_is_rejected_without_echoing_it(cloud: SimCloud, tenant: Tenant) -> None:
    cid = str(uuid.uuid4())
    tenant.register_app(cid, secret="s3cret")
    with pytest.raises(ClientAuthenticationError) as caught:
        ClientSecretCredential(tenant.tenant_id, cid, "not-the-secret", **_kw(cloud)).get_token(
            cloud.endpoints["graph"] + "/.default"
        )
    assert "AADSTS7000215" in str(caught.value)
    assert "not-the-secret" not in str(caught.value)


def test_wrong_secret_raw_answer_is_401_invalid_client(cloud: SimCloud, tenant: Tenant, http: httpx.Client) -> None:
    cid = str(uuid.uuid4())
    tenant.register_app(cid, secret="s3cret")
    response = http.post(
        f"{cloud.endpoints['authority']}/{tenant.tenant_id}/oauth2/v2.0/token",
        data={"grant_type": "client_credentials", "client_id": cid, "client_secret": "nope",
              "scope": cloud.endpoints["graph"] + "/.default"},
    )
    assert response.status_code == 401
    body = response.json()
    assert body["error"] == "invalid_client" and body["error_codes"] == [7000215]


def test_unknown_app_and_unknown_tenant(cloud: SimCloud, tenant: Tenant, http: httpx.Client) -> None:
    form = {"grant_type": "client_credentials", "client_id": str(uuid.uuid4()), "client_secret": "x",
            "scope": cloud.endpoints["graph"] + "/.default"}
    unknown_app = http.post(f"{cloud.endpoints['authority']}/{tenant.tenant_id}/oauth2/v2.0/token", data=form)
    assert unknown_app.status_code == 400 and unknown_app.json()["error_codes"] == [700016]
    unknown_tenant = http.post(f"{cloud.endpoints['authority']}/{uuid.uuid4()}/oauth2/v2.0/token", data=form)
    assert unknown_tenant.status_code == 400 and unknown_tenant.json()["error_codes"] == [90002]


def test_unknown_resource_is_rejected(cloud: SimCloud, tenant: Tenant, http: httpx.Client) -> None:
    cid = str(uuid.uuid4())
    tenant.register_app(cid, secret="s3cret")
    response = http.post(
        f"{cloud.endpoints['authority']}/{tenant.tenant_id}/oauth2/v2.0/token",
        data={"grant_type": "client_credentials", "client_id": cid, "client_secret": "s3cret",
              "scope": "https://graph.microsoft.com/.default"},
    )
    assert response.status_code == 400 and response.json()["error"] == "invalid_resource"


@pytest.mark.parametrize("form", ["pem", "pfx"])
def test_certificate_credential(cloud: SimCloud, tenant: Tenant, form: str) -> None:
    cert = make_client_certificate("pfx-pass")
    cid = str(uuid.uuid4())
    tenant.register_app(cid, certificate_pem=cert.cert_pem)
    if form == "pem":
        credential = CertificateCredential(tenant.tenant_id, cid, certificate_data=cert.pem_bytes, **_kw(cloud))
    else:
        credential = CertificateCredential(
            tenant.tenant_id, cid, certificate_data=cert.pfx_bytes, password="pfx-pass", **_kw(cloud)
        )
    token = credential.get_token(cloud.endpoints["exchange"] + "/.default")
    assert _claims(token.token)["aud"] == cloud.endpoints["exchange"]


def test_unregistered_certificate_is_rejected(cloud: SimCloud, tenant: Tenant) -> None:
    registered, other = make_client_certificate(None), make_client_certificate(None)
    cid = str(uuid.uuid4())
    tenant.register_app(cid, certificate_pem=registered.cert_pem)
    credential = CertificateCredential(tenant.tenant_id, cid, certificate_data=other.pem_bytes, **_kw(cloud))
    with pytest.raises(ClientAuthenticationError, match="AADSTS700027"):
        credential.get_token(cloud.endpoints["exchange"] + "/.default")


def test_managed_identity_federation(cloud: SimCloud, tenant: Tenant) -> None:
    cid = str(uuid.uuid4())
    tenant.register_app(cid, federated_subject=cloud.managed_identity.object_id)
    identity = ManagedIdentityCredential(client_id=cloud.managed_identity.client_id)
    assertion = identity.get_token("api://AzureADTokenExchange/.default").token
    assert _claims(assertion)["aud"] == "api://AzureADTokenExchange"
    credential = ClientAssertionCredential(tenant.tenant_id, cid, lambda: assertion, **_kw(cloud))
    token = credential.get_token(cloud.endpoints["graph"] + "/.default")
    assert _claims(token.token)["appid"] == cid


def test_federation_with_untrusted_identity_is_rejected(cloud: SimCloud, tenant: Tenant) -> None:
    stranger = cloud.add_managed_identity()
    cid = str(uuid.uuid4())
    tenant.register_app(cid, federated_subject=cloud.managed_identity.object_id)
    assertion = ManagedIdentityCredential(client_id=stranger.client_id).get_token(
        "api://AzureADTokenExchange/.default"
    ).token
    credential = ClientAssertionCredential(tenant.tenant_id, cid, lambda: assertion, **_kw(cloud))
    with pytest.raises(ClientAuthenticationError, match="AADSTS70021"):
        credential.get_token(cloud.endpoints["graph"] + "/.default")


def test_identity_endpoint_requires_the_header(cloud: SimCloud, http: httpx.Client) -> None:
    response = http.get(
        f"{cloud.endpoints['authority']}/msi/token",
        params={"api-version": "2019-08-01", "resource": "api://AzureADTokenExchange"},
        headers={"X-IDENTITY-HEADER": "wrong"},
    )
    assert response.status_code == 401


def test_token_endpoint_failure_fault(cloud: SimCloud, tenant: Tenant, http: httpx.Client) -> None:
    cid = str(uuid.uuid4())
    tenant.register_app(cid, secret="s3cret")
    cloud.faults.inject("token", "token_failure")
    form = {"grant_type": "client_credentials", "client_id": cid, "client_secret": "s3cret",
            "scope": cloud.endpoints["graph"] + "/.default"}
    url = f"{cloud.endpoints['authority']}/{tenant.tenant_id}/oauth2/v2.0/token"
    assert http.post(url, data=form).status_code == 500
    assert http.post(url, data=form).status_code == 200
    assert cloud.counts[("faults", "token_failure")] == 1


def test_an_app_without_consent_in_the_tenant_is_not_found(cloud: SimCloud, tenant: Tenant, http: httpx.Client) -> None:
    cid = str(uuid.uuid4())
    tenant.register_app(cid, secret="s3cret").consented = False
    form = {"grant_type": "client_credentials", "client_id": cid, "client_secret": "s3cret",
            "scope": cloud.endpoints["graph"] + "/.default"}
    answer = http.post(f"{cloud.endpoints['authority']}/{tenant.tenant_id}/oauth2/v2.0/token", data=form)
    assert answer.status_code == 400 and answer.json()["error_codes"] == [700016]
    assert "has not been installed by the administrator" in answer.json()["error_description"]


def test_an_assertion_outside_the_allowed_clock_skew_is_refused(cloud: SimCloud, tenant: Tenant) -> None:
    cert = make_client_certificate(None)
    cid = str(uuid.uuid4())
    tenant.register_app(cid, certificate_pem=cert.cert_pem)
    try:
        cloud.clock_skew = 4 * 60  # within Entra's five minutes
        CertificateCredential(tenant.tenant_id, cid, certificate_data=cert.pem_bytes, **_kw(cloud)).get_token(
            cloud.endpoints["graph"] + "/.default")
        cloud.clock_skew = 30 * 60  # the authority's clock half an hour ahead: MSAL's assertion has expired
        with pytest.raises(ClientAuthenticationError, match="AADSTS700024: Client assertion is not within its valid time range"):
            CertificateCredential(tenant.tenant_id, cid, certificate_data=cert.pem_bytes, **_kw(cloud)).get_token(
                cloud.endpoints["exchange"] + "/.default")
    finally:
        cloud.clock_skew = 0.0


def test_a_recreated_identity_gets_the_subject_error(cloud: SimCloud, tenant: Tenant) -> None:
    cid = str(uuid.uuid4())
    tenant.register_app(cid, federated_subject=cloud.managed_identity.object_id)
    tenant.apps[cid].rotate_subjects(str(uuid.uuid4()))  # the identity the app trusted was replaced
    assertion = ManagedIdentityCredential(client_id=cloud.managed_identity.client_id).get_token(
        "api://AzureADTokenExchange/.default").token
    credential = ClientAssertionCredential(tenant.tenant_id, cid, lambda: assertion, **_kw(cloud))
    with pytest.raises(ClientAuthenticationError, match="AADSTS700213: No matching federated identity record found for "
                                                          "presented assertion subject"):
        credential.get_token(cloud.endpoints["graph"] + "/.default")


def test_an_expired_federated_assertion_gets_entras_time_range_error(cloud: SimCloud, tenant: Tenant) -> None:
    cid = str(uuid.uuid4())
    tenant.register_app(cid, federated_subject=cloud.managed_identity.object_id)
    identity = cloud.managed_identity
    expired, _ = cloud.signer.issue(tenant_id=identity.tenant_id, client_id=identity.client_id,
                                    audience="api://AzureADTokenExchange", subject=identity.object_id, lifetime=-60)
    credential = ClientAssertionCredential(tenant.tenant_id, cid, lambda: expired, **_kw(cloud))
    with pytest.raises(ClientAuthenticationError, match="AADSTS700024: Client assertion is not within its valid time "
                                                          "range") as refused:
        credential.get_token(cloud.endpoints["graph"] + "/.default")
    assert "AADSTS700211" not in str(refused.value)
