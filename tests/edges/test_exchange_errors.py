"""Admin API failures: every documented response shape, classified into the error tree of sync.errors."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from sync.core.retry import RetryBudget, RetryPolicy, parse_retry_after
from sync.errors import (
    AddressInUse,
    CreationQuotaReached,
    TargetAuthError,
    TargetError,
    TargetNotFound,
    TargetRejected,
    TargetThrottled,
    TargetTransient,
)
from sync.exchange.errors import ExchangeFailure, errors_in_success, read_failure, to_target_error

NOT_FOUND_TYPE = "Microsoft.Exchange.Configuration.Tasks.ManagementObjectNotFoundException"
NOT_FOUND_TEXT = "The operation couldn't be performed because object 'x' couldn't be found on 'DC1.prod.outlook.com'."
PROXY_TEXT = (
    'The proxy address "SMTP:adele@contoso.com" is already being used by the proxy addresses or LegacyExchangeDN of '
    '"Adele Vance". Please choose another proxy address.'
)


def envelope(detail: str | None = None, *, message: str = "Error executing cmdlet", internal: dict | None = None,
             code: str = "BadRequest") -> bytes:
    error: dict = {"code": code, "message": message}
    if detail is not None:
        error["details"] = [{"code": "Context", "message": detail}]
    if internal is not None:
        error["innererror"] = {"message": message, "type": "Microsoft.Exchange.Admin.OData.Core.ODataServiceException",
                               "internalexception": internal}
    return json.dumps({"error": error}).encode()


def test_json_string_detail_is_read_first() -> None:
    detail = json.dumps({"Message": NOT_FOUND_TEXT, "TypeName": NOT_FOUND_TYPE, "HelpUrl": ""})
    failure = read_failure(404, envelope(detail, internal={"message": "other", "type": "X.OtherException"}))
    assert failure == ExchangeFailure(404, "ManagementObjectNotFoundException", NOT_FOUND_TEXT, "BadRequest")


def test_pipe_string_detail() -> None:
    failure = read_failure(404, envelope(f"Ex6F9304|{NOT_FOUND_TYPE}|{NOT_FOUND_TEXT}"))
    assert failure.exception_type == "ManagementObjectNotFoundException"
    assert failure.message == NOT_FOUND_TEXT


def test_internal_exception_when_details_are_missing() -> None:
    body = envelope(None, internal={"message": PROXY_TEXT, "type": "Microsoft.Exchange.Data.ProxyAddressExistsException"})
    failure = read_failure(400, body)
    assert failure.exception_type == "ProxyAddressExistsException"
    assert failure.message == PROXY_TEXT


def test_internal_exception_holding_a_pipe_string() -> None:
    body = envelope(None, internal={"message": "Ex1|Microsoft.Exchange.Data.Directory.ADObjectAlreadyExistsException|"
                                    "The object 'CN=abc' already exists."})
    failure = read_failure(400, body)
    assert failure.exception_type == "ADObjectAlreadyExistsException"
    assert failure.message == "The object 'CN=abc' already exists."


def test_error_message_when_nothing_else() -> None:
    failure = read_failure(500, envelope(None, message='There are multiple recipients matching identity "x".'))
    assert failure.message == 'There are multiple recipients matching identity "x".'
    assert failure.exception_type is None


def test_plain_text_body_and_exception_type_header() -> None:
    failure = read_failure(503, b"Service Unavailable", {"X-ExceptionType": "Microsoft.Exchange.ServerBusyException"})
    assert failure == ExchangeFailure(503, "ServerBusyException", "Service Unavailable")


def test_empty_body() -> None:
    assert read_failure(504, b"").message == "HTTP 504"


def test_garbage_json_is_plain_text() -> None:
    assert read_failure(400, b"{not json").message == "{not json"


@pytest.mark.parametrize(
    "payload, expected_type",
    [
        ({"@adminapi.errors": [f"Ex1|{NOT_FOUND_TYPE}|{NOT_FOUND_TEXT}"], "value": []}, "ManagementObjectNotFoundException"),
        ({"@adminapi.errors": [{"Message": NOT_FOUND_TEXT, "TypeName": NOT_FOUND_TYPE}], "value": []},
         "ManagementObjectNotFoundException"),
        ({"@adminapi.errors": [json.dumps({"Message": NOT_FOUND_TEXT, "TypeName": NOT_FOUND_TYPE})]},
         "ManagementObjectNotFoundException"),
    ],
)
def test_errors_inside_a_200(payload: dict, expected_type: str) -> None:
    failure = errors_in_success(payload)
    assert failure is not None and failure.exception_type == expected_type and failure.message == NOT_FOUND_TEXT
    assert isinstance(to_target_error(failure, cmdlet="Set-MailContact"), TargetNotFound)


def test_a_200_without_errors_is_success() -> None:
    assert errors_in_success({"value": [], "@adminapi.warnings": ["careful"], "@adminapi.errors": []}) is None


@pytest.mark.parametrize(
    "failure, expected",
    [
        (ExchangeFailure(401, None, "token expired"), TargetAuthError),
        (ExchangeFailure(403, None, "no role"), TargetAuthError),
        (ExchangeFailure(429, None, "Too many"), TargetThrottled),
        (ExchangeFailure(503, None, "You have reached the maximum number of concurrent requests per tenant. "
                                    "Please wait and try again"), TargetThrottled),
        (ExchangeFailure(503, None, "unavailable"), TargetTransient),
        (ExchangeFailure(504, None, "gateway"), TargetTransient),
        (ExchangeFailure(400, "ServerBusyException", "busy"), TargetTransient),
        (ExchangeFailure(400, "TransientException", "x"), TargetTransient),
        (ExchangeFailure(400, "BackendCommunicationException", "x"), TargetTransient),
        (ExchangeFailure(400, "DCOverloadedException", "x"), TargetTransient),
        (ExchangeFailure(404, "ManagementObjectNotFoundException", NOT_FOUND_TEXT), TargetNotFound),
        (ExchangeFailure(400, None, NOT_FOUND_TEXT), TargetNotFound),
        (ExchangeFailure(400, "ADObjectAlreadyExistsException", "The object 'CN=a' already exists."), TargetRejected),
        (ExchangeFailure(400, None, "'adele' is not an SMTP e-mail address"), TargetRejected),
        (ExchangeFailure(400, None, "The value 'Narnia' is not valid for CountryOrRegion"), TargetRejected),
        (ExchangeFailure(500, None, 'There are multiple recipients matching identity "x".'), TargetRejected),
        (ExchangeFailure(302, None, "odd"), TargetError),
    ],
)
def test_classification(failure: ExchangeFailure, expected: type[TargetError]) -> None:
    error = to_target_error(failure, cmdlet="New-MailContact", retry_after=3.0)
    assert type(error) is expected
    assert "New-MailContact" in str(error)
    assert error.status == failure.status


def test_address_in_use_names_the_holder() -> None:
    error = to_target_error(ExchangeFailure(400, "ProxyAddressExistsException", PROXY_TEXT), cmdlet="New-MailContact")
    assert isinstance(error, AddressInUse)
    assert error.holder == "Adele Vance"


def test_address_in_use_recognised_by_text_alone() -> None:
    error = to_target_error(ExchangeFailure(400, None, PROXY_TEXT), cmdlet="Set-MailContact")
    assert isinstance(error, AddressInUse) and error.holder == "Adele Vance"


def test_throttled_carries_retry_after() -> None:
    error = to_target_error(ExchangeFailure(429, None, "slow down"), cmdlet="Get-Recipient", retry_after=0.249)
    assert isinstance(error, TargetThrottled) and error.retry_after == 0.249


@pytest.mark.parametrize(
    "header, seconds",
    [("5", 5.0), ("0.249", 0.249), ("0", 0.0), (" 180 ", 180.0), ("-3", 0.0), (None, None), ("", None),
     ("soon", None), ("nan", None), ("inf", None), ("Wed, 21 Oct 2015 07:28:30 GMT", 30.0)],
)
def test_parse_retry_after(header: str | None, seconds: float | None) -> None:
    now = datetime(2015, 10, 21, 7, 28, 0, tzinfo=UTC)
    assert parse_retry_after(header, now=now) == seconds


def test_budget_uses_retry_after_then_backoff_and_stops() -> None:
    budget = RetryBudget(RetryPolicy(max_retries=4, max_wait_seconds=10, base_delay=1, max_delay=3))
    waits = []
    for retry_after in (0.249, None, None, None):
        wait = budget.next_wait(retry_after)
        assert wait is not None
        budget.spend(wait)
        waits.append(wait)
    assert waits == [0.249, 2.0, 3.0, 3.0]  # 1*2**1, then capped at max_delay
    assert budget.next_wait(None) is None  # max_retries reached


def test_budget_refuses_a_wait_beyond_its_seconds() -> None:
    budget = RetryBudget(RetryPolicy(max_retries=10, max_wait_seconds=60))
    assert budget.next_wait(180.0) is None
    assert budget.next_wait(59.0) == 59.0


QUOTA_TEXT = "You've reached the maximum number of mail users and contacts you can create at this time."


@pytest.mark.parametrize("body", [
    envelope(f"Ex4B2C71|Microsoft.Exchange.Management.Tasks.RecipientUsageExceededRecentQuotaException|{QUOTA_TEXT}"),
    envelope(json.dumps({"Message": QUOTA_TEXT, "TypeName": "RecipientUsageExceededRecentQuotaException"})),
    envelope(None, message=QUOTA_TEXT),  # the type lost on the way: the words still say it
])
def test_the_creation_quota_is_its_own_error_not_a_rejection(body: bytes) -> None:
    error = to_target_error(read_failure(400, body), cmdlet="New-MailContact")
    assert isinstance(error, CreationQuotaReached) and not isinstance(error, TargetRejected | TargetTransient)
    assert error.exception_type == "RecipientUsageExceededRecentQuotaException" and error.status == 400


def test_the_concurrency_cap_and_a_spent_budget_are_told_apart() -> None:
    text = "You have reached the maximum number of concurrent requests per tenant. Please wait and try again"
    cap = to_target_error(read_failure(429, text.encode()), cmdlet="Set-Contact")
    assert isinstance(cap, TargetThrottled) and cap.concurrency and cap.retry_after is None
    budget = to_target_error(read_failure(429, envelope("Throttled")), cmdlet="Set-Contact", retry_after=7.0)
    assert isinstance(budget, TargetThrottled) and not budget.concurrency and budget.retry_after == 7.0
