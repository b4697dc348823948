"""Graph groups as groups-as-contacts reads them: groups/delta with group properties (no members), GET /groups/{id}
with $select (the only way to hideFromAddressLists), JSON $batch of those, and the permission mail properties need."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from sim import SimCloud, Tenant

APP = "11111111-1111-1111-1111-111111111111"
SELECT = "id,displayName,description,mail,mailEnabled,securityEnabled,groupTypes,proxyAddresses,visibility"


@pytest.fixture
def fresh(cloud: SimCloud) -> Tenant:
    tenant = cloud.add_tenant()
    tenant.register_app(APP, secret="x")
    return tenant


def headers(cloud: SimCloud, tenant: Tenant, *roles: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {cloud.issue_token(tenant, APP, 'graph', roles=('User.Read.All', *(roles or ('Group.Read.All',))))}"}


def delta_round(http: httpx.Client, url: str, head: dict[str, str]) -> tuple[list[dict[str, Any]], str]:
    objects: list[dict[str, Any]] = []
    while True:
        body = http.get(url, headers=head).json()
        objects += body["value"]
        if "@odata.deltaLink" in body:
            return objects, body["@odata.deltaLink"]
        url = body["@odata.nextLink"]


def team(tenant: Tenant, **more: Any) -> str:
    return tenant.directory.add_group("Falcon", mail="falcon@x.example", mailEnabled=True, securityEnabled=False,
                                      groupTypes=["Unified"], description="team", hideFromAddressLists=True, **more)


def test_groups_delta_serves_properties_but_never_hide_from_address_lists(cloud: SimCloud, fresh: Tenant,
                                                                          http: httpx.Client) -> None:
    head = headers(cloud, fresh)
    gid = team(fresh)
    user = fresh.directory.add_user({"displayName": "A", "mail": "a@x.example"})
    base = cloud.endpoints["graph"] + "/v1.0/groups/delta"
    objects, delta_link = delta_round(http, f"{base}?$select={SELECT}", head)
    assert objects == [{"id": gid, "displayName": "Falcon", "description": "team", "mail": "falcon@x.example",
                        "mailEnabled": True, "securityEnabled": False, "groupTypes": ["Unified"]}]
    fresh.directory.add_member(gid, user)  # membership is not what this round tracks
    fresh.directory.update_group(gid, hideFromAddressLists=False)  # Exchange's: delta never reports it
    assert delta_round(http, delta_link, head)[0] == []
    fresh.directory.update_group(gid, description="renamed team")
    changed, _ = delta_round(http, delta_link, head)
    assert [obj["description"] for obj in changed] == ["renamed team"] and "members@delta" not in changed[0]


def test_get_group_with_select_and_batches_of_twenty(cloud: SimCloud, fresh: Tenant, http: httpx.Client) -> None:
    head = headers(cloud, fresh)
    gid = team(fresh)
    plain = fresh.directory.add_group("Sales list", mail="sales@x.example", mailEnabled=True, securityEnabled=False)
    graph = cloud.endpoints["graph"] + "/v1.0"
    assert "hideFromAddressLists" not in http.get(f"{graph}/groups/{gid}", headers=head).json()
    assert http.get(f"{graph}/groups/{gid}?$select=id,hideFromAddressLists", headers=head).json() == {
        "id": gid, "hideFromAddressLists": True}
    missing = "00000000-0000-0000-0000-00000000dead"
    requests = [{"id": str(n), "method": "GET", "url": f"/groups/{g}?$select=id,hideFromAddressLists"}
                for n, g in enumerate((gid, plain, missing))]
    answer = http.post(f"{graph}/$batch", json={"requests": requests}, headers=head).json()["responses"]
    assert [(r["id"], r["status"]) for r in answer] == [("0", 200), ("1", 200), ("2", 404)]
    assert answer[0]["body"]["hideFromAddressLists"] is True and answer[1]["body"]["hideFromAddressLists"] is False
    too_many = {"requests": [{**requests[0], "id": str(n)} for n in range(21)]}
    assert http.post(f"{graph}/$batch", json=too_many, headers=head).status_code == 400


def test_a_throttled_request_inside_a_batch_is_a_429_with_retry_after_in_a_200_batch(
        cloud: SimCloud, fresh: Tenant, http: httpx.Client) -> None:
    head = headers(cloud, fresh)
    gids = [team(fresh, displayName=f"T{n}") if n else team(fresh) for n in range(3)]
    graph = cloud.endpoints["graph"] + "/v1.0"
    requests = [{"id": str(n), "method": "GET", "url": f"/groups/{g}?$select=id,hideFromAddressLists"}
                for n, g in enumerate(gids)]
    cloud.faults.clear()
    cloud.faults.inject("graph", "batch_throttle", times=2, retry_after="3")
    try:
        assert http.get(f"{graph}/groups/{gids[0]}", headers=head).status_code == 200  # whole requests never take it
        response = http.post(f"{graph}/$batch", json={"requests": requests}, headers=head)
        assert response.status_code == 200
        answer = response.json()["responses"]
        assert [r["status"] for r in answer] == [429, 429, 200]
        assert answer[0]["headers"] == {"Retry-After": "3"} and answer[0]["body"]["error"]["code"] == "TooManyRequests"
        again = http.post(f"{graph}/$batch", json={"requests": requests}, headers=head).json()["responses"]
        assert [r["status"] for r in again] == [200, 200, 200]  # the rule served its two
    finally:
        cloud.faults.clear()


def test_mail_properties_need_group_read_all(cloud: SimCloud, fresh: Tenant, http: httpx.Client) -> None:
    gid = team(fresh)
    member_only = headers(cloud, fresh, "GroupMember.Read.All")
    graph = cloud.endpoints["graph"] + "/v1.0"
    assert http.get(f"{graph}/groups/delta?$select={SELECT}", headers=member_only).status_code == 403
    assert http.get(f"{graph}/groups/delta?$select=displayName,members", headers=member_only).status_code == 200
    batch = {"requests": [{"id": "0", "method": "GET", "url": f"/groups/{gid}?$select=id,hideFromAddressLists"}]}
    assert http.post(f"{graph}/$batch", json=batch, headers=member_only).json()["responses"][0]["status"] == 403
