"""The deep connection test (`pairs test ID --deep`, `POST /api/pairs/{id}/test?deep=true`): after the connection
test (`sync.app.admin.connection_test`), read-only probes of every assumption ctcs makes about the two tenants, one
row each (assumed / seen / ok):

    target   each property ctcs reads from Get-Recipient, Get-Contact and Get-MailContact (on one mail contact);
             each filter form it sends (the anchor prefix, the other tools' anchors, look-ups by address, Guid,
             name and all of them at once); the Rate-Limit-* and concurrency header formats; paging
    source   the users/delta page size, the app's subscription headroom, the directory quota where Graph shows it
    source.exchange (when granted) the hidden-recipients filter and the two properties its listing reads

Nothing is written to either tenant: the Exchange probes are Get-* cmdlets (`sync.exchange.probe` refuses any
other), the Graph probes are GETs. A look-up whose value the organisation holds (taken from the first mail
contact) must find it; with no mail contact the forms are sent with values nothing holds and must be accepted.

`DeepReport.record()` is the redacted record `--record FILE` writes: property names, header names and value
formats, counts and the rows, never a name, an address, an id or a token of either tenant. The simulator loads
such a record as its profile (`CTCS_SIM_PROFILE`).
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from sync.app.admin.connection_test import ANCHOR_PREFIX, ConnectionReport, check_connection
from sync.app.wiring.probe import ConnectionProbe
from sync.app.wiring.runtime import Runtime
from sync.contract.pairs import TenantPair
from sync.core.diagnosis import Side
from sync.core.source import source_select
from sync.errors import CredentialUnusable, SourceError, TargetError
from sync.exchange import opath
from sync.exchange.probe import BUDGET_HEADERS, CONCURRENCY_HEADERS, READS, ExchangeProbe, ProbeAnswer, value_format
from sync.exchange.visibility import HIDDEN_FILTER, HIDDEN_SELECT
from sync.graph.deep_probe import GraphDeepProbe

log = logging.getLogger("ctcs.connection")

RECORD_VERSION = 1
OK, FAILED, UNVERIFIED = "ok", "FAILED", "unverified"
DELTA_PAGE_MAX = 200  # users per users/delta page (Graph: "about 200"; never more)
SUBSCRIPTIONS_PER_APP = 100  # users and groups subscriptions per app per tenant (403 beyond)
RESET_FORMAT = "iso-8601"  # Rate-Limit-Reset as Exchange Online sends it live (an absolute time)


@dataclass
class Assumption:
    """One row: what ctcs assumes, what the tenant showed (formats, counts, property names only), and `detail`,
    which may quote the tenant (an error message) and so stays out of the record."""

    side: str
    name: str
    assumed: str
    seen: str
    status: str
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.status != FAILED

    def as_json(self, *, redacted: bool = False) -> dict[str, str]:
        row = {"side": self.side, "name": self.name, "assumed": self.assumed, "seen": self.seen, "status": self.status}
        return row if redacted else {**row, "detail": self.detail}


@dataclass
class DeepReport:
    pair_id: str
    connection: ConnectionReport
    rows: list[Assumption] = field(default_factory=list)
    shapes: dict[str, Any] = field(default_factory=dict)  # the record's redacted facts
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.connection.ok and all(row.ok for row in self.rows)

    @property
    def failures(self) -> list[Assumption]:
        return [row for row in self.rows if not row.ok]

    def as_json(self) -> dict[str, Any]:
        return {**self.connection.as_json(), "ok": self.ok, "seconds": round(self.seconds, 2),
                "assumptions": [row.as_json() for row in self.rows]}

    def record(self) -> dict[str, Any]:
        """The redacted record: no pair id, tenant, name, address, id or token."""
        return {"ctcs_deep_record": RECORD_VERSION, **self.shapes,
                "connection": [{"side": check.side, "check": check.name, "ok": check.ok}
                               for check in self.connection.checks],
                "assumptions": [row.as_json(redacted=True) for row in self.rows]}


def deep_check(rt: Runtime, pair: TenantPair | str) -> DeepReport:
    """The connection test, then the probes of every side whose connection test passed."""
    pair = rt.stores.pairs.get(pair) if isinstance(pair, str) else pair
    started = time.monotonic()
    report = DeepReport(pair.id, check_connection(rt, pair))
    failed_sides = {check.side for check in report.connection.failures if check.credentials}
    probe = rt.open_probe(pair)
    try:
        sides: list[tuple[Side, Callable[[ConnectionProbe, TenantPair, DeepReport], None]]] = [
            (Side.TARGET, _target_probes), (Side.SOURCE, _source_probes)]
        if pair.source.exchange is not None:
            sides.append((Side.SOURCE_EXCHANGE, _source_exchange_probes))
        for side, probes in sides:
            if side.value in failed_sides:
                report.rows.append(Assumption(side.value, "deep probes", "reachable", "connection test failed",
                                              UNVERIFIED))
                continue
            try:
                probes(probe, pair, report)
            except (SourceError, TargetError, CredentialUnusable) as error:
                report.rows.append(Assumption(side.value, "deep probes", "answered", "failed", FAILED, str(error)))
    finally:
        probe.close()
    report.seconds = time.monotonic() - started
    log.info("deep connection test of pair %s: %s", pair.id, "passed" if report.ok else "failed",
             extra={"pair_id": pair.id, "outcome": "passed" if report.ok else "failed",
                    "failed_assumptions": [f"{row.side} {row.name}" for row in report.failures]})
    return report


# --- the target's Exchange -------------------------------------------------------------------------------------------

@dataclass
class _Target:
    probe: ExchangeProbe
    pair: TenantPair
    report: DeepReport

    def row(self, name: str, assumed: str, seen: str, status: str, detail: str = "") -> None:
        self.report.rows.append(Assumption(Side.TARGET.value, name, assumed, seen, status, detail))


def _target_probes(probe: ConnectionProbe, pair: TenantPair, report: DeepReport) -> None:
    exchange = ExchangeProbe(probe.exchange(Side.TARGET).api)
    try:
        test = _Target(exchange, pair, report)
        sample = _properties(test)
        _filters(test, sample)
        _paging(test)
        _headers(test)
    finally:
        exchange.close()


def _properties(test: _Target) -> dict[str, Any] | None:
    """Each cmdlet once on one mail contact, with ctcs's own $select: every name ctcs reads must come back."""
    cmdlets: dict[str, Any] = {}
    sample: dict[str, Any] | None = None
    for cmdlet, names in READS.items():
        parameters: dict[str, Any] = {"ResultSize": 1}
        if cmdlet != "Get-MailContact":
            parameters["RecipientTypeDetails"] = "MailContact"
        answer = test.probe.call(cmdlet, parameters, select=names if cmdlet != "Get-MailContact" else ())
        assumed = f"{len(names)} properties"
        if not answer.ok:
            test.row(f"{cmdlet} properties", assumed, "refused", FAILED, answer.error)
            continue
        if not answer.rows:
            cmdlets[cmdlet] = {"asked": list(names), "rows": 0}
            test.row(f"{cmdlet} properties", assumed, "no mail contact to read", UNVERIFIED)
            continue
        row = answer.rows[0]
        sample = sample or (row if cmdlet == "Get-Recipient" else None)
        seen = [name for name in names if name in row]
        missing = [name for name in names if name not in row]
        cmdlets[cmdlet] = {"asked": list(names), "properties": seen, "rows": len(answer.rows)}
        test.row(f"{cmdlet} properties", assumed, "all returned" if not missing else "missing " + ", ".join(missing),
                 FAILED if missing else OK)
    test.report.shapes.setdefault("exchange", {})["cmdlets"] = cmdlets
    return sample


def _filters(test: _Target, sample: dict[str, Any] | None) -> None:
    """Each filter form ctcs sends, with a value the organisation holds (it must be found) or none (accepted)."""
    attribute = test.pair.contact.anchor_attribute
    marker = f"ctcs-probe-{uuid.uuid4().hex[:12]}"
    held = sample or {}
    guid = str(held.get("Guid") or uuid.uuid4())
    name = str(held.get("Name") or marker)
    address = _address(sample) or f"{marker}@{test.pair.target.organization}"
    anchor = opath.eq(attribute, f"{test.pair.anchor_prefix}{marker}")
    forms = {  # label: (filter, whether it must find the sample: only with a value the sample holds)
        "filter: anchor prefix": (opath.starts_with(attribute, test.pair.anchor_prefix), False),
        "filter: other tools' anchors": (opath.all_of(opath.is_set(attribute),
                                                      opath.not_starts_with(attribute, ANCHOR_PREFIX)), False),
        "filter: anchor": (anchor, False),
        "filter: by address": (opath.eq("EmailAddresses", f"smtp:{address}"), bool(_address(sample))),
        "filter: by Guid": (opath.eq("Guid", guid), bool(held.get("Guid"))),
        "filter: by name": (opath.eq("Name", name), bool(held.get("Name"))),
        "filter: combined look-up": (opath.any_of(anchor, opath.eq("EmailAddresses", f"smtp:{address}"),
                                                  opath.eq("Name", name), opath.eq("Guid", guid)),
                                     bool(held.get("Guid"))),
    }
    seen: dict[str, str] = {}
    for label, (text, must_find) in forms.items():
        answer = test.probe.call("Get-Recipient", {"Filter": text, "ResultSize": 10}, select=("Guid",))
        found = any(str(row.get("Guid") or "").lower() == guid.lower() for row in answer.rows)
        if not answer.ok:
            seen[label], status, detail = "refused", FAILED, answer.error
        elif must_find and not found:
            seen[label], status, detail = "accepted, did not find the contact", FAILED, ""
        else:
            seen[label], status, detail = ("found the contact" if must_find else "accepted"), OK, ""
        test.row(label, "finds the contact" if must_find else "accepted", seen[label], status, detail)
    test.report.shapes.setdefault("exchange", {})["filters"] = seen


def _address(sample: dict[str, Any] | None) -> str:
    value = str((sample or {}).get("PrimarySmtpAddress") or "")
    return value.split(":", 1)[1] if value[:5].lower() == "smtp:" else value


def _paging(test: _Target) -> None:
    """A page size of one: the answer must page with an @odata.nextLink on the same host, which answers again."""
    first = test.probe.call("Get-Recipient", {"ResultSize": 3}, select=("Guid",), page_size=1)
    assumed = "nextLink paging"  # a page no larger than asked for, the next one by @odata.nextLink on the same host
    shape: dict[str, Any] = {"first_page": len(first.rows), "next_link": bool(first.next_link)}
    if not first.ok:
        test.row("paging", assumed, "refused", FAILED, first.error)
    elif len(first.rows) > 1:
        test.row("paging", assumed, f"{len(first.rows)} rows on a page of 1", FAILED)
    elif not first.next_link:
        test.row("paging", assumed, "one page (fewer than 2 recipients)", UNVERIFIED)
    elif _host(first.next_link) != _host(test.probe.api.url):
        test.row("paging", assumed, "nextLink to another host", FAILED)
    else:
        second = test.probe.call("Get-Recipient", {"ResultSize": 3}, select=("Guid",), page_size=1,
                                 url=first.next_link)
        shape["second_page"] = len(second.rows)
        good = second.ok and len(second.rows) == 1
        test.row("paging", assumed, "nextLink followed" if good else "nextLink answered no page",
                 OK if good else FAILED, second.error)
    test.report.shapes.setdefault("exchange", {})["paging"] = shape


def _host(url: str) -> str:
    return (urlsplit(url).hostname or "").lower()


def _headers(test: _Target) -> None:
    """The formats of the budget and concurrency headers over every answer the probes had."""
    answers = [answer for answer in test.probe.answers if answer.status == 200]
    formats = {name: _format(answers, name) for name in (*BUDGET_HEADERS, *CONCURRENCY_HEADERS)}
    test.report.shapes.setdefault("exchange", {})["headers"] = formats
    for name in BUDGET_HEADERS:
        wanted = RESET_FORMAT if name == "Rate-Limit-Reset" else "integer"
        seen = formats[name]
        status = OK if seen == wanted else UNVERIFIED if seen == "absent" else FAILED
        detail = "absent: ctcs paces by Retry-After only" if seen == "absent" else ""
        test.row(name, wanted, seen, status, detail)
    for name in CONCURRENCY_HEADERS:
        seen = formats[name]
        test.row(name, "integer or absent", seen, OK if seen in ("integer", "absent") else FAILED)


def _format(answers: list[ProbeAnswer], name: str) -> str:
    """One format for the header over all answers; "mixed" when they differ."""
    found = {value_format(answer.header(name)) for answer in answers} or {"absent"}
    found = {"seconds" if kind == "integer" and name == "Rate-Limit-Reset" else kind for kind in found}
    return found.pop() if len(found) == 1 else "mixed"


# --- the source's own Exchange (when the pair grants it) ------------------------------------------------------------

def _source_exchange_probes(probe: ConnectionProbe, pair: TenantPair, report: DeepReport) -> None:
    """The hidden-recipients listing (`sync.exchange.visibility`): its filter accepted, its two properties returned."""
    exchange = ExchangeProbe(probe.exchange(Side.SOURCE_EXCHANGE).api)
    side = Side.SOURCE_EXCHANGE.value
    try:
        answer = exchange.call("Get-Recipient", {"Filter": HIDDEN_FILTER, "ResultSize": 1}, select=HIDDEN_SELECT)
    finally:
        exchange.close()
    rows = report.rows
    if not answer.ok:
        rows.append(Assumption(side, "filter: hidden recipients", "accepted", "refused", FAILED, answer.error))
        return
    rows.append(Assumption(side, "filter: hidden recipients", "accepted", "accepted", OK))
    if not answer.rows:
        rows.append(Assumption(side, "hidden recipient properties", f"{len(HIDDEN_SELECT)} properties",
                               "no hidden recipient", UNVERIFIED))
        return
    missing = [name for name in HIDDEN_SELECT if name not in answer.rows[0]]
    rows.append(Assumption(side, "hidden recipient properties", f"{len(HIDDEN_SELECT)} properties",
                           "missing " + ", ".join(missing) if missing else "all returned", FAILED if missing else OK))
    report.shapes.setdefault("source_exchange", {})["hidden_listing"] = {
        "asked": list(HIDDEN_SELECT), "properties": [name for name in HIDDEN_SELECT if name in answer.rows[0]]}


# --- the source's Graph ----------------------------------------------------------------------------------------------

def _source_probes(probe: ConnectionProbe, pair: TenantPair, report: DeepReport) -> None:
    graph = probe.graph_deep()
    row = _source_row(report)
    shapes: dict[str, Any] = {}
    _delta_page(graph, pair, row, shapes)
    _subscription_headroom(graph, pair, row, shapes)
    _directory_quota(graph, row, shapes)
    report.shapes["graph"] = shapes


def _source_row(report: DeepReport) -> Callable[..., None]:
    def row(name: str, assumed: str, seen: str, status: str, detail: str = "") -> None:
        report.rows.append(Assumption(Side.SOURCE.value, name, assumed, seen, status, detail))
    return row


def _delta_page(graph: GraphDeepProbe, pair: TenantPair, row: Callable[..., None], shapes: dict[str, Any]) -> None:
    page = graph.first_delta_page(source_select(pair))
    value = page.get("value")
    values: list[Any] = value if isinstance(value, list) else []
    link = "next" if page.get("@odata.nextLink") else "delta" if page.get("@odata.deltaLink") else "none"
    shapes["delta_first_page"] = {"users": len(values), "link": link}
    assumed = f"<= {DELTA_PAGE_MAX} per page"  # and a next or delta link
    good = len(values) <= DELTA_PAGE_MAX and link != "none"
    row("users/delta page", assumed, f"{len(values)} users, {link} link", OK if good else FAILED)


def _subscription_headroom(graph: GraphDeepProbe, pair: TenantPair, row: Callable[..., None],
                           shapes: dict[str, Any]) -> None:
    resources = [str(sub.get("resource") or "").strip("/").lower() for sub in graph.subscriptions()]
    counted = sum(1 for resource in resources if resource in ("users", "groups"))
    needed = 2 if pair.syncs_groups else 1
    shapes["subscriptions"] = {"users_and_groups": counted, "other": len(resources) - counted}
    good = counted + needed <= SUBSCRIPTIONS_PER_APP
    row("subscription headroom", f"<= {SUBSCRIPTIONS_PER_APP} per app", f"{counted} in use, {needed} needed",
        OK if good else FAILED)


def _directory_quota(graph: GraphDeepProbe, row: Callable[..., None], shapes: dict[str, Any]) -> None:
    quota = graph.directory_quota()
    used, total = (quota or {}).get("used"), (quota or {}).get("total")
    if not isinstance(used, int) or not isinstance(total, int):
        shapes["directory_quota"] = "not shown"
        row("directory quota", "room for contacts", "not shown by Graph", UNVERIFIED)
        return
    shapes["directory_quota"] = {"used": used, "total": total}
    row("directory quota", "room for contacts", f"{used} of {total} used", OK if used < total else FAILED)
