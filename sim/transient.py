"""Responses for injected transient faults (throttling, unavailable backends), shared by all services."""

from __future__ import annotations

import datetime as dt
import uuid

from starlette.responses import JSONResponse, PlainTextResponse, Response

from sim.faults import FaultRule

CONCURRENCY_LIMIT_TEXT = (
    "You have reached the maximum number of concurrent requests per tenant. Please wait and try again"
)


def graph_error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    """Graph's error envelope, with the innerError Graph adds to every error."""
    inner = {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S"),
        "request-id": str(uuid.uuid4()),
        "client-request-id": str(uuid.uuid4()),
    }
    return JSONResponse({"error": {"code": code, "message": message, "innerError": inner}}, status, headers=headers)


def _retry_headers(fault: FaultRule) -> dict[str, str]:
    return {} if fault.retry_after is None else {"Retry-After": fault.retry_after}


def transient_response(fault: FaultRule, *, graph_style: bool) -> Response:
    """The answer for throttle / unavailable / gateway_timeout (both services) and the Exchange-only kinds."""
    headers = _retry_headers(fault)
    if fault.kind == "throttle":
        if graph_style:
            return graph_error(429, "TooManyRequests", "Please retry again later.", headers)
        return exchange_transient(429, "TooManyRequests", "Throttled", headers)
    if fault.kind == "unavailable":
        if graph_style:
            return graph_error(503, "serviceNotAvailable", "Service unavailable. Please retry later.", headers)
        return exchange_transient(503, "ServiceUnavailable", "The service is temporarily unavailable.", headers)
    if fault.kind == "gateway_timeout":
        if graph_style:
            return graph_error(504, "UnknownError", "Gateway timeout.", headers)
        return PlainTextResponse("504 Gateway Time-out", 504, headers=headers)
    if fault.kind == "concurrency_limit":
        return PlainTextResponse(CONCURRENCY_LIMIT_TEXT, 429, headers=headers)
    if fault.kind == "server_busy":
        return exchange_transient(
            400, "BadRequest",
            "Ex9E4F0B|Microsoft.Exchange.Data.Directory.ServerBusyException|The server is busy. Try again later.",
            {"X-ExceptionType": "ServerBusyException"},
        )
    raise ValueError(f"fault kind {fault.kind!r} is not a transient response")


def exchange_transient(status: int, code: str, detail: str, headers: dict[str, str] | None = None) -> JSONResponse:
    body = {"error": {"code": code, "message": "Error executing cmdlet", "details": [{"code": "Failed", "message": detail}]}}
    return JSONResponse(body, status, headers=headers)
