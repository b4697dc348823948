"""The Exchange Online admin API: `POST /adminapi/beta/{tenant}/InvokeCommand` (tenant = GUID or domain), and the
undocumented `POST /adminapi/beta/{tenant}/$batch` (up to 10 InvokeCommand sub-requests, each with its own answer).

Each call meets the tenant's limits first (sim.exchange_limits: request budget, concurrency cap, latency; the
creation quota lives in New-MailContact), then runs the cmdlet.

Renders `CmdletError`s in the three `details[0].message` shapes of the reference (JSON string, pipe string,
innererror) inside either envelope seen live ("Error executing cmdlet", or "Invalid Operation" with an empty-prefix
pipe string: `ExchangeProfile.error_envelope`), sets `X-ExceptionType` and, on every answer, the budget and
concurrency headers (sim.exchange_limits), and pages Get-* results with `@odata.nextLink` (same body POSTed again).
`ResultSize` defaults to 1000 (with the "more results" warning); `Prefer: odata.maxpagesize=N` lowers the page size.
A token without `Exchange.ManageAsApp` is refused (403, with a body of NUL bytes by default, as seen live); an app whose Entra/Exchange roles hold no management role
with the cmdlet gets 401 "User is not allowed to call <cmdlet>", as Exchange's RBAC answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import uuid
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from sim.exchange_org import NS, CmdletError
from sim.tokens import Forbidden, TokenRejected, bearer_token
from sim.transient import CONCURRENCY_LIMIT_TEXT, exchange_transient, transient_response

if TYPE_CHECKING:
    from sim.cloud import SimCloud

DEFAULT_RESULT_SIZE = 1000
MAX_BATCH = 10  # sub-requests per $batch
FORBIDDEN_NUL_BYTES = 4  # the live 403's length is not known; any run of NUL bytes is the shape
QUOTA_EXCEPTION = NS["Quota"].rsplit(".", 1)[-1]
SKIPPED_SUB_HEADERS = {"content-length", "content-type"}
MORE_RESULTS_WARNING = (
    "There are more results available than are currently displayed. To view them, increase the value for the "
    "ResultSize parameter."
)


def error_response(error: CmdletError, *, shape: str | None = None, envelope: str = "classic") -> JSONResponse:
    """One failed cmdlet as Exchange answers it; `shape` overrides the error's own shape (json/pipe/innererror).
    `envelope` "invalid_operation" is the other form seen live: `error.message` "Invalid Operation", the type and
    text in an empty-prefix pipe string (`|Type|text`) under details, and the innererror."""
    shape = shape or error.shape
    short = error.type_name.rsplit(".", 1)[-1]
    code = {404: "NotFound", 500: "InternalServerError"}.get(error.status, "BadRequest")
    if envelope == "invalid_operation":
        return JSONResponse({"error": {
            "code": code, "message": "Invalid Operation",
            "details": [{"code": "Client", "message": f"|{error.type_name}|{error.message}"}],
            "innererror": {"message": error.message, "type": "Microsoft.Exchange.Admin.OData.Core.ODataServiceException",
                           "internalexception": {"message": error.message, "type": error.type_name}},
        }}, error.status, headers={"X-ExceptionType": short})
    body: dict[str, Any] = {"error": {"code": code, "message": "Error executing cmdlet"}}
    if shape == "json":
        detail = json.dumps({"Message": error.message, "TypeName": error.type_name, "ErrorCategory": "NotSpecified",
                             "ErrorId": f"[Server=AM0PR01MB0001,RequestId={uuid.uuid4()}]"})
        body["error"]["details"] = [{"code": "Failed", "message": detail}]
    elif shape == "pipe":
        body["error"]["details"] = [{"code": "Failed", "message": f"Ex{uuid.uuid4().hex[:6].upper()}|{error.type_name}|{error.message}"}]
    else:
        body["error"]["innererror"] = {
            "message": "Error executing cmdlet", "type": "Microsoft.Exchange.Admin.OData.Core.ODataServiceException",
            "internalexception": {"message": error.message, "type": error.type_name},
        }
    return JSONResponse(body, error.status, headers={"X-ExceptionType": short})


def forbidden(reason: str, *, body: str) -> Response:
    """A 403 (the token lacks Exchange.ManageAsApp): JSON, or NUL bytes as a live answer carried (`body="nul"`)."""
    if body == "nul":
        return Response(b"\x00" * FORBIDDEN_NUL_BYTES, 403)
    return JSONResponse({"error": {"code": "Forbidden", "message": reason}}, 403)


def not_allowed(cmdlet: str) -> JSONResponse:
    """What the admin API answers when the app holds no Exchange management role with the cmdlet (RBAC): 401."""
    message = f"User is not allowed to call {cmdlet}"
    return JSONResponse({"error": {"code": "Unauthorized", "message": message, "innererror": {
        "message": message, "type": "Microsoft.Exchange.Admin.OData.Core.ODataServiceException"}}}, 401)


def _result_size(value: Any) -> int | None:
    if value is None:
        return DEFAULT_RESULT_SIZE
    if str(value).lower() == "unlimited":
        return None
    try:
        return max(0, int(value))
    except ValueError as exc:
        raise CmdletError("Binding", f"Cannot bind parameter 'ResultSize'. Cannot convert value \"{value}\".") from exc


def _page_size(headers: Mapping[str, str], default: int) -> int:
    match = re.search(r"odata\.maxpagesize\s*=\s*(\d+)", headers.get("prefer", ""), re.IGNORECASE)
    return max(1, min(default, int(match.group(1)))) if match else default


def build_exchange_app(cloud: SimCloud) -> Starlette:
    async def invoke(request: Request) -> Response:
        tenant_segment = request.path_params["tenant"]
        try:
            body = json.loads(await request.body() or b"{}")
        except ValueError:
            body = {}
        return await _execute(cloud, tenant_segment, request.headers, body, dict(request.query_params))

    async def batch(request: Request) -> Response:
        """`$batch`: up to 10 InvokeCommand sub-requests, each answered with its own status, headers and body."""
        tenant_segment = request.path_params["tenant"]
        try:
            tenant, _ = cloud.authenticate(bearer_token(request.headers), "exchange", tenant_segment)
        except TokenRejected as exc:
            return JSONResponse({"error": {"code": "Unauthorized", "message": str(exc)}}, 401)
        except Forbidden as exc:
            return forbidden(str(exc), body=_forbidden_body(cloud, tenant_segment))
        if not tenant.exchange.limits.profile.batch:
            return JSONResponse({"error": {"code": "BadRequest", "message": "Batch requests are not supported."}}, 400)
        try:
            requests = json.loads(await request.body() or b"{}")["requests"]
        except (ValueError, KeyError, TypeError):
            requests = None
        if not isinstance(requests, list) or not 1 <= len(requests) <= MAX_BATCH:
            message = f"A batch request holds 1 to {MAX_BATCH} requests."
            return JSONResponse({"error": {"code": "BadRequest", "message": message}}, 400)
        cloud.counts.add("exchange_batches")
        answers = await asyncio.gather(*(_batch_item(cloud, tenant_segment, request.headers, item) for item in requests))
        return JSONResponse({"responses": list(answers)})

    return Starlette(routes=[
        Route("/adminapi/beta/{tenant}/InvokeCommand", invoke, methods=["POST"]),
        Route("/adminapi/beta/{tenant}/$batch", batch, methods=["POST"]),
    ])


async def _batch_item(cloud: SimCloud, tenant_segment: str, headers: Mapping[str, str], item: Any) -> dict[str, Any]:
    """One sub-request of a batch, run as a single call would be (limits, latency, faults), as a `responses[]` entry."""
    if not isinstance(item, dict) or not str(item.get("url", "")).split("?", 1)[0].endswith("/InvokeCommand"):
        item_id = item.get("id") if isinstance(item, dict) else None
        return {"id": item_id, "status": 400, "headers": {},
                "body": {"error": {"code": "BadRequest", "message": "Only InvokeCommand requests can be batched."}}}
    body = item.get("body") if isinstance(item.get("body"), dict) else {}
    response = await _execute(cloud, tenant_segment, headers, body, {})
    payload: Any = bytes(response.body).decode("utf-8")
    with contextlib.suppress(ValueError):
        payload = json.loads(payload)
    sub_headers = {_header_case(key): value for key, value in response.headers.items()
                   if key.lower() not in SKIPPED_SUB_HEADERS}
    return {"id": item.get("id"), "status": response.status_code, "headers": sub_headers, "body": payload}


async def _execute(
    cloud: SimCloud, tenant_segment: str, headers: Mapping[str, str], body: Any, query: Mapping[str, str]
) -> Response:
    """One InvokeCommand: injected faults, then the tenant's limits (budget, concurrency cap, latency), then the
    cmdlet. Every answer for a known tenant carries the Rate-Limit-* headers of its budget."""
    try:
        cmdlet = str(body["CmdletInput"]["CmdletName"])
        params = dict(body["CmdletInput"].get("Parameters") or {})
    except (KeyError, TypeError, AttributeError, ValueError):
        cmdlet, params = "", {}
    cloud.counts.add("exchange", ("exchange", cmdlet or "?"))
    fault = cloud.faults.take("exchange", cmdlet)
    if fault is not None:
        return transient_response(fault, graph_style=False)
    known = cloud.find_tenant(tenant_segment)
    if known is None:
        return await _run(cloud, tenant_segment, headers, cmdlet, params, query)
    limits = known.exchange.limits
    allowed, budget_headers = limits.spend()
    if not allowed:
        cloud.counts.add(("limits", "budget"), ("limits", "budget", cmdlet))
        return _with(exchange_transient(429, "TooManyRequests", "Throttled: the tenant's request budget is spent."),
                     budget_headers, limits.concurrency_headers())
    if not limits.enter():
        cloud.counts.add(("limits", "concurrency"), ("limits", "concurrency", cmdlet))
        retry_after = limits.profile.concurrency_retry_after
        return _with(PlainTextResponse(CONCURRENCY_LIMIT_TEXT, 429), budget_headers, limits.concurrency_headers(),
                     {"Retry-After": retry_after} if retry_after is not None else {})
    try:
        delay = limits.latency(cmdlet)
        if delay:
            await asyncio.sleep(delay)
        response = await _run(cloud, tenant_segment, headers, cmdlet, params, query)
        concurrency = limits.concurrency_headers()  # while this call still holds its slot: it counts itself
    finally:
        limits.leave()
    if response.status_code == 400 and response.headers.get("X-ExceptionType") == QUOTA_EXCEPTION:
        cloud.counts.add(("limits", "quota"))
    return _with(response, budget_headers, concurrency)


async def _run(
    cloud: SimCloud, tenant_segment: str, headers: Mapping[str, str], cmdlet: str, params: dict[str, Any],
    query: Mapping[str, str],
) -> Response:
    try:
        tenant, claims = cloud.authenticate(bearer_token(headers), "exchange", tenant_segment)
    except TokenRejected as exc:
        challenge = f'Bearer client_id="00000002-0000-0ff1-ce00-000000000000", error="invalid_token", error_description="{exc}"'
        return JSONResponse({"error": {"code": "Unauthorized", "message": str(exc)}}, 401,
                            headers={"WWW-Authenticate": challenge})
    except Forbidden as exc:
        return forbidden(str(exc), body=_forbidden_body(cloud, tenant_segment))
    if not cmdlet:
        return JSONResponse({"error": {"code": "BadRequest", "message": "The request body must hold CmdletInput."}}, 400)
    app = tenant.apps.get(claims.client_id)
    if app is not None and not app.may_run(cmdlet):
        return not_allowed(cmdlet)
    org = tenant.exchange
    try:
        result_size = _result_size(params.pop("ResultSize", None)) if cmdlet.startswith("Get-") else None
        objects = org.run(cmdlet, params)
    except CmdletError as error:
        if error.non_terminating or org.errors_in_200:
            return _ok(cloud, tenant_segment, [], errors=[{"Message": error.message, "TypeName": error.type_name,
                                                           "ErrorCategory": "NotSpecified"}])
        return error_response(error, envelope=org.limits.envelope())
    warnings: list[str] = []
    if result_size is not None and len(objects) > result_size:
        objects, warnings = objects[:result_size], [MORE_RESULTS_WARNING]
    offset = int(query.get("$skiptoken", "0") or 0)
    size = _page_size(headers, org.page_size)
    page = objects[offset : offset + size]
    select = [s.strip() for s in query.get("$select", "").split(",") if s.strip()]
    if select:
        page = [{k: v for k, v in o.items() if k.split("@", 1)[0] in select} for o in page]
    next_link = None
    if offset + size < len(objects):
        next_link = f"{cloud.endpoints['exchange']}/adminapi/beta/{tenant_segment}/InvokeCommand?$skiptoken={offset + size}"
        if select:
            next_link += "&$select=" + ",".join(select)
    return _ok(cloud, tenant_segment, page, warnings=warnings, next_link=next_link)


def _forbidden_body(cloud: SimCloud, tenant_segment: str) -> str:
    known = cloud.find_tenant(tenant_segment)
    return known.exchange.limits.profile.forbidden_body if known is not None else "json"


def _header_case(name: str) -> str:
    """Starlette keeps header names lower-case; a batch body spells them as Exchange does (`Retry-After`)."""
    return "X-ExceptionType" if name.lower() == "x-exceptiontype" else "-".join(p.capitalize() for p in name.split("-"))


def _with(response: Response, *extra: Mapping[str, str]) -> Response:
    for headers in extra:
        for name, value in headers.items():
            response.headers[name] = value
    return response


def _ok(cloud: SimCloud, tenant_segment: str, value: list[dict[str, Any]], *, warnings: list[str] | None = None,
        errors: list[dict[str, Any]] | None = None, next_link: str | None = None) -> JSONResponse:
    body: dict[str, Any] = {
        "@odata.context": f"{cloud.endpoints['exchange']}/adminapi/beta/{tenant_segment}/$metadata#Collection(Exchange.GenericHashTable)",
        "@adminapi.warnings": warnings or [],
    }
    if errors:
        body["@adminapi.errors"] = errors
    if next_link:
        body["@odata.nextLink"] = next_link
    body["value"] = value
    return JSONResponse(body, headers={"request-id": str(uuid.uuid4())})
