"""The Exchange Online admin API: `POST /adminapi/beta/{tenant}/InvokeCommand` (tenant = GUID or domain).

Renders `CmdletError`s in the three `details[0].message` shapes of the reference (JSON string, pipe string,
innererror), sets `X-ExceptionType`, and pages Get-* results with `@odata.nextLink` (same body POSTed again).
`ResultSize` defaults to 1000 (with the "more results" warning); `Prefer: odata.maxpagesize=N` lowers the page size.
A token without `Exchange.ManageAsApp` is refused (403); an app whose Entra/Exchange roles hold no management role
with the cmdlet gets 401 "User is not allowed to call <cmdlet>", as Exchange's RBAC answers.
"""

from __future__ import annotations

import json
import re
import uuid
from typing import TYPE_CHECKING, Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from sim.exchange_org import CmdletError
from sim.tokens import Forbidden, TokenRejected, bearer_token
from sim.transient import transient_response

if TYPE_CHECKING:
    from sim.cloud import SimCloud

DEFAULT_RESULT_SIZE = 1000
MORE_RESULTS_WARNING = (
    "There are more results available than are currently displayed. To view them, increase the value for the "
    "ResultSize parameter."
)


def error_response(error: CmdletError, *, shape: str | None = None) -> JSONResponse:
    """One failed cmdlet as Exchange answers it; `shape` overrides the error's own shape (json/pipe/innererror)."""
    shape = shape or error.shape
    short = error.type_name.rsplit(".", 1)[-1]
    code = {404: "NotFound", 500: "InternalServerError"}.get(error.status, "BadRequest")
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


def _page_size(request: Request, default: int) -> int:
    match = re.search(r"odata\.maxpagesize\s*=\s*(\d+)", request.headers.get("prefer", ""), re.IGNORECASE)
    return max(1, min(default, int(match.group(1)))) if match else default


def build_exchange_app(cloud: SimCloud) -> Starlette:
    async def invoke(request: Request) -> Response:
        tenant_segment = request.path_params["tenant"]
        try:
            body = json.loads(await request.body() or b"{}")
            cmdlet = str(body["CmdletInput"]["CmdletName"])
            params = dict(body["CmdletInput"].get("Parameters") or {})
        except (ValueError, KeyError, TypeError, AttributeError):
            cmdlet, params = "", {}
        cloud.counts.add("exchange", ("exchange", cmdlet or "?"))
        fault = cloud.faults.take("exchange", cmdlet)
        if fault is not None:
            return transient_response(fault, graph_style=False)
        try:
            tenant, claims = cloud.authenticate(bearer_token(request.headers), "exchange", tenant_segment)
        except TokenRejected as exc:
            challenge = f'Bearer client_id="00000002-0000-0ff1-ce00-000000000000", error="invalid_token", error_description="{exc}"'
            return JSONResponse({"error": {"code": "Unauthorized", "message": str(exc)}}, 401,
                                headers={"WWW-Authenticate": challenge})
        except Forbidden as exc:
            return JSONResponse({"error": {"code": "Forbidden", "message": str(exc)}}, 403)
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
            return error_response(error)
        warnings: list[str] = []
        if result_size is not None and len(objects) > result_size:
            objects, warnings = objects[:result_size], [MORE_RESULTS_WARNING]
        offset = int(request.query_params.get("$skiptoken", "0") or 0)
        size = _page_size(request, org.page_size)
        page = objects[offset : offset + size]
        select = [s.strip() for s in request.query_params.get("$select", "").split(",") if s.strip()]
        if select:
            page = [{k: v for k, v in o.items() if k.split("@", 1)[0] in select} for o in page]
        next_link = None
        if offset + size < len(objects):
            next_link = f"{cloud.endpoints['exchange']}/adminapi/beta/{tenant_segment}/InvokeCommand?$skiptoken={offset + size}"
            if select:
                next_link += "&$select=" + ",".join(select)
        return _ok(cloud, tenant_segment, page, warnings=warnings, next_link=next_link)

    return Starlette(routes=[Route("/adminapi/beta/{tenant}/InvokeCommand", invoke, methods=["POST"])])


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
    return JSONResponse(body, headers={"Rate-Limit-Limit": "100", "Rate-Limit-Remaining": "99",
                                       "Rate-Limit-Reset": "1", "request-id": str(uuid.uuid4())})
