"""Exchange admin API: cmdlets, enforced rules, error envelopes, paging, filters, replication lag, auth."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import httpx
import pytest

from sim import SimCloud, Tenant

CID = "22222222-2222-2222-2222-222222222222"


@pytest.fixture
def org(cloud: SimCloud) -> Tenant:
    tenant = cloud.add_tenant()
    tenant.register_app(CID, secret="x")
    return tenant


def call(cloud: SimCloud, http: httpx.Client, tenant: Tenant, cmdlet: str, url_tail: str = "",
         headers: dict[str, str] | None = None, **params: Any) -> httpx.Response:
    url = f"{cloud.endpoints['exchange']}/adminapi/beta/{tenant.tenant_id}/InvokeCommand{url_tail}"
    sent = {"Authorization": f"Bearer {cloud.issue_token(tenant, CID, 'exchange')}", "X-CmdletName": cmdlet,
            **(headers or {})}
    return http.post(url, json={"CmdletInput": {"CmdletName": cmdlet, "Parameters": params}}, headers=sent)


def detail(response: httpx.Response) -> tuple[str, str]:
    """(exception type short name, message) from whichever of the three shapes the error uses."""
    error = response.json()["error"]
    if error.get("details"):
        text = error["details"][0]["message"]
        if text.startswith("{"):
            parsed = json.loads(text)
            return parsed["TypeName"].rsplit(".", 1)[-1], parsed["Message"]
        _, type_name, message = text.split("|", 2)
        return type_name.rsplit(".", 1)[-1], message
    inner = error["innererror"]["internalexception"]
    return inner["type"].rsplit(".", 1)[-1], inner["message"]


def new(cloud: SimCloud, http: httpx.Client, org: Tenant, name: str, address: str, **extra: Any) -> dict[str, Any]:
    response = call(cloud, http, org, "New-MailContact", Name=name, ExternalEmailAddress=address, **extra)
    assert response.status_code == 200, response.text
    return dict(response.json()["value"][0])


def test_create_set_get_remove(cloud: SimCloud, http: httpx.Client, org: Tenant) -> None:
    created = new(cloud, http, org, "c1", "adele@contoso.com", Alias="c1", DisplayName="Adele Vance")
    assert created["ExternalEmailAddress"] == "SMTP:adele@contoso.com"
    assert created["EmailAddresses"] == ["SMTP:adele@contoso.com"]
    assert created["RecipientTypeDetails"] == "MailContact"
    guid = created["Guid"]
    assert call(cloud, http, org, "Set-MailContact", Identity=guid, CustomAttribute15="ctcs|a|b",
                HiddenFromAddressListsEnabled=True).json()["value"] == []
    assert call(cloud, http, org, "Set-Contact", Identity=guid, Department="Sales", CountryOrRegion="DE",
                Phone="+49 1").status_code == 200
    got = call(cloud, http, org, "Get-MailContact", Identity=guid).json()["value"][0]
    assert got["CustomAttribute15"] == "ctcs|a|b" and got["HiddenFromAddressListsEnabled"] is True
    assert "Department" not in got and "Phone" not in got, "Get-MailContact returns Set-MailContact's properties only"
    assert "Guid@odata.type" in got
    person = call(cloud, http, org, "Get-Contact", Identity=guid).json()["value"][0]
    assert person["Department"] == "Sales" and person["CountryOrRegion"] == "Germany" and person["Phone"] == "+49 1"
    assert "CustomAttribute15" not in person and "HiddenFromAddressListsEnabled" not in person
    listed = call(cloud, http, org, "Get-Recipient", Identity=guid).json()["value"][0]
    assert listed["Department"] == "Sales" and listed["CustomAttribute15"] == "ctcs|a|b" and listed["Phone"] == "+49 1"
    assert "MobilePhone" not in listed and "StreetAddress" not in listed, "the reduced recipient leaves these out"
    assert call(cloud, http, org, "Remove-MailContact", Identity=guid, Confirm=False).status_code == 200
    assert org.exchange.contacts() == []
    assert cloud.counts[("exchange", "New-MailContact")] >= 1


def test_external_address_change_drops_old_address(cloud: SimCloud, http: httpx.Client, org: Tenant) -> None:
    guid = new(cloud, http, org, "c2", "old@contoso.com")["Guid"]
    call(cloud, http, org, "Set-MailContact", Identity=guid, ExternalEmailAddress="new@contoso.com")
    contact = org.exchange.get(guid)
    assert contact is not None and contact["EmailAddresses"] == ["SMTP:new@contoso.com"]
    assert new(cloud, http, org, "c3", "old@contoso.com")["Name"] == "c3"  # the old address is free again


def test_hashtable_email_addresses(cloud: SimCloud, http: httpx.Client, org: Tenant) -> None:
    guid = new(cloud, http, org, "h1", "h1@contoso.com")["Guid"]
    ok = call(cloud, http, org, "Set-MailContact", Identity=guid,
              EmailAddresses={"@odata.type": "#Exchange.GenericHashTable", "Add": ["alt@contoso.com"]})
    assert ok.status_code == 200
    assert "smtp:alt@contoso.com" in org.exchange.get(guid)["EmailAddresses"]  # type: ignore[index]
    bad = call(cloud, http, org, "Set-MailContact", Identity=guid, EmailAddresses={"Add": ["x@contoso.com"]})
    assert bad.status_code == 400


@pytest.mark.parametrize("kind", ["UserMailbox", "GuestMailUser", "MailUser", "MailContact",
                                  "MailUniversalDistributionGroup", "SoftDeletedMailbox"])
def test_address_unique_across_all_recipients(cloud: SimCloud, http: httpx.Client, org: Tenant, kind: str) -> None:
    org.exchange.add_recipient(kind=kind, name=f"holder-{kind}", address="taken@contoso.com")
    response = call(cloud, http, org, "New-MailContact", Name="n", ExternalEmailAddress="taken@contoso.com")
    assert response.status_code == 400
    assert response.headers["x-exceptiontype"] == "ProxyAddressExistsException"
    type_name, message = detail(response)
    assert type_name == "ProxyAddressExistsException"
    assert f'"holder-{kind}"' in message and '"SMTP:taken@contoso.com"' in message


def test_name_and_alias_unique(cloud: SimCloud, http: httpx.Client, org: Tenant) -> None:
    new(cloud, http, org, "dup", "a@contoso.com", Alias="dupalias")
    response = call(cloud, http, org, "New-MailContact", Name="dup", ExternalEmailAddress="b@contoso.com")
    assert detail(response)[0] == "ADObjectAlreadyExistsException" and "already exists" in detail(response)[1]
    response = call(cloud, http, org, "New-MailContact", Name="other", Alias="DUPALIAS", ExternalEmailAddress="c@x.com")
    assert response.status_code == 400 and "alias" in detail(response)[1].lower()


@pytest.mark.parametrize("params,fragment", [
    ({"Name": "x" * 65}, "maximum length is 64"),
    ({"Alias": "a" * 65}, "maximum length is 64"),
    ({"DisplayName": "d" * 257}, "maximum length is 256"),
    ({"Alias": "has space"}, "invalid characters"),
    ({"Alias": ".lead"}, "invalid characters"),
    ({"ExternalEmailAddress": "not-an-address"}, "is not an SMTP e-mail address"),
    ({"Bogus": "1"}, "A parameter cannot be found"),
    ({"Name": ""}, "null or empty"),
])
def test_new_mailcontact_validation(cloud: SimCloud, http: httpx.Client, org: Tenant, params: dict[str, Any],
                                    fragment: str) -> None:
    sent = {"Name": "valid", "ExternalEmailAddress": "v@contoso.com", **params}
    response = call(cloud, http, org, "New-MailContact", **sent)
    assert response.status_code == 400
    assert fragment in detail(response)[1]


def test_custom_attribute_limit_and_country_rules(cloud: SimCloud, http: httpx.Client, org: Tenant) -> None:
    guid = new(cloud, http, org, "v1", "v1@contoso.com")["Guid"]
    assert call(cloud, http, org, "Set-MailContact", Identity=guid, CustomAttribute3="x" * 1025).status_code == 400
    assert call(cloud, http, org, "Set-MailContact", Identity=guid, CustomAttribute3="x" * 1024).status_code == 200
    for accepted in ("US", "United States", "gb", "Germany"):
        assert call(cloud, http, org, "Set-Contact", Identity=guid, CountryOrRegion=accepted).status_code == 200
    for rejected in ("Deutschland", "UK", "USA", "Narnia"):
        response = call(cloud, http, org, "Set-Contact", Identity=guid, CountryOrRegion=rejected)
        assert response.status_code == 400 and "valid country" in detail(response)[1]


def test_manager_must_exist_and_fails_inside_a_200(cloud: SimCloud, http: httpx.Client, org: Tenant) -> None:
    boss = new(cloud, http, org, "boss", "boss@contoso.com")
    guid = new(cloud, http, org, "minion", "minion@contoso.com")["Guid"]
    missing = call(cloud, http, org, "Set-Contact", Identity=guid, Manager="nobody")
    assert missing.status_code == 200 and missing.json()["@adminapi.errors"]
    assert call(cloud, http, org, "Set-Contact", Identity=guid, Manager=boss["Guid"]).json().get("@adminapi.errors") is None
    assert org.exchange.get(guid)["Manager"] == "boss"  # type: ignore[index]


@pytest.mark.parametrize("identity", ["", None])
def test_empty_identity_is_rejected(cloud: SimCloud, http: httpx.Client, org: Tenant, identity: str | None) -> None:
    new(cloud, http, org, "e1", "e1@contoso.com")
    for cmdlet in ("Get-MailContact", "Set-MailContact", "Remove-MailContact"):
        response = call(cloud, http, org, cmdlet, Identity=identity)
        assert response.status_code == 400, cmdlet


def test_not_found_is_404_in_json_shape(cloud: SimCloud, http: httpx.Client, org: Tenant) -> None:
    org.exchange.limits.configure(error_envelope="classic")  # the "Error executing cmdlet" envelope of the shapes
    response = call(cloud, http, org, "Set-MailContact", Identity=str(uuid.uuid4()), DisplayName="x")
    assert response.status_code == 404 and response.json()["error"]["code"] == "NotFound"
    assert response.json()["error"]["details"][0]["message"].startswith("{")
    assert detail(response)[0] == "ManagementObjectNotFoundException"
    assert "couldn't be found" in detail(response)[1]


def test_every_error_shape_is_served(cloud: SimCloud, http: httpx.Client, org: Tenant) -> None:
    org.exchange.limits.configure(error_envelope="classic")
    new(cloud, http, org, "s1", "s1@contoso.com")
    pipe = call(cloud, http, org, "New-MailContact", Name="s1", ExternalEmailAddress="s2@contoso.com")
    innererror = call(cloud, http, org, "New-MailContact", Name="s3", Alias="bad alias", ExternalEmailAddress="s3@c.com")
    assert "|" in pipe.json()["error"]["details"][0]["message"]
    assert "details" not in innererror.json()["error"]
    assert innererror.json()["error"]["innererror"]["internalexception"]["message"]


def test_errors_in_200_switch(cloud: SimCloud, http: httpx.Client, org: Tenant) -> None:
    org.exchange.errors_in_200 = True
    response = call(cloud, http, org, "Set-MailContact", Identity="missing", DisplayName="x")
    assert response.status_code == 200 and response.json()["@adminapi.errors"][0]["TypeName"].endswith("FoundException")


def test_filters(cloud: SimCloud, http: httpx.Client, org: Tenant) -> None:
    a = new(cloud, http, org, "fa", "o'brien@contoso.com")["Guid"]
    b = new(cloud, http, org, "fb", "bob@contoso.com")["Guid"]
    call(cloud, http, org, "Set-MailContact", Identity=a, CustomAttribute15="ctcs|t|O'Brien")
    call(cloud, http, org, "Set-MailContact", Identity=b, CustomAttribute15="ctcs|t|bob")
    org.exchange.add_recipient(kind="UserMailbox", name="mbx", address="mbx@contoso.com")

    def names(cmdlet: str, text: str) -> set[str]:
        response = call(cloud, http, org, cmdlet, Filter=text, ResultSize="Unlimited")
        assert response.status_code == 200, response.text
        return {o["Name"] for o in response.json()["value"]}

    assert names("Get-MailContact", "CustomAttribute15 -eq 'ctcs|t|O''Brien'") == {"fa"}
    assert names("Get-MailContact", "CustomAttribute15 -like 'ctcs|t|*'") == {"fa", "fb"}
    assert names("Get-Recipient", "EmailAddresses -eq 'smtp:MBX@contoso.com'") == {"mbx"}
    assert names("Get-Recipient", "(Name -eq 'fa' -or Name -eq 'mbx') -and RecipientTypeDetails -ne 'UserMailbox'") == {"fa"}
    assert names("Get-Recipient", "HiddenFromAddressListsEnabled -eq 'False' -and Alias -like 'f*'") == {"fa", "fb"}
    bad = call(cloud, http, org, "Get-Recipient", Filter="Nope -eq 'x'")
    assert bad.status_code == 400


@pytest.mark.parametrize(("cmdlet", "text"), [
    ("Get-Contact", "CustomAttribute15 -like 'ctcs|t|*'"),  # a custom attribute is not a property of the contact
    ("Get-Contact", "EmailAddresses -eq 'smtp:x@contoso.com'"),
    ("Get-MailContact", "Department -eq 'Sales'"),  # Set-Contact's properties are not Get-MailContact's
    ("Get-MailContact", "FirstName -eq 'Adele'"),
    ("Get-Recipient", "Initials -eq 'A'"),  # filterable on Get-Contact only
])
def test_each_cmdlet_filters_only_on_its_own_properties(cloud: SimCloud, http: httpx.Client, org: Tenant,
                                                       cmdlet: str, text: str) -> None:
    refused = call(cloud, http, org, cmdlet, Filter=text)
    assert refused.status_code == 400
    type_name, message = detail(refused)
    assert type_name == "ParameterBindingException"
    assert "Cannot bind parameter 'Filter'" in message and "is not a recognized filterable property" in message


@pytest.mark.parametrize("value", ["*brien", "o*brien", "ctcs|*|x", "**"])
def test_a_wildcard_is_accepted_only_as_a_suffix(cloud: SimCloud, http: httpx.Client, org: Tenant, value: str) -> None:
    refused = call(cloud, http, org, "Get-Recipient", Filter=f"Name -like '{value}'")
    assert refused.status_code == 400
    assert "only at the end of a value" in detail(refused)[1]
    assert call(cloud, http, org, "Get-Recipient", Filter="Name -like 'o*'").status_code == 200


def test_documented_filters_of_each_cmdlet_work(cloud: SimCloud, http: httpx.Client, org: Tenant) -> None:
    guid = new(cloud, http, org, "doc1", "doc1@contoso.com")["Guid"]
    call(cloud, http, org, "Set-Contact", Identity=guid, Department="Sales", Initials="D", Notes="n")

    def names(cmdlet: str, text: str) -> set[str]:
        response = call(cloud, http, org, cmdlet, Filter=text, ResultSize="Unlimited")
        assert response.status_code == 200, response.text
        return {o["Name"] for o in response.json()["value"]}

    assert names("Get-Contact", "Initials -eq 'D' -and Department -eq 'Sales'") == {"doc1"}
    assert names("Get-Recipient", "Notes -eq 'n'") == {"doc1"}  # documented on Get-Recipient, refused before
    assert names("Get-MailContact", "ExternalEmailAddress -eq 'SMTP:doc1@contoso.com'") == {"doc1"}


def test_email_addresses_like_needs_the_prefix(cloud: SimCloud, http: httpx.Client, org: Tenant) -> None:
    new(cloud, http, org, "lila", "lila@contoso.com")

    def names(text: str) -> set[str]:
        response = call(cloud, http, org, "Get-Recipient", Filter=text, ResultSize="Unlimited")
        assert response.status_code == 200, response.text
        return {o["Name"] for o in response.json()["value"]}

    assert names("EmailAddresses -eq 'lila@contoso.com'") == {"lila"}  # -eq: no prefix means smtp:
    assert names("EmailAddresses -like 'smtp:lila*'") == {"lila"}
    assert names("EmailAddresses -like 'lila*'") == set()  # as Exchange: -like compares the whole proxy address


def test_each_get_cmdlet_returns_its_documented_property_set(cloud: SimCloud, http: httpx.Client, org: Tenant) -> None:
    from sim.exchange_org import CMDLET_PROPERTIES

    guid = new(cloud, http, org, "set1", "set1@contoso.com")["Guid"]
    call(cloud, http, org, "Set-Contact", Identity=guid, Initials="S", Department="Ops")

    def keys(cmdlet: str) -> set[str]:
        row = call(cloud, http, org, cmdlet, Identity=guid).json()["value"][0]
        return {key for key in row if "@" not in key}

    recipient, mail_contact, contact = keys("Get-Recipient"), keys("Get-MailContact"), keys("Get-Contact")
    assert "Department" in recipient and "Initials" not in recipient and "MailTip" not in recipient
    assert "Department" not in mail_contact and "CustomAttribute15" in mail_contact and "MailTip" in mail_contact
    assert "Initials" in contact and "CustomAttribute15" not in contact and "EmailAddresses" not in contact
    for cmdlet, got in (("Get-Recipient", recipient), ("Get-MailContact", mail_contact), ("Get-Contact", contact)):
        assert got <= CMDLET_PROPERTIES[cmdlet], cmdlet


def test_paging_result_size_and_maxpagesize(cloud: SimCloud, http: httpx.Client, org: Tenant) -> None:
    for n in range(12):
        org.exchange.add_recipient(kind="MailContact", name=f"p{n:02}", address=f"p{n}@contoso.com")
    seen: list[str] = []
    tail, pages = "", 0
    while True:
        body = call(cloud, http, org, "Get-MailContact", tail, headers={"Prefer": "odata.maxpagesize=5"},
                    ResultSize="Unlimited").json()
        seen += [o["Name"] for o in body["value"]]
        pages += 1
        if "@odata.nextLink" not in body:
            break
        tail = "?" + body["@odata.nextLink"].split("?", 1)[1]
    assert len(seen) == 12 == len(set(seen)) and pages == 3
    limited = call(cloud, http, org, "Get-MailContact", ResultSize=4).json()
    assert len(limited["value"]) == 4 and limited["@adminapi.warnings"]
    trimmed = call(cloud, http, org, "Get-MailContact", "?$select=Name,Guid", ResultSize=1).json()["value"][0]
    assert set(trimmed) <= {"Name", "Guid", "Guid@odata.type"}


def test_replication_lag(cloud: SimCloud, http: httpx.Client, org: Tenant) -> None:
    org.exchange.replication_lag = 0.3
    guid = new(cloud, http, org, "lag", "lag@contoso.com")["Guid"]
    assert call(cloud, http, org, "Set-MailContact", Identity=guid, DisplayName="x").status_code == 404
    time.sleep(0.35)
    assert call(cloud, http, org, "Set-MailContact", Identity=guid, DisplayName="x").status_code == 200


def test_domain_as_tenant_and_auth_failures(cloud: SimCloud, http: httpx.Client, org: Tenant) -> None:
    body = {"CmdletInput": {"CmdletName": "Get-MailContact", "Parameters": {}}}
    base = cloud.endpoints["exchange"] + "/adminapi/beta/{}/InvokeCommand"
    good = {"Authorization": f"Bearer {cloud.issue_token(org, CID, 'exchange')}"}
    assert http.post(base.format(org.domain), json=body, headers=good).status_code == 200
    other = cloud.add_tenant()
    assert http.post(base.format(other.tenant_id), json=body, headers=good).status_code == 401
    for headers in ({}, {"Authorization": f"Bearer {cloud.issue_token(org, CID, 'graph')}"},
                    {"Authorization": f"Bearer {cloud.issue_token(org, CID, 'exchange', lifetime=-100)}"}):
        assert http.post(base.format(org.tenant_id), json=body, headers=headers).status_code == 401
    weak = {"Authorization": f"Bearer {cloud.issue_token(org, CID, 'exchange', roles=('User.Read.All',))}"}
    assert http.post(base.format(org.tenant_id), json=body, headers=weak).status_code == 403


def test_unknown_cmdlet(cloud: SimCloud, http: httpx.Client, org: Tenant) -> None:
    assert call(cloud, http, org, "Remove-Mailbox", Identity="x").status_code == 400


def test_exchange_rbac_refuses_a_cmdlet_no_role_of_the_app_holds(cloud: SimCloud, http: httpx.Client, org: Tenant) -> None:
    app = org.apps[CID]
    app.directory_roles = ("Global Reader",)  # View-Only Recipients: reading is allowed, creating is not
    try:
        assert call(cloud, http, org, "Get-Recipient", ResultSize=1).status_code == 200
        refused = call(cloud, http, org, "New-MailContact", Name="x", ExternalEmailAddress="x@partner.example")
        assert refused.status_code == 401
        assert refused.json()["error"] == {"code": "Unauthorized", "message": "User is not allowed to call New-MailContact",
                                           "innererror": {"message": "User is not allowed to call New-MailContact",
                                                          "type": "Microsoft.Exchange.Admin.OData.Core.ODataServiceException"}}
        app.directory_roles = ()
        app.role_groups = (frozenset({"Mail Recipient Creation", "Mail Recipients"}),)  # the least-privilege group
        assert call(cloud, http, org, "New-MailContact", Name="x", ExternalEmailAddress="x@partner.example").status_code == 200
    finally:
        app.directory_roles, app.role_groups = ("Exchange Recipient Administrator",), ()
