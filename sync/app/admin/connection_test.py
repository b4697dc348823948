"""Test a pair's connections: each side signs in and makes its cheapest real call (`pairs test`, POST .../test).

    source           sign-in (Graph token; its roles name the consented permissions), one user with the pair's
                     $select, each scope group (group scoping)
    target           sign-in (Exchange token), Get-Recipient -ResultSize 1, the organisation the pair names, and
                     the anchor attribute: contacts whose anchor attribute holds a value that is not a ctcs anchor
    source.exchange  (when the pair grants it) sign-in and Get-Recipient -ResultSize 1

A failed check carries the cause and the fix in an admin's words (`sync.core.diagnosis`). A side whose sign-in
fails is not called further: every call would fail the same way. Checks of the credentials (sign-in, permission,
the calls) decide whether a pair quarantined for its credentials is released; the organisation and anchor checks
are about the pair's definition and never hold a pair back.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from azure.core.exceptions import ClientAuthenticationError

from sync.app.wiring.probe import ConnectionProbe
from sync.app.wiring.runtime import Runtime
from sync.contract.pairs import TenantPair
from sync.core.diagnosis import Diagnosis, Side, consent_fix, diagnose
from sync.core.source import source_select
from sync.errors import CredentialUnusable, SourceError, TargetError
from sync.exchange.contacts import ExchangeTarget
from sync.identity.tokens import token_roles

log = logging.getLogger("ctcs.connection")

ANCHOR_PREFIX = "ctcs|"  # every ctcs anchor, of any pair: only other tools' values count
MAX_GROUPS_CHECKED = 10
FOREIGN_ANCHOR_LIMIT = 1000
# Application permissions each side's token must carry (any one of a tuple).
REQUIRED_ROLES: dict[Side, tuple[tuple[str, ...], ...]] = {
    Side.SOURCE: (("User.Read.All", "Directory.Read.All"),),
    Side.TARGET: (("Exchange.ManageAsApp",),),
    Side.SOURCE_EXCHANGE: (("Exchange.ManageAsApp",),),
}
# The role assignments behind the target app (their write scope) can only be read with a configuration role ctcs
# does not hold and should not need (docs/deploy.md: the scoped role group), so the test says so instead of guessing.
WRITE_SCOPE_NOT_CHECKED = (
    "not checked: ctcs's roles cannot read role assignments. An admin checks it with Get-ManagementRoleAssignment "
    "-RoleAssignee \"ctcs contact writers\" | Format-Table Role,CustomRecipientWriteScope: both roles should name "
    "the mail-contact scope (docs/deploy.md)"
)
GROUP_ROLES = ("GroupMember.Read.All", "Group.Read.All", "Directory.Read.All")
GROUP_PROPERTY_ROLES = ("Group.Read.All", "Directory.Read.All")  # groups as contacts read mail properties


@dataclass
class Check:
    side: str
    name: str
    ok: bool
    detail: str = ""
    cause: str = ""
    fix: str = ""
    code: str = ""
    credentials: bool = True  # a credentials check: it decides a credentials quarantine

    def line(self) -> str:
        if self.ok:
            return self.detail
        return f"{self.cause}: {self.fix}" + (f" ({self.code})" if self.code else "")


@dataclass
class ConnectionReport:
    pair_id: str
    checks: list[Check] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return all(check.ok for check in self.checks)

    @property
    def credentials_ok(self) -> bool:
        return all(check.ok for check in self.checks if check.credentials)

    @property
    def failures(self) -> list[Check]:
        return [check for check in self.checks if not check.ok]

    def summary(self) -> str:
        """The failures in one line: what a quarantine reason or an error message says."""
        if self.ok:
            return "every check passed"
        return "; ".join(f"{check.side} {check.name}: {check.line()}" for check in self.failures)

    def as_json(self) -> dict[str, Any]:
        return {"pair": self.pair_id, "ok": self.ok, "seconds": round(self.seconds, 2),
                "checks": [asdict(check) for check in self.checks]}


def check_connection(rt: Runtime, pair: TenantPair | str) -> ConnectionReport:
    """Run every check of the pair (stored, or given: `pairs add` tests before it stores)."""
    pair = rt.stores.pairs.get(pair) if isinstance(pair, str) else pair
    started = time.monotonic()
    report = ConnectionReport(pair.id)
    probe = rt.open_probe(pair)
    try:
        _SideTest(probe, Side.SOURCE, report).run(lambda test: _source_calls(test, pair))
        _SideTest(probe, Side.TARGET, report).run(lambda test: _target_calls(test, pair))
        if pair.source.exchange is not None:
            _SideTest(probe, Side.SOURCE_EXCHANGE, report).run(_source_exchange_calls)
    finally:
        probe.close()
    report.seconds = time.monotonic() - started
    log.info("connection test of pair %s: %s", pair.id, "passed" if report.ok else report.summary(),
             extra={"pair_id": pair.id, "outcome": "passed" if report.ok else "failed",
                    "failed_checks": [f"{check.side} {check.name}" for check in report.failures]})
    return report


@dataclass
class _SideTest:
    probe: ConnectionProbe
    side: Side
    report: ConnectionReport

    @property
    def required_roles(self) -> tuple[tuple[str, ...], ...]:
        pair = self.probe.pair
        roles = REQUIRED_ROLES[self.side]
        if self.side is not Side.SOURCE:
            return roles
        if pair.scope.include_groups or pair.scope.exclude_groups:
            roles = (*roles, GROUP_ROLES)
        if pair.syncs_groups:
            roles = (*roles, GROUP_PROPERTY_ROLES)
        return roles

    def passed(self, name: str, detail: str, *, credentials: bool = True) -> None:
        self.report.checks.append(Check(self.side.value, name, True, detail, credentials=credentials))

    def failed(self, name: str, diagnosis: Diagnosis, *, credentials: bool = True) -> None:
        self.report.checks.append(Check(self.side.value, name, False, "", diagnosis.cause, diagnosis.fix,
                                        diagnosis.code, credentials=credentials))

    def diagnosed(self, name: str, error: Exception) -> None:
        status = getattr(error, "status", None)
        self.failed(name, diagnose(self.probe.subject(self.side), str(error), status=status))

    def run(self, calls: Callable[[_SideTest], None]) -> None:
        if self.sign_in():
            try:
                calls(self)
            except (SourceError, TargetError, CredentialUnusable) as error:
                self.diagnosed("call", error)

    def sign_in(self) -> bool:
        """Get a token for the side's service; check the permissions it carries. False: stop this side."""
        try:
            # msgraph-sdk asks for continuous-access-evaluation tokens: ask alike, so its calls reuse this token.
            cae = self.side is Side.SOURCE
            token = self.probe.credential(self.side).get_token(self.probe.scope(self.side), enable_cae=cae).token
        except (ClientAuthenticationError, CredentialUnusable) as error:
            lines = str(error).strip().splitlines()
            self.failed("sign-in", diagnose(self.probe.subject(self.side), lines[0] if lines else type(error).__name__))
            return False
        self.passed("sign-in", f"token for {self.side.service}")
        roles = token_roles(token)
        if roles is None:
            return True  # not a readable token: the calls below tell
        for alternatives in self.required_roles:
            if not roles & set(alternatives):
                subject = self.probe.subject(self.side)
                self.failed("permission", Diagnosis(
                    f"missing admin consent for {alternatives[0]}",
                    f"the token of app {subject.client_id} carries no {alternatives[0]}: {consent_fix(subject)}",
                ))
                return False
        self.passed("permission", ", ".join(sorted(roles)) or "(none)")
        return True


def _source_calls(test: _SideTest, pair: TenantPair) -> None:
    graph = test.probe.graph()
    select = source_select(pair)
    user = graph.one_user(select)
    test.passed("read users", f"read {'one user' if user else 'no user (the tenant has none)'} with the pair's "
                              f"{len(select)} properties")
    groups = [*pair.scope.include_groups, *pair.scope.exclude_groups][:MAX_GROUPS_CHECKED]
    for group_id in groups:
        try:
            group = graph.group(group_id)
        except (SourceError, CredentialUnusable) as error:
            test.diagnosed("read group", error)
            return
        if group is None:
            test.failed("scope group", Diagnosis(
                "scope group not found", f"the source tenant has no group {group_id}: correct scope.include_groups / "
                                         "scope.exclude_groups"), credentials=False)
        else:
            test.passed("read group", f"group {group.get('displayName') or group_id}")


def _target_calls(test: _SideTest, pair: TenantPair) -> None:
    target = test.probe.exchange(Side.TARGET)
    first = target.first_recipient()
    test.passed("Exchange", "Get-Recipient answered")
    _organisation(test, pair, first)
    _anchor_attribute(test, pair, target)
    test.passed("write scope", WRITE_SCOPE_NOT_CHECKED, credentials=False)


def _organisation(test: _SideTest, pair: TenantPair, first: dict[str, Any] | None) -> None:
    """The pair's `target.organization` must be the organisation Exchange answers for (its initial domain)."""
    wanted = pair.target.organization.lower()
    name = str((first or {}).get("DistinguishedName") or "")
    found = next((part[3:] for part in name.split(",") if part.upper().startswith("OU=") and "." in part), "").lower()
    if not found:
        test.passed("organisation", f"{wanted} (not verified: no recipient answered)", credentials=False)
    elif found == wanted:
        test.passed("organisation", found, credentials=False)
    else:
        test.failed("organisation", Diagnosis(
            "wrong organisation",
            f"target.organization is {pair.target.organization} but tenant {pair.target.tenant_id}'s Exchange "
            f"organisation is {found}: use its initial .onmicrosoft.com domain"), credentials=False)


def _anchor_attribute(test: _SideTest, pair: TenantPair, target: ExchangeTarget) -> None:
    attribute = pair.contact.anchor_attribute
    foreign = target.count_foreign_anchors(attribute, ANCHOR_PREFIX, limit=FOREIGN_ANCHOR_LIMIT)
    if not foreign:
        test.passed("anchor attribute", f"{attribute} holds no other tool's values", credentials=False)
        return
    count = f"{foreign}+" if foreign >= FOREIGN_ANCHOR_LIMIT else str(foreign)
    test.failed("anchor attribute", Diagnosis(
        "anchor attribute used by another tool",
        f"{count} mail contacts hold a value in {attribute} that is not a ctcs anchor: choose another "
        "contact.anchor_attribute (CustomAttribute1..15) that nothing else writes"), credentials=False)


def _source_exchange_calls(test: _SideTest) -> None:
    test.probe.exchange(Side.SOURCE_EXCHANGE).first_recipient()
    test.passed("Exchange", "Get-Recipient answered")
