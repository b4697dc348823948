"""ExchangeTarget against the simulated Exchange admin API: real httpx and azure-identity over loopback HTTPS."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from sim import SimCloud, Tenant
from sync.contract.pairs import TenantPair
from sync.core.retry import RetryPolicy
from sync.errors import (
    AddressInUse,
    ManagerNotFound,
    TargetAuthError,
    TargetError,
    TargetNotFound,
    TargetRejected,
    TargetThrottled,
    TargetTransient,
)
from sync.exchange.client import SYSTEM_MAILBOX, AdminApiClient, CallBounds
from sync.exchange.contacts import ExchangeTarget
from sync.identity.credentials import CredentialCache
from sync.identity.secrets import SecretResolver

from .conftest import SECRET, new_guid

ANCHOR_ATTR = "CustomAttribute15"
POLICY = RetryPolicy(max_retries=4, max_wait_seconds=60.0, base_delay=2.0, max_delay=20.0)


class Recorder:
    def __init__(self) -> None:
        self.sleeps: list[float] = []
        self.requests: list[httpx.Request] = []

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)

    def client(self) -> httpx.Client:
        return httpx.Client(timeout=30, event_hooks={"request": [self.requests.append]})


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
def exo_client_id(target_tenant: Tenant) -> str:
    client = new_guid()
    target_tenant.register_app(client, secret=SECRET, roles=["Exchange.ManageAsApp"])
    return client


@pytest.fixture
def pair(source_tenant: Tenant, target_tenant: Tenant, exo_client_id: str,
         make_pair: Callable[..., TenantPair]) -> TenantPair:
    return make_pair(source_tenant, target_tenant, source_client=new_guid(), target_client=exo_client_id)


@pytest.fixture
def make_target(cloud: SimCloud, pair: TenantPair, resolver: SecretResolver, credentials: CredentialCache,
                recorder: Recorder) -> Callable[..., ExchangeTarget]:
    def build(**options: Any) -> ExchangeTarget:
        options.setdefault("bounds", CallBounds(retry=POLICY))
        options.setdefault("sleep", recorder.sleep)
        options.setdefault("client", recorder.client())
        return ExchangeTarget(AdminApiClient(credentials.for_target(pair, resolver), exchange_endpoint=cloud.endpoints["exchange"],
                              tenant=pair.target.tenant_id, organization=pair.target.organization, **options))

    return build


@pytest.fixture
def target(make_target: Callable[..., ExchangeTarget]) -> ExchangeTarget:
    return make_target()


def anchor_of(pair: TenantPair, oid: str | None = None) -> str:
    return pair.anchor(oid or new_guid())


def contact(pair: TenantPair, *, oid: str | None = None, **params: Any) -> dict[str, Any]:
    oid = oid or new_guid()
    base: dict[str, Any] = {
        "Name": f"ctcs-{oid}", "Alias": f"ctcs-{oid[:18]}", "ExternalEmailAddress": f"{oid[:8]}@contoso.com",
        "DisplayName": "Adele Vance", "FirstName": "Adele", "LastName": "Vance", "Initials": "",
        ANCHOR_ATTR: pair.anchor(oid), "HiddenFromAddressListsEnabled": False,
        "Company": "Contoso", "Department": "Sales", "Title": "", "CountryOrRegion": "DE", "Phone": "+49 1",
    }
    base.update(params)
    return base


def stored(tenant: Tenant, guid: str) -> dict[str, Any]:
    found = tenant.exchange.get(guid)
    assert found is not None
    return found


# --- create / update / delete ----------------------------------------------------------------------------------

def test_create_sends_three_cmdlets_and_returns_the_recipient(
    target: ExchangeTarget, target_tenant: Tenant, pair: TenantPair, cloud: SimCloud
) -> None:
    wanted = contact(pair)
    recipient = target.create(wanted)
    assert uuid.UUID(recipient.guid)
    assert recipient.name == wanted["Name"] and recipient.recipient_type == "MailContact"
    assert recipient.primary_address == wanted["ExternalEmailAddress"]
    assert recipient.anchor(ANCHOR_ATTR) == wanted[ANCHOR_ATTR]
    bag = stored(target_tenant, recipient.guid)
    assert bag[ANCHOR_ATTR] == wanted[ANCHOR_ATTR]
    assert (bag["Company"], bag["Department"], bag["Phone"], bag["FirstName"]) == ("Contoso", "Sales", "+49 1", "Adele")
    assert bag["CountryOrRegion"] in ("Germany", "DE")
    assert dict(target.requests) == {"New-MailContact": 1, "Set-MailContact": 1, "Set-Contact": 1}
    assert cloud.counts["exchange"] == 3


def test_create_skips_a_cmdlet_with_nothing_to_set(target: ExchangeTarget, pair: TenantPair) -> None:
    wanted = contact(pair, Company="", Department="", Phone="", CountryOrRegion="", Title="")
    target.create(wanted)
    assert dict(target.requests) == {"New-MailContact": 1, "Set-MailContact": 1}


def test_update_one_call_per_cmdlet_and_empty_clears(
    target: ExchangeTarget, target_tenant: Tenant, pair: TenantPair
) -> None:
    guid = target.create(contact(pair)).guid
    target.requests.clear()
    target.update(guid, {"DisplayName": "Adele V.", "Department": "", "Title": "Boss", "CustomAttribute3": "x"})
    assert dict(target.requests) == {"Set-MailContact": 1, "Set-Contact": 1}
    bag = stored(target_tenant, guid)
    assert (bag["DisplayName"], bag["Department"], bag["Title"], bag["CustomAttribute3"]) == ("Adele V.", "", "Boss", "x")
    target.requests.clear()
    target.update(guid, {"Company": "Fabrikam"})
    assert dict(target.requests) == {"Set-Contact": 1}
    target.update(guid, {})
    assert target.total_requests == 1


def test_delete_then_not_found(target: ExchangeTarget, target_tenant: Tenant, pair: TenantPair) -> None:
    guid = target.create(contact(pair)).guid
    target.requests.clear()
    target.delete(guid)
    assert dict(target.requests) == {"Remove-MailContact": 1}
    assert target_tenant.exchange.get(guid) is None
    with pytest.raises(TargetNotFound):
        target.delete(guid)


@pytest.mark.parametrize("call", ["update", "delete"])
@pytest.mark.parametrize("guid", ["", "   "])
def test_never_an_empty_identity(target: ExchangeTarget, cloud: SimCloud, call: str, guid: str) -> None:
    with pytest.raises(ValueError):
        if call == "update":
            target.update(guid, {"DisplayName": "x"})
        else:
            target.delete(guid)
    assert cloud.counts["exchange"] == 0


# --- find_recipients and list_owned ----------------------------------------------------------------------------

def test_find_recipients_one_call_by_anchor_address_or_name(
    target: ExchangeTarget, target_tenant: Tenant, pair: TenantPair, cloud: SimCloud
) -> None:
    mine = target.create(contact(pair))
    mailbox = target_tenant.exchange.add_recipient(kind="UserMailbox", name="meganb", address="megan@fabrikam.com")
    named = target.create(contact(pair, Name="O'Brien, Pat", Alias="obrien", ExternalEmailAddress="pat@contoso.com"))
    target.create(contact(pair, Name="bystander", Alias="bystander", ExternalEmailAddress="by@contoso.com"))
    target.requests.clear()
    found = target.find_recipients(anchor_attribute=ANCHOR_ATTR, anchor=mine.anchor(ANCHOR_ATTR),
                                   address="megan@fabrikam.com", name="O'Brien, Pat")
    assert target.total_requests == 1 == target.requests["Get-Recipient"]
    by_guid = {r.guid: r for r in found}
    assert set(by_guid) == {mine.guid, mailbox, named.guid}
    assert by_guid[mailbox].recipient_type == "UserMailbox"
    assert by_guid[mailbox].primary_address == "megan@fabrikam.com"
    assert by_guid[mine.guid].anchor(ANCHOR_ATTR) == mine.anchor(ANCHOR_ATTR)
    assert by_guid[named.guid].name == "O'Brien, Pat"


@pytest.mark.parametrize("hostile", [
    "x' -or Name -like '*",
    "*",
    "') -or (Name -like '*",
    "x'' -or Name -like ''*",
])
def test_hostile_values_do_not_widen_the_filter(
    target: ExchangeTarget, target_tenant: Tenant, pair: TenantPair, hostile: str
) -> None:
    for n in range(3):
        target.create(contact(pair, Name=f"victim{n}", Alias=f"victim{n}", ExternalEmailAddress=f"v{n}@contoso.com"))
    assert target.find_recipients(anchor_attribute=ANCHOR_ATTR, anchor=hostile, address=hostile, name=hostile) == []
    exact = target.create(contact(pair, Name=hostile if hostile != "*" else "star*", Alias="hostile",
                                  ExternalEmailAddress="h@contoso.com"))
    found = target.find_recipients(anchor_attribute=ANCHOR_ATTR, anchor="", address="", name=exact.name)
    assert [r.guid for r in found] == [exact.guid]


@pytest.mark.parametrize("quote", ["\u2018", "\u2019", "\u201a", "\u201b"])
def test_typographic_quotes_stay_inside_the_literal(
    target: ExchangeTarget, target_tenant: Tenant, pair: TenantPair, quote: str
) -> None:
    """Exchange takes U+2018, U+2019, U+201A and U+201B as single quotes: a name or address holding one finds
    exactly its own contact, and one that would break out of the literal finds nothing."""
    for n in range(3):
        target.create(contact(pair, Name=f"victim{n}", Alias=f"victim{n}", ExternalEmailAddress=f"v{n}@contoso.com"))
    target.create(contact(pair, Name="O", Alias="o", ExternalEmailAddress="o@contoso.com"))
    named = target.create(contact(pair, Name=f"O{quote}Brien, Pat", Alias="obrien",
                                  ExternalEmailAddress="pat.obrien@contoso.com"))
    found = target.find_recipients(anchor_attribute=ANCHOR_ATTR, anchor=f"ctcs|O{quote}", name=named.name,
                                   address=f"o{quote}brien@contoso.com")
    assert [r.guid for r in found] == [named.guid]
    hostile = f"x{quote} -or Name -like {quote}*"
    assert target.find_recipients(anchor_attribute=ANCHOR_ATTR, anchor=hostile, address=hostile, name=hostile) == []


def test_find_with_nothing_to_look_for_sends_nothing(target: ExchangeTarget, cloud: SimCloud) -> None:
    assert target.find_recipients(anchor_attribute=ANCHOR_ATTR, anchor="", address="", name="") == []
    assert cloud.counts["exchange"] == 0


def test_list_owned_pages_and_keeps_to_the_prefix(
    make_target: Callable[..., ExchangeTarget], target_tenant: Tenant, pair: TenantPair
) -> None:
    target = make_target()
    ours = {target.create(contact(pair)).guid for _ in range(25)}
    foreign_prefix = f"ctcs|{new_guid()}|"
    target.create(contact(pair, **{ANCHOR_ATTR: foreign_prefix + new_guid()}))
    target_tenant.exchange.add_recipient(kind="MailContact", name="manual", address="manual@x.com",
                                         **{ANCHOR_ATTR: "hand-made"})
    target_tenant.exchange.page_size = 10
    target.requests.clear()
    listed = list(target.list_owned(ANCHOR_ATTR, pair.anchor_prefix))
    assert {r.guid for r in listed} == ours
    assert all(r.recipient_type == "MailContact" and r.anchor(ANCHOR_ATTR).startswith(pair.anchor_prefix)
               for r in listed)
    assert target.requests["Get-Recipient"] == 3 and target.total_requests == 3  # 10 + 10 + 5
    sample = listed[0]
    assert sample.values["Department"] == "Sales" and sample.values["CountryOrRegion"] == "Germany"
    assert sample.values["ExternalEmailAddress"] == sample.primary_address and sample.when_changed
    assert "MobilePhone" not in sample.values, "Get-Recipient does not return it: the listing must not claim it"


def test_list_owned_refuses_a_wildcard_prefix(target: ExchangeTarget) -> None:
    with pytest.raises(ValueError):
        list(target.list_owned(ANCHOR_ATTR, "ctcs*"))
    with pytest.raises(ValueError):
        list(target.list_owned("DisplayName", "ctcs|"))


# --- refusals ----------------------------------------------------------------------------------------------------

def test_address_held_by_a_mailbox(target: ExchangeTarget, target_tenant: Tenant, pair: TenantPair) -> None:
    target_tenant.exchange.add_recipient(kind="UserMailbox", name="adele", address="adele@contoso.com")
    with pytest.raises(AddressInUse) as caught:
        target.create(contact(pair, ExternalEmailAddress="adele@contoso.com"))
    assert caught.value.holder == "adele"
    assert target_tenant.exchange.contacts() == []


def test_address_held_by_a_soft_deleted_mailbox(target: ExchangeTarget, target_tenant: Tenant, pair: TenantPair) -> None:
    target_tenant.exchange.add_recipient(kind="SoftDeletedMailbox", name="gone", address="gone@contoso.com")
    with pytest.raises(AddressInUse, match="gone"):
        target.create(contact(pair, ExternalEmailAddress="gone@contoso.com"))


def test_name_already_used(target: ExchangeTarget, pair: TenantPair) -> None:
    first = contact(pair)
    target.create(first)
    again = contact(pair, Name=first["Name"], ExternalEmailAddress="other@contoso.com")
    with pytest.raises(TargetRejected) as caught:
        target.create(again)
    assert caught.value.exception_type == "ADObjectAlreadyExistsException"
    assert not isinstance(caught.value, AddressInUse)


def test_not_an_smtp_address(target: ExchangeTarget, pair: TenantPair) -> None:
    with pytest.raises(TargetRejected, match="is not an SMTP e-mail address"):
        target.create(contact(pair, ExternalEmailAddress="not-an-address"))


def test_bad_country_rolls_the_half_made_contact_back(
    target: ExchangeTarget, target_tenant: Tenant, pair: TenantPair
) -> None:
    with pytest.raises(TargetRejected, match="CountryOrRegion"):
        target.create(contact(pair, CountryOrRegion="Narnia"))
    assert target_tenant.exchange.contacts() == []  # no anchorless contact left behind
    assert target.requests["Remove-MailContact"] == 1


def test_bad_country_on_update(target: ExchangeTarget, pair: TenantPair) -> None:
    guid = target.create(contact(pair)).guid
    with pytest.raises(TargetRejected):
        target.update(guid, {"CountryOrRegion": "Atlantis"})


def test_ambiguous_identity_is_rejected(target: ExchangeTarget, target_tenant: Tenant, pair: TenantPair) -> None:
    target.create(contact(pair, Name="same", Alias="one", ExternalEmailAddress="one@contoso.com"))
    target.create(contact(pair, Name="other", Alias="same", ExternalEmailAddress="two@contoso.com"))
    with pytest.raises(TargetRejected, match="multiple"):
        target.update("same", {"Department": "x"})


def test_errors_inside_a_200(target: ExchangeTarget, target_tenant: Tenant, pair: TenantPair) -> None:
    guid = target.create(contact(pair)).guid
    target_tenant.exchange.errors_in_200 = True
    with pytest.raises(TargetNotFound):
        target.update(str(uuid.uuid4()), {"Department": "x"})
    with pytest.raises(ManagerNotFound) as missing:  # the manager is missing, not the contact: retried, never re-made
        target.update(guid, {"Manager": "nobody-by-that-name"})
    assert missing.value.manager == "nobody-by-that-name" and not isinstance(missing.value, TargetNotFound)


def test_missing_role_is_an_auth_error(
    cloud: SimCloud, target_tenant: Tenant, pair: TenantPair, resolver: SecretResolver, credentials: CredentialCache,
    make_pair: Callable[..., TenantPair], source_tenant: Tenant,
) -> None:
    client = new_guid()
    target_tenant.register_app(client, secret=SECRET, roles=["User.Read.All"])
    weak = make_pair(source_tenant, target_tenant, source_client=new_guid(), target_client=client)
    target = ExchangeTarget(AdminApiClient(credentials.for_target(weak, resolver), exchange_endpoint=cloud.endpoints["exchange"],
                            tenant=weak.target.tenant_id, organization=weak.target.organization))
    with pytest.raises(TargetAuthError, match="HTTP 403") as caught:
        target.delete(new_guid())
    assert caught.value.status == 403


def test_bad_secret_is_an_auth_error_without_the_secret(
    cloud: SimCloud, target_tenant: Tenant, pair: TenantPair, credentials: CredentialCache,
) -> None:
    bad = SecretResolver(environ={"CTCS_SECRET_EDGE": "wrong-secret-value"})
    target = ExchangeTarget(AdminApiClient(credentials.for_target(pair, bad), exchange_endpoint=cloud.endpoints["exchange"],
                            tenant=pair.target.tenant_id, organization=pair.target.organization))
    with pytest.raises(TargetAuthError, match="no Exchange token") as caught:
        target.delete(new_guid())
    assert "wrong-secret-value" not in str(caught.value)


# --- throttling, transient failures and replication lag -----------------------------------------------------------

@pytest.mark.parametrize("kind, retry_after, waits", [
    ("throttle", "0.249", [0.249, 0.249]),
    ("throttle", None, [2.0, 4.0]),
    ("concurrency_limit", "3", [3.0, 3.0]),
    ("server_busy", None, [2.0, 4.0]),
    ("unavailable", "1", [1.0, 1.0]),
    ("gateway_timeout", None, [2.0, 4.0]),
])
def test_throttled_and_transient_calls_are_survived(
    target: ExchangeTarget, recorder: Recorder, cloud: SimCloud, pair: TenantPair,
    kind: str, retry_after: str | None, waits: list[float],
) -> None:
    cloud.faults.inject("exchange", kind, operation="Set-MailContact", times=2, retry_after=retry_after)
    target.create(contact(pair))
    assert recorder.sleeps == waits
    assert target.requests["Set-MailContact"] == 3
    assert cloud.counts[("exchange", "Set-MailContact")] == 3


def test_throttling_beyond_the_budget_raises_for_the_queue(
    target: ExchangeTarget, recorder: Recorder, cloud: SimCloud
) -> None:
    cloud.faults.inject("exchange", "throttle", operation="Remove-MailContact", times=50, retry_after="5")
    with pytest.raises(TargetThrottled) as caught:
        target.delete(new_guid())
    assert caught.value.retry_after == 5.0
    assert recorder.sleeps == [5.0] * 4
    assert target.requests["Remove-MailContact"] == 5


def test_long_retry_after_raises_at_once(target: ExchangeTarget, recorder: Recorder, cloud: SimCloud) -> None:
    cloud.faults.inject("exchange", "throttle", operation="Get-Recipient", retry_after="180")
    with pytest.raises(TargetThrottled) as caught:
        target.find_recipients(anchor_attribute=ANCHOR_ATTR, anchor="a", address="", name="")
    assert caught.value.retry_after == 180.0 and recorder.sleeps == []


def test_persistent_server_busy_is_transient(target: ExchangeTarget, cloud: SimCloud) -> None:
    cloud.faults.inject("exchange", "server_busy", operation="Remove-MailContact", times=50)
    with pytest.raises(TargetTransient) as caught:
        target.delete(new_guid())
    assert caught.value.exception_type == "ServerBusyException"
    assert not isinstance(caught.value, TargetThrottled)


def test_replication_lag_after_create_is_waited_out(
    make_target: Callable[..., ExchangeTarget], target_tenant: Tenant, pair: TenantPair
) -> None:
    target_tenant.exchange.replication_lag = 1.0
    waits: list[float] = []

    def sleep(seconds: float) -> None:
        waits.append(seconds)
        time.sleep(seconds)

    target = make_target(sleep=sleep, bounds=CallBounds(POLICY, not_found_retries=4, not_found_delay=0.4))
    recipient = target.create(contact(pair))
    assert stored(target_tenant, recipient.guid)[ANCHOR_ATTR] == recipient.anchor(ANCHOR_ATTR)
    assert waits and target.requests["Set-MailContact"] == len(waits) + 1
    assert target.requests["Set-Contact"] == 1


def test_update_does_not_wait_for_missing_contacts(target: ExchangeTarget, recorder: Recorder) -> None:
    with pytest.raises(TargetNotFound):
        target.update(new_guid(), {"Department": "x"})
    assert recorder.sleeps == [] and target.total_requests == 1


# --- the wire ----------------------------------------------------------------------------------------------------

def test_every_request_carries_the_reference_headers(
    target: ExchangeTarget, recorder: Recorder, pair: TenantPair, cloud: SimCloud
) -> None:
    guid = target.create(contact(pair)).guid
    target.delete(guid)
    assert len(recorder.requests) == 4
    ids = set()
    for request in recorder.requests:
        assert request.method == "POST"
        assert str(request.url).startswith(f"{cloud.endpoints['exchange']}/adminapi/beta/{pair.target.tenant_id}/InvokeCommand")
        headers = request.headers
        assert headers["authorization"].startswith("Bearer ")
        assert headers["content-type"] == "application/json"
        assert headers["x-anchormailbox"] == f"UPN:{SYSTEM_MAILBOX}@{pair.target.organization}"
        assert headers["prefer"] == "odata.maxpagesize=1000"
        assert headers["x-responseformat"] == "json"
        body = json.loads(request.content)
        assert headers["x-cmdletname"] == body["CmdletInput"]["CmdletName"]
        ids.add(headers["client-request-id"])
    assert len(ids) == 4
    remove = json.loads(recorder.requests[-1].content)["CmdletInput"]
    assert remove == {"CmdletName": "Remove-MailContact", "Parameters": {"Identity": guid, "Confirm": False}}


def test_a_next_link_to_another_host_is_not_followed(cloud: SimCloud, pair: TenantPair,
                                                       resolver: SecretResolver, credentials: CredentialCache) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"value": [], "@odata.nextLink": "https://evil.example/adminapi/beta/x"})

    target = ExchangeTarget(AdminApiClient(credentials.for_target(pair, resolver), exchange_endpoint=cloud.endpoints["exchange"],
                            tenant=pair.target.tenant_id, organization=pair.target.organization,
                            client=httpx.Client(transport=httpx.MockTransport(handler))))
    with pytest.raises(TargetError, match="another host"):
        list(target.list_owned(ANCHOR_ATTR, pair.anchor_prefix))


class LosesFirstAnswer(httpx.BaseTransport):
    """Forwards to the simulator, but answers 504 to the first New-MailContact after the simulator ran it:
    the gateway timeout behind which the backend did its work (the simulator's faults fire before the cmdlet)."""

    def __init__(self) -> None:
        self._inner = httpx.HTTPTransport()
        self.lost = 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self._inner.handle_request(request)
        if request.headers.get("x-cmdletname") == "New-MailContact" and not self.lost:
            response.read()
            self.lost += 1
            return httpx.Response(504, text="504 Gateway Time-out")
        return response


def test_create_adopts_what_its_own_lost_attempt_created(
    make_target: Callable[..., ExchangeTarget], target_tenant: Tenant, pair: TenantPair, recorder: Recorder
) -> None:
    transport = LosesFirstAnswer()
    target = make_target(client=httpx.Client(transport=transport, timeout=30))
    wanted = contact(pair)
    recipient = target.create(wanted)
    assert transport.lost == 1 and recorder.sleeps == [2.0]
    assert [c["Guid"] for c in target_tenant.exchange.contacts()] == [recipient.guid]
    assert stored(target_tenant, recipient.guid)[ANCHOR_ATTR] == wanted[ANCHOR_ATTR]
    assert target.requests["New-MailContact"] == 2 and target.requests["Get-MailContact"] == 1


def test_create_never_adopts_a_stranger_with_the_same_name(
    make_target: Callable[..., ExchangeTarget], target_tenant: Tenant, pair: TenantPair, cloud: SimCloud
) -> None:
    wanted = contact(pair)
    target_tenant.exchange.add_recipient(kind="MailContact", name=wanted["Name"], address="someone@else.com",
                                         Alias="someone", CustomAttribute1="not ours")
    cloud.faults.inject("exchange", "gateway_timeout", operation="New-MailContact", retry_after=None)
    with pytest.raises(TargetRejected, match="did not create"):
        make_target().create(wanted)
    assert [c["Name"] for c in target_tenant.exchange.contacts()] == [wanted["Name"]]
