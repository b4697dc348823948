"""The token authority (login.microsoftonline.com stand-in) and the App Service managed-identity endpoint.

Routes (all under the authority base URL):
    GET  /{tenant}/v2.0/.well-known/openid-configuration  tenant discovery (MSAL reads token_endpoint from it)
    GET  /{tenant}/discovery/v2.0/keys                     JWKS of the signing key
    POST /{tenant}/oauth2/v2.0/token                       client_credentials with client_secret or client_assertion
Refusals with Entra's codes: an app not consented in the tenant (AADSTS700016), a wrong secret (7000215), a
certificate not on the app (700027), an assertion outside its time range (700024, `cloud.clock_skew` seconds
moves the authority's clock; an expired federated assertion gets 700024 too, as from Entra), a managed identity whose subject no federated record names (700213).
    GET  /msi/token                                        App Service managed identity (IDENTITY_ENDPOINT)
Clients must pass `disable_instance_discovery=True`: otherwise MSAL asks login.microsoftonline.com (not loopback) to
validate the unknown authority host. `{tenant}` is the tenant GUID or its domain. Errors follow Entra: JSON with error, error_description ("AADSTSnnnn: ..."),
error_codes, timestamp, trace_id, correlation_id. Secrets and assertions are never logged or echoed.
"""

from __future__ import annotations

import datetime as dt
import hmac
import time
import uuid
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

import jwt
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from sim.tokens import TOKEN_EXCHANGE_AUDIENCE, TokenExpired, TokenRejected
from sim.transient import transient_response

if TYPE_CHECKING:
    from sim.cloud import SimCloud
    from sim.tenant import AppRegistration, Tenant

JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
CLOCK_SKEW_ALLOWED = 300  # seconds of clock difference Entra tolerates on a client assertion


def _iso(moment: float) -> str:
    return dt.datetime.fromtimestamp(moment, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f0Z")


class AuthError(Exception):
    def __init__(self, status: int, error: str, code: int, description: str) -> None:
        super().__init__(description)
        self.status, self.error, self.code, self.description = status, error, code, description

    def response(self) -> JSONResponse:
        trace, correlation = str(uuid.uuid4()), str(uuid.uuid4())
        stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%SZ")
        body = {
            "error": self.error,
            "error_description": f"AADSTS{self.code}: {self.description} Trace ID: {trace} "
            f"Correlation ID: {correlation} Timestamp: {stamp}",
            "error_codes": [self.code],
            "timestamp": stamp,
            "trace_id": trace,
            "correlation_id": correlation,
            "error_uri": f"https://login.microsoftonline.com/error?code={self.code}",
        }
        return JSONResponse(body, status_code=self.status)


def build_authority_app(cloud: SimCloud) -> Starlette:
    base = cloud.endpoints["authority"]

    def tenant_or_error(segment: str) -> Tenant:
        tenant = cloud.find_tenant(segment)
        if tenant is None:
            raise AuthError(400, "invalid_request", 90002, f"Tenant '{segment}' not found.")
        return tenant

    async def openid_configuration(request: Request) -> Response:
        try:
            tenant = tenant_or_error(request.path_params["tenant"])
        except AuthError as exc:
            return exc.response()
        root = f"{base}/{tenant.tenant_id}"
        return JSONResponse(
            {
                "issuer": f"{root}/v2.0",
                "authorization_endpoint": f"{root}/oauth2/v2.0/authorize",
                "token_endpoint": f"{root}/oauth2/v2.0/token",
                "device_authorization_endpoint": f"{root}/oauth2/v2.0/devicecode",
                "jwks_uri": f"{root}/discovery/v2.0/keys",
                "response_types_supported": ["code", "id_token", "token"],
                "subject_types_supported": ["pairwise"],
                "id_token_signing_alg_values_supported": ["RS256"],
                "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt", "client_secret_basic"],
                "tenant_region_scope": "EU",
                "cloud_instance_name": "127.0.0.1",
            }
        )

    async def keys(request: Request) -> Response:
        return JSONResponse({"keys": [cloud.signer.jwk()]})

    async def token(request: Request) -> Response:
        cloud.counts.add("token", ("token", "oauth2/v2.0/token"))
        fault = cloud.faults.take("token", request.url.path)
        if fault is not None:
            if fault.kind == "token_failure":
                return AuthError(
                    500, "temporarily_unavailable", 50000, "There was an error issuing a token or an issue with our sign-in service."
                ).response()
            return transient_response(fault, graph_style=True)
        try:
            return await _issue(request)
        except AuthError as exc:
            cloud.counts.add(("token", "rejected"))
            return exc.response()

    async def _issue(request: Request) -> Response:
        tenant = tenant_or_error(request.path_params["tenant"])
        # Parsed by hand: Starlette's form parser needs python-multipart, which the project does not ship.
        fields = {key: values[-1] for key, values in parse_qs((await request.body()).decode(), keep_blank_values=True).items()}
        if fields.get("grant_type") != "client_credentials":
            raise AuthError(400, "unsupported_grant_type", 70003, "The app requested an unsupported grant type.")
        client_id = fields.get("client_id", "").lower()
        app = tenant.apps.get(client_id)
        if app is None or not app.consented:
            raise AuthError(
                400, "unauthorized_client", 700016,
                f"Application with identifier '{client_id}' was not found in the directory '{tenant.name}'. "
                "This can happen if the application has not been installed by the administrator of the tenant.",
            )
        resource = _resource_of(fields.get("scope", ""))
        if resource not in cloud.known_resources():
            raise AuthError(
                400, "invalid_resource", 500011,
                f"The resource principal named {resource} was not found in the tenant named {tenant.name}.",
            )
        _authenticate(tenant, app, fields, token_endpoint=f"{base}/{tenant.tenant_id}/oauth2/v2.0/token")
        access_token, lifetime = cloud.signer.issue(
            tenant_id=tenant.tenant_id, client_id=app.client_id, audience=resource, roles=app.roles,
            lifetime=cloud.token_lifetime,
        )
        cloud.counts.add(("token", "issued"))
        return JSONResponse(
            {"token_type": "Bearer", "expires_in": lifetime, "ext_expires_in": lifetime, "access_token": access_token}
        )

    def _authenticate(tenant: Tenant, app: AppRegistration, fields: dict[str, str], *, token_endpoint: str) -> None:
        if "client_secret" in fields:
            if not app.secret_matches(fields["client_secret"]):
                raise AuthError(
                    401, "invalid_client", 7000215,
                    "Invalid client secret provided. Ensure the secret being sent in the request is the client secret "
                    f"value, not the client secret ID, for a secret added to app '{app.client_id}'.",
                )
            return
        assertion = fields.get("client_assertion")
        if not assertion:
            raise AuthError(
                401, "invalid_client", 7000218,
                "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.",
            )
        if fields.get("client_assertion_type") != JWT_BEARER:
            raise AuthError(400, "invalid_request", 50027, "Invalid client_assertion_type.")
        try:
            header = jwt.get_unverified_header(assertion)
        except jwt.PyJWTError as exc:
            raise AuthError(401, "invalid_client", 50027, "Invalid JWT token. Token format not valid.") from exc
        if "x5t" in header or "x5t#S256" in header:
            _check_certificate_assertion(app, assertion, header, token_endpoint)
        else:
            _check_federated_assertion(app, assertion)

    def _check_certificate_assertion(app: AppRegistration, assertion: str, header: dict[str, Any], endpoint: str) -> None:
        cert = app.certificate_by_thumbprint(x5t=header.get("x5t"), x5t_s256=header.get("x5t#S256"))
        if cert is None:
            raise AuthError(
                401, "invalid_client", 700027,
                "The certificate with identifier used to sign the client assertion is not registered on application. "
                f"[Reason - The key was not found., Thumbprint of key used by client: '{header.get('x5t') or header.get('x5t#S256')}']",
            )
        try:
            claims = jwt.decode(
                assertion, cert.certificate.public_key(), algorithms=["RS256", "PS256"],  # type: ignore[arg-type]
                audience=[endpoint, endpoint.removesuffix("/oauth2/v2.0/token") + "/v2.0"],
                # Lifetime is checked below against the authority's own clock (skewed on demand).
                options={"require": ["exp", "aud", "iss", "sub"], "verify_exp": False, "verify_nbf": False},
            )
        except jwt.InvalidAudienceError as exc:
            raise AuthError(401, "invalid_client", 700212, "The client assertion audience is not the token endpoint.") from exc
        except jwt.PyJWTError as exc:
            raise AuthError(401, "invalid_client", 700027, "Client assertion contains an invalid signature.") from exc
        _check_assertion_time(claims)
        if str(claims["iss"]).lower() != app.client_id or str(claims["sub"]).lower() != app.client_id:
            raise AuthError(401, "invalid_client", 700023, "Client assertion iss/sub must be the client id.")

    def _check_assertion_time(claims: dict[str, Any]) -> None:
        """Entra allows five minutes of clock skew; `cloud.clock_skew` moves the authority's clock."""
        now = time.time() + cloud.clock_skew
        expires, not_before = float(claims["exp"]), float(claims.get("nbf") or 0)
        if now > expires + CLOCK_SKEW_ALLOWED or now < not_before - CLOCK_SKEW_ALLOWED:
            raise _outside_valid_time(now, not_before, expires)

    def _check_federated_assertion(app: AppRegistration, assertion: str) -> None:
        try:
            claims = cloud.signer.verify(assertion, audience=TOKEN_EXCHANGE_AUDIENCE)
        except TokenExpired as exc:
            # Entra answers an expired federated assertion as it answers an expired certificate assertion.
            raise _outside_valid_time(time.time() + cloud.clock_skew, exc.not_before, exc.expires) from exc
        except TokenRejected as exc:
            raise AuthError(400, "invalid_request", 700211, f"Federated assertion rejected: {exc}") from exc
        subject = str(claims.raw.get("sub", "")).lower()
        if subject not in app.federated_subjects and claims.client_id not in app.federated_subjects:
            if app.federated_subjects:  # records exist, but for another subject (a recreated identity)
                raise AuthError(
                    401, "invalid_client", 700213,
                    f"No matching federated identity record found for presented assertion subject '{subject}'. "
                    "Check your federated identity credential Subject, Audience and Issuer against the presented "
                    "assertion. https://learn.microsoft.com/entra/workload-id/workload-identity-federation",
                )
            raise AuthError(
                400, "invalid_request", 70021,
                "No matching federated identity record found for presented assertion. "
                f"Assertion Issuer: '{claims.raw.get('iss')}'. Assertion Subject: '{subject}'. "
                f"Assertion Audience: '{TOKEN_EXCHANGE_AUDIENCE}'.",
            )

    async def managed_identity(request: Request) -> Response:
        cloud.counts.add("identity")
        fault = cloud.faults.take("identity", request.url.path)
        if fault is not None:
            return transient_response(fault, graph_style=True)
        presented = request.headers.get("x-identity-header", "")
        if not hmac.compare_digest(presented.encode(), cloud.identity_header.encode()):
            return JSONResponse({"statusCode": 401, "message": "Unauthorized: missing or wrong X-IDENTITY-HEADER"}, 401)
        params = request.query_params
        if params.get("api-version") != "2019-08-01" or not params.get("resource"):
            return JSONResponse({"statusCode": 400, "message": "api-version 2019-08-01 and resource are required"}, 400)
        identity = cloud.find_managed_identity(
            params.get("client_id") or params.get("principal_id") or params.get("object_id")
        )
        if identity is None:
            return JSONResponse({"statusCode": 400, "message": "No managed identity matches the request."}, 400)
        resource = _resource_of(params["resource"])
        access_token, lifetime = cloud.signer.issue(
            tenant_id=identity.tenant_id, client_id=identity.client_id, audience=resource,
            subject=identity.object_id, lifetime=cloud.token_lifetime,
        )
        return JSONResponse(
            {
                "access_token": access_token, "expires_on": str(int(time.time()) + lifetime), "resource": resource,
                "token_type": "Bearer", "client_id": identity.client_id,
            }
        )

    return Starlette(
        routes=[
            Route("/msi/token", managed_identity),
            Route("/{tenant}/v2.0/.well-known/openid-configuration", openid_configuration),
            Route("/{tenant}/discovery/v2.0/keys", keys),
            Route("/{tenant}/oauth2/v2.0/token", token, methods=["POST"]),
        ]
    )


def _outside_valid_time(now: float, not_before: float, expires: float) -> AuthError:
    return AuthError(
        401, "invalid_client", 700024,
        f"Client assertion is not within its valid time range. Current time: {_iso(now)}, assertion valid "
        f"from {_iso(not_before)}, expiry time of assertion {_iso(expires)}. Review the documentation at "
        "https://learn.microsoft.com/entra/identity-platform/certificate-credentials .",
    )


def _resource_of(scope: str) -> str:
    """`https://host:port/.default` → `https://host:port`; a bare resource is returned unchanged."""
    first = scope.split()[0] if scope.split() else ""
    return first.removesuffix("/.default").rstrip("/")

