"""`ExchangeProbe`: read-only cmdlet calls that answer with their HTTP status, headers and body, for the deep
connection test (`sync.app.admin.deep_test`).

`AdminApiClient` hides what the deep test wants to see (it retries, pages and raises): the probe sends one
`InvokeCommand` the way the client does (same headers, same token) but with a page size of its choosing, and
hands back the raw answer. Only `Get-*` cmdlets are allowed: a probe never writes to a tenant.

`READS` is what ctcs reads from each Get-* cmdlet it calls, taken from the modules that read them, so the deep
test follows the code when a property is added or dropped there.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import httpx

from sync.core.target import UNLISTED_PARAMETERS
from sync.exchange.client import SYSTEM_MAILBOX, AdminApiClient
from sync.exchange.contacts import LISTED_PROPERTIES
from sync.exchange.errors import ExchangeFailure, read_answer
from sync.exchange.lookup import CUSTOM_ATTRIBUTES, RECIPIENT_PROPERTIES

# Per cmdlet: the properties ctcs reads of a mail contact (look-ups, the reconcile listing, the connection test,
# Get-Contact's unlisted parameters, an earlier create adopted by Get-MailContact).
READS: dict[str, tuple[str, ...]] = {
    "Get-Recipient": tuple(dict.fromkeys((*RECIPIENT_PROPERTIES, *LISTED_PROPERTIES, "DistinguishedName"))),
    "Get-Contact": ("Guid", *sorted(UNLISTED_PARAMETERS - {"MailTip"})),
    "Get-MailContact": ("Guid", "Name", "RecipientTypeDetails", "PrimarySmtpAddress", "ExternalEmailAddress",
                        *CUSTOM_ATTRIBUTES),
}
BUDGET_HEADERS = ("Rate-Limit-Limit", "Rate-Limit-Remaining", "Rate-Limit-Reset")
CONCURRENCY_HEADERS = ("X-Concurrencycount", "X-Combinedapponlyconcurrencycount")
_INTEGER = re.compile(r"^\s*-?\d+\s*$")
_SECONDS = re.compile(r"^\s*\d+(\.\d+)?\s*$")


@dataclass
class ProbeAnswer:
    """One call's answer: status, headers (names as sent), the rows of `value`, a next link, the error text."""

    status: int
    headers: dict[str, str] = field(default_factory=dict)
    rows: list[dict[str, Any]] = field(default_factory=list)
    next_link: str = ""
    error: str = ""

    @property
    def ok(self) -> bool:
        return not self.error

    def header(self, name: str) -> str | None:
        wanted = name.lower()
        return next((value for key, value in self.headers.items() if key.lower() == wanted), None)


class ExchangeProbe:
    """Get-* calls against one organisation through `api`'s credential and endpoint (never a Set-/New-/Remove-)."""

    def __init__(self, api: AdminApiClient, *, timeout: float = 60.0) -> None:
        self.api = api
        self._http = httpx.Client(timeout=timeout)
        self.answers: list[ProbeAnswer] = []  # every answer, for the header formats

    def close(self) -> None:
        self._http.close()

    def call(self, cmdlet: str, parameters: Mapping[str, Any], *, select: tuple[str, ...] = (),
             page_size: int = 1000, url: str = "") -> ProbeAnswer:
        if not cmdlet.startswith("Get-"):
            raise ValueError(f"a probe reads only: {cmdlet} is not a Get-* cmdlet")
        body = json.dumps({"CmdletInput": {"CmdletName": cmdlet, "Parameters": dict(parameters)}})
        target = url or self.api.url + (f"?$select={','.join(select)}" if select else "")
        headers = {
            "Authorization": f"Bearer {self.api.token()}", "Content-Type": "application/json",
            "Accept": "application/json", "X-AnchorMailbox": f"UPN:{SYSTEM_MAILBOX}@{self.api.organization}",
            "Prefer": f"odata.maxpagesize={page_size}", "X-ResponseFormat": "json", "X-CmdletName": cmdlet,
            "client-request-id": str(uuid.uuid4()),
        }
        try:
            response = self._http.post(target, content=body, headers=headers)
        except httpx.TransportError as error:
            answer = ProbeAnswer(0, error=f"Exchange unreachable ({type(error).__name__})")
            self.answers.append(answer)
            return answer
        answer = _answer(response)
        self.answers.append(answer)
        return answer


def _answer(response: httpx.Response) -> ProbeAnswer:
    headers = dict(response.headers.items())
    page = read_answer(response.status_code, response.content, response.headers)
    if isinstance(page, ExchangeFailure):
        return ProbeAnswer(response.status_code, headers, error=f"{page.exception_type or page.status}: {page.message}")
    rows = [row for row in page.get("value") or [] if isinstance(row, dict)]
    return ProbeAnswer(response.status_code, headers, rows, str(page.get("@odata.nextLink") or ""))


def value_format(value: str | None) -> str:
    """The format of a header value, never the value: absent, integer, seconds, iso-8601 or other."""
    if value is None:
        return "absent"
    if _INTEGER.match(value):
        return "integer"
    if _SECONDS.match(value):
        return "seconds"
    try:
        datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        return "other"
    return "iso-8601"
