"""The client against the formats Exchange Online and Entra were seen answering live, which the simulator now sends
by default: `Rate-Limit-Reset` as an absolute ISO-8601 time, the concurrency headers, the "Invalid Operation"
envelope with an empty-prefix pipe string, a 403 whose body is NUL bytes, and AADSTS700024 for an expired
federated assertion. Real httpx and azure-identity over loopback HTTPS."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from sim import SimCloud, Tenant
from sync.contract.pairs import TenantPair
from sync.core.diagnosis import Side, Subject, diagnose
from sync.core.pacing import LocalPaceBoard
from sync.core.retry import RetryPolicy
from sync.errors import AddressInUse, TargetAuthError, TargetNotFound
from sync.exchange.client import AdminApiClient, CallBounds
from sync.exchange.errors import read_failure
from sync.exchange.pacing import OrgPacer
from sync.identity.credentials import CredentialCache
from sync.identity.secrets import SecretResolver

from .conftest import SECRET, new_guid

NOT_FOUND = "Microsoft.Exchange.Configuration.Tasks.ManagementObjectNotFoundException"


@pytest.fixture
def api(cloud: SimCloud, source_tenant: Tenant, target_tenant: Tenant, make_pair: Callable[..., TenantPair],
        resolver: SecretResolver, credentials: CredentialCache) -> Callable[..., AdminApiClient]:
    def build(roles: tuple[str, ...] = ("Exchange.ManageAsApp",), **options: Any) -> AdminApiClient:
        client_id = new_guid()
        target_tenant.register_app(client_id, secret=SECRET, roles=list(roles))
        pair = make_pair(source_tenant, target_tenant, source_client=new_guid(), target_client=client_id)
        options.setdefault("bounds", CallBounds(retry=RetryPolicy(max_retries=6, max_wait_seconds=30.0)))
        return AdminApiClient(credentials.for_target(pair, resolver), exchange_endpoint=cloud.endpoints["exchange"],
                              tenant=pair.target.tenant_id, organization=pair.target.organization, **options)

    return build


def test_the_simulator_announces_its_budget_the_live_way_by_default(
    api: Callable[..., AdminApiClient], target_tenant: Tenant, cloud: SimCloud
) -> None:
    target_tenant.exchange.limits.configure(budget=5, budget_window=1.0)
    pacer = OrgPacer(target_tenant.domain, board=LocalPaceBoard(), instance="me", report_seconds=60)
    client = api(pacer=pacer)
    for _ in range(12):
        client.invoke("Get-Recipient", {"Filter": "Name -eq 'nobody'"})
    assert cloud.counts["exchange"] == 12, "no call was answered 429 and retried"
    assert cloud.counts[("limits", "budget")] == 0, "Rate-Limit-Reset (an ISO time) held the calls before a 429"
    assert pacer.throttled_until > 0


def test_the_concurrency_headers_tell_the_pacer_about_other_apps(
    api: Callable[..., AdminApiClient], target_tenant: Tenant
) -> None:
    target_tenant.exchange.limits.configure(concurrency_cap=10, foreign_in_flight=4)
    pacer = OrgPacer(target_tenant.domain, board=LocalPaceBoard(), instance="me", report_seconds=60)
    api(pacer=pacer).invoke("Get-Recipient", {"Filter": "Name -eq 'nobody'"})
    assert pacer.others_in_flight == 4
    assert pacer.room() == max(1, pacer.share - 4 * pacer.share // pacer.limit - (4 * pacer.share % pacer.limit > 0))
    target_tenant.exchange.limits.configure(foreign_in_flight=0)
    api(pacer=pacer).invoke("Get-Recipient", {"Filter": "Name -eq 'nobody'"})
    assert (pacer.others_in_flight, pacer.room()) == (0, pacer.share)


def test_the_invalid_operation_envelope_is_classified_like_the_other(
    api: Callable[..., AdminApiClient], target_tenant: Tenant
) -> None:
    target_tenant.exchange.limits.configure(error_envelope="invalid_operation")
    client = api()
    target_tenant.exchange.add_recipient(kind="UserMailbox", name="adele", address="adele@contoso.com")
    with pytest.raises(TargetNotFound, match="ManagementObjectNotFoundException") as missing:
        client.invoke("Set-MailContact", {"Identity": new_guid(), "DisplayName": "x"})
    assert "couldn't be found" in str(missing.value) and "Invalid Operation" not in str(missing.value)
    with pytest.raises(AddressInUse) as taken:
        client.invoke("New-MailContact", {"Name": "c1", "ExternalEmailAddress": "adele@contoso.com"})
    assert taken.value.holder == "adele"


def test_a_403_whose_body_is_not_json_is_a_missing_permission_in_clean_words(
    api: Callable[..., AdminApiClient], target_tenant: Tenant
) -> None:
    client = api(roles=("User.Read.All",))
    with pytest.raises(TargetAuthError) as refused:
        client.invoke("Get-Recipient", {"Filter": "Name -eq 'nobody'"})
    text = str(refused.value)
    assert refused.value.status == 403 and text.isprintable(), "no NUL bytes in the message, the logs or a table"
    assert "not JSON" in text
    subject = Subject(Side.TARGET, target_tenant.tenant_id, new_guid())
    assert diagnose(subject, text, status=403).cause == "missing Exchange.ManageAsApp"


@pytest.mark.parametrize("body", [b"\x00\x00\x00\x00", b"\xff\xfe\x00binary", b"<html><body>Forbidden</body></html>\n\x07"])
def test_bodies_that_are_not_json_become_a_printable_message(body: bytes) -> None:
    failure = read_failure(403, body)
    assert failure.message.isprintable() and failure.message
    assert "\x00" not in failure.message
