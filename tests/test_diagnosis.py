"""The diagnosis of sign-in and permission failures (pure): each Entra code and service answer an admin meets is
turned into a cause and a fix that names the tenant and app; transient sign-in failures never quarantine a pair."""

from __future__ import annotations

import pytest

from sync.core.delivery_policy import Verdict, decide
from sync.core.diagnosis import Side, Subject, diagnose, is_credentials_failure, is_transient_sign_in
from sync.core.quarantine import RETEST_BACKOFF_MINUTES, retest_delay
from sync.errors import (
    CredentialUnusable,
    PairParked,
    SourceAuthError,
    SourceError,
    TargetAuthError,
    TargetThrottled,
    TargetTransient,
)

TARGET = Subject(Side.TARGET, "22222222-2222-2222-2222-222222222222", "44444444-4444-4444-4444-444444444444")
SOURCE = Subject(Side.SOURCE, "11111111-1111-1111-1111-111111111111", "33333333-3333-3333-3333-333333333333",
                 "https://login.microsoftonline.us")


@pytest.mark.parametrize(("text", "cause", "code"), [
    ("AADSTS700016: Application with identifier 'x' was not found in the directory 'y'.", "missing admin consent",
     "AADSTS700016"),
    ("AADSTS65001: The user or administrator has not consented to use the application", "missing admin consent",
     "AADSTS65001"),
    ("AADSTS700027: Client assertion contains an invalid signature. [Reason - The key was not found.]",
     "certificate not registered on the app", "AADSTS700027"),
    ("AADSTS700024: Client assertion is not within its valid time range.", "expired or skewed client assertion",
     "AADSTS700024"),
    ("AADSTS7000215: Invalid client secret provided.", "wrong or expired client secret", "AADSTS7000215"),
    ("AADSTS7000222: The provided client secret keys are expired.", "wrong or expired client secret", "AADSTS7000222"),
    ("AADSTS700213: No matching federated identity record found for presented assertion subject 'x'.",
     "federated credential does not match the managed identity", "AADSTS700213"),
    ("AADSTS90002: Tenant 'x' not found.", "wrong tenant", "AADSTS90002"),
    ("AADSTS500011: The resource principal named https://outlook.office365.com was not found", "service not in the tenant",
     "AADSTS500011"),
])
def test_sign_in_codes(text: str, cause: str, code: str) -> None:
    found = diagnose(TARGET, f"Authentication failed: {text} Trace ID: 1")
    assert (found.cause, found.code) == (cause, code)
    assert found.fix
    if cause not in ("wrong tenant", "service not in the tenant"):
        assert TARGET.client_id in found.fix


def test_consent_fixes_name_the_tenant_app_and_cloud() -> None:
    fix = diagnose(SOURCE, "AADSTS700016: not found").fix
    assert f"https://login.microsoftonline.us/{SOURCE.tenant_id}/adminconsent?client_id={SOURCE.client_id}" in fix
    assert "User.Read.All" in fix and "scripts/register-apps.sh grant source" in fix


@pytest.mark.parametrize(("subject", "text", "status", "cause"), [
    (SOURCE, "Graph refused users/delta (HTTP 403 Authorization_RequestDenied): Insufficient privileges", 403,
     "missing Graph permission"),
    (TARGET, "Get-Recipient failed (HTTP 401): User is not allowed to call Get-Recipient", 401, "missing Exchange role"),
    (TARGET, "The role assigned to application x isn't supported in this scenario.", 401, "missing Exchange role"),
    (TARGET, "New-MailContact failed (HTTP 403): The app lacks the Exchange.ManageAsApp permission.", 403,
     "missing Exchange.ManageAsApp"),
    (TARGET, "target.credential: secret reference kv:fabrikam-cert: no such secret in the key vault", None,
     "certificate not found in Key Vault"),
    (TARGET, "target.credential: secret reference kv:x: key vault read failed: (Forbidden)", None, "Key Vault not readable"),
    (TARGET, "target.credential.certificate (file:x): not a PEM or PFX certificate with a private key", None,
     "not a usable certificate"),
    (TARGET, "target.credential: managed identity federation cannot cross clouds: the app runs in the global cloud", None,
     "managed identity federation across clouds"),
    (TARGET, "ManagedIdentityCredential authentication unavailable, no response from the IMDS endpoint", None,
     "managed identity not available here"),
    (TARGET, "something else entirely", 401, "Exchange Online refused the token"),
])
def test_service_answers(subject: Subject, text: str, status: int | None, cause: str) -> None:
    assert diagnose(subject, text, status=status).cause == cause


def test_transient_sign_in_failures_are_not_credentials_failures() -> None:
    assert is_transient_sign_in("AADSTS50000: There was an error issuing a token.")
    assert is_transient_sign_in("Connection timed out")
    assert not is_transient_sign_in("AADSTS700027: Client assertion contains an invalid signature.")
    assert is_credentials_failure(TargetAuthError("x")) and is_credentials_failure(SourceAuthError("x"))
    assert is_credentials_failure(CredentialUnusable("x"))
    assert not is_credentials_failure(SourceError("x")) and not is_credentials_failure(TargetTransient("x"))


def test_the_delivery_policy_parks_credentials_failures_without_spending_a_delivery() -> None:
    first = decide(TargetAuthError("no Exchange token: AADSTS700027"), dequeue_count=1)
    assert first.verdict is Verdict.PARK and first.quarantine
    later = decide(PairParked("pair x is quarantined"), dequeue_count=5)
    assert later.verdict is Verdict.PARK and not later.quarantine, "already quarantined: park, report nothing new"
    assert decide(TargetAuthError("x"), dequeue_count=5).verdict is Verdict.PARK, "never poisoned"
    assert decide(TargetThrottled("x", retry_after=3), dequeue_count=1).verdict is Verdict.DEFER
    assert decide(TargetTransient("x"), dequeue_count=5).verdict is Verdict.POISON


def test_the_retest_back_off() -> None:
    assert [retest_delay(n).total_seconds() / 60 for n in (1, 2, 3, 4, 10)] == [5, 15, 60, 60, 60]
    assert RETEST_BACKOFF_MINUTES == (5, 15, 60)


def test_an_expired_federated_assertion_is_not_taken_for_a_subject_mismatch() -> None:
    """Entra answers an expired managed-identity assertion with AADSTS700024, not 700211/700213: the diagnosis must
    cover both readings of that code, the clock and the expired identity token."""
    found = diagnose(TARGET, "AADSTS700024: Client assertion is not within its valid time range. Current time: "
                             "2026-12-08T02:00:00.0000000Z, expiry time of assertion 2026-12-08T01:59:00.0000000Z.")
    assert found.cause == "expired or skewed client assertion"
    assert "NTP" in found.fix and "federated" in found.fix and TARGET.client_id in found.fix
