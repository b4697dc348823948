"""Graph users/delta: paging, $select, $filter, removals, restores, replays, token expiry/reset/garbling, auth."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest

from sim import SimCloud, Tenant


@pytest.fixture
def fresh(cloud: SimCloud) -> Tenant:
    """A tenant of its own per test, so change logs do not mix."""
    tenant = cloud.add_tenant()
    tenant.register_app("11111111-1111-1111-1111-111111111111", secret="x")
    return tenant


def _headers(cloud: SimCloud, tenant: Tenant) -> dict[str, str]:
    return {"Authorization": f"Bearer {cloud.issue_token(tenant, '11111111-1111-1111-1111-111111111111', 'graph')}"}


def _round(http: httpx.Client, url: str, headers: dict[str, str]) -> tuple[list[dict[str, Any]], str, int]:
    """Follow nextLinks to the deltaLink; returns (all objects, deltaLink, page count)."""
    objects: list[dict[str, Any]] = []
    pages = 0
    while True:
        response = http.get(url, headers=headers)
        assert response.status_code == 200, response.text
        body = response.json()
        pages += 1
        objects.extend(body["value"])
        assert ("@odata.nextLink" in body) != ("@odata.deltaLink" in body)
        if "@odata.deltaLink" in body:
            return objects, body["@odata.deltaLink"], pages
        url = body["@odata.nextLink"]


def test_first_round_pages_and_ends_with_delta_link(cloud: SimCloud, fresh: Tenant, http: httpx.Client) -> None:
    fresh.directory.page_size = 7
    ids = {fresh.directory.add_user({"displayName": f"User {n}"}) for n in range(20)}
    objects, delta_link, pages = _round(http, f"{cloud.endpoints['graph']}/v1.0/users/delta", _headers(cloud, fresh))
    assert {o["id"] for o in objects} == ids
    assert pages == 3
    assert "$deltatoken=" in delta_link


@pytest.mark.parametrize("path", ["/v1.0/users/delta", "/v1.0/users/delta()", "/v1.0/users/microsoft.graph.delta()"])
def test_all_three_spellings(cloud: SimCloud, fresh: Tenant, http: httpx.Client, path: str) -> None:
    fresh.directory.add_user({"displayName": "A"})
    objects, _, _ = _round(http, cloud.endpoints["graph"] + path, _headers(cloud, fresh))
    assert len(objects) == 1


def test_select_is_carried_in_tokens_and_absent_properties_stay_absent(
    cloud: SimCloud, fresh: Tenant, http: httpx.Client
) -> None:
    uid = fresh.directory.add_user({"displayName": "Adele", "department": "Sales", "city": "Paris"})
    url = f"{cloud.endpoints['graph']}/v1.0/users/delta?$select=displayName,department,jobTitle"
    objects, delta_link, _ = _round(http, url, _headers(cloud, fresh))
    assert objects == [{"id": uid, "displayName": "Adele", "department": "Sales"}]
    fresh.directory.update_user(uid, city="Lyon")  # not selected: not tracked
    objects, delta_link, _ = _round(http, delta_link, _headers(cloud, fresh))
    assert objects == []
    fresh.directory.update_user(uid, department=None, jobTitle="Boss")
    objects, _, _ = _round(http, delta_link, _headers(cloud, fresh))
    assert objects == [{"id": uid, "displayName": "Adele", "jobTitle": "Boss"}]


def test_unknown_select_property_is_400(cloud: SimCloud, fresh: Tenant, http: httpx.Client) -> None:
    response = http.get(f"{cloud.endpoints['graph']}/v1.0/users/delta?$select=nope", headers=_headers(cloud, fresh))
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "BadRequest"
    assert "innerError" in response.json()["error"]


def test_filter_by_ids_and_limit(cloud: SimCloud, fresh: Tenant, http: httpx.Client) -> None:
    a = fresh.directory.add_user({"displayName": "A"})
    fresh.directory.add_user({"displayName": "B"})
    c = fresh.directory.add_user({"displayName": "C"})
    url = f"{cloud.endpoints['graph']}/v1.0/users/delta"
    objects, _, _ = _round(http, f"{url}?$filter=id eq '{a}' or id eq '{c}'", _headers(cloud, fresh))
    assert {o["id"] for o in objects} == {a, c}
    too_many = " or ".join(f"id eq '{uuid.uuid4()}'" for _ in range(51))
    response = http.get(url, params={"$filter": too_many}, headers=_headers(cloud, fresh))
    assert response.status_code == 400


def test_removed_changed_deleted_and_restored(cloud: SimCloud, fresh: Tenant, http: httpx.Client) -> None:
    d = fresh.directory
    soft, hard, back = (d.add_user({"displayName": n}) for n in ("soft", "hard", "back"))
    _, link, _ = _round(http, f"{cloud.endpoints['graph']}/v1.0/users/delta", _headers(cloud, fresh))
    d.delete_user(soft)
    d.delete_user(hard, permanent=True)
    d.delete_user(back)
    objects, link, _ = _round(http, link, _headers(cloud, fresh))
    removed = {o["id"]: o["@removed"]["reason"] for o in objects}
    assert removed == {soft: "changed", hard: "deleted", back: "changed"}
    d.restore_user(back)
    d.update_user(d.users[0]["id"], accountEnabled=False)
    objects, _, _ = _round(http, link, _headers(cloud, fresh))
    assert {o["id"] for o in objects} == {back}
    assert objects[0]["accountEnabled"] is False and "@removed" not in objects[0]


def test_no_changes_gives_empty_value_and_new_link(cloud: SimCloud, fresh: Tenant, http: httpx.Client) -> None:
    fresh.directory.add_user({"displayName": "A"})
    _, link, _ = _round(http, f"{cloud.endpoints['graph']}/v1.0/users/delta", _headers(cloud, fresh))
    objects, new_link, _ = _round(http, link, _headers(cloud, fresh))
    assert objects == [] and new_link != link


def test_deltatoken_latest(cloud: SimCloud, fresh: Tenant, http: httpx.Client) -> None:
    fresh.directory.add_user({"displayName": "old"})
    objects, link, _ = _round(
        http, f"{cloud.endpoints['graph']}/v1.0/users/delta?$deltatoken=latest", _headers(cloud, fresh)
    )
    assert objects == []
    new = fresh.directory.add_user({"displayName": "new"})
    objects, _, _ = _round(http, link, _headers(cloud, fresh))
    assert [o["id"] for o in objects] == [new]


def test_replay_resends_and_duplicates(cloud: SimCloud, fresh: Tenant, http: httpx.Client) -> None:
    first = fresh.directory.add_user({"displayName": "first"})
    _, link, _ = _round(http, f"{cloud.endpoints['graph']}/v1.0/users/delta", _headers(cloud, fresh))
    second = fresh.directory.add_user({"displayName": "second"})
    fresh.directory.replay_next_round = True
    objects, _, _ = _round(http, link, _headers(cloud, fresh))
    ids = [o["id"] for o in objects]
    assert first in ids and ids.count(second) == 2


def test_expired_reset_and_garbled_tokens(cloud: SimCloud, fresh: Tenant, http: httpx.Client) -> None:
    fresh.directory.add_user({"displayName": "A"})
    _, link, _ = _round(http, f"{cloud.endpoints['graph']}/v1.0/users/delta", _headers(cloud, fresh))
    garbled = link[:-3] + ("AAA" if not link.endswith("AAA") else "BBB")
    response = http.get(garbled, headers=_headers(cloud, fresh))
    assert response.status_code == 400 and response.json()["error"]["code"] == "syncStateInvalid"
    fresh.directory.reset_tokens()
    response = http.get(link, headers=_headers(cloud, fresh))
    assert response.status_code == 410
    objects, link, _ = _round(http, response.headers["location"], _headers(cloud, fresh))
    assert len(objects) == 1  # the Location starts a full round
    fresh.directory.expire_tokens()
    response = http.get(link, headers=_headers(cloud, fresh))
    assert response.status_code == 400 and response.json()["error"]["code"] == "syncStateNotFound"


def test_token_age_limit(cloud: SimCloud, fresh: Tenant, http: httpx.Client) -> None:
    _, link, _ = _round(http, f"{cloud.endpoints['graph']}/v1.0/users/delta", _headers(cloud, fresh))
    fresh.directory.delta_token_lifetime = 0
    assert http.get(link, headers=_headers(cloud, fresh)).status_code == 400


@pytest.mark.parametrize("kind,status,code", [
    ("delta_expired", 400, "syncStateNotFound"), ("delta_reset", 410, "resyncRequired"),
    ("delta_garbled", 400, "syncStateInvalid"), ("resync_required", 400, "resyncRequired"),
])
def test_delta_faults(cloud: SimCloud, fresh: Tenant, http: httpx.Client, kind: str, status: int, code: str) -> None:
    _, link, _ = _round(http, f"{cloud.endpoints['graph']}/v1.0/users/delta", _headers(cloud, fresh))
    cloud.faults.inject("graph", kind)
    response = http.get(link, headers=_headers(cloud, fresh))
    assert (response.status_code, response.json()["error"]["code"]) == (status, code)
    assert http.get(link, headers=_headers(cloud, fresh)).status_code == 200


def test_header_names_are_case_insensitive(cloud: SimCloud, fresh: Tenant, http: httpx.Client) -> None:
    token = _headers(cloud, fresh)["Authorization"]
    response = http.get(f"{cloud.endpoints['graph']}/v1.0/users/delta", headers={"AUTHORIZATION": token})
    assert response.status_code == 200


def test_bad_tokens_are_401(cloud: SimCloud, fresh: Tenant, http: httpx.Client) -> None:
    url = f"{cloud.endpoints['graph']}/v1.0/users/delta"
    cid = "11111111-1111-1111-1111-111111111111"
    for headers in (
        {},
        {"Authorization": "Bearer garbage"},
        {"Authorization": f"Bearer {cloud.issue_token(fresh, cid, 'graph', lifetime=-120)}"},
        {"Authorization": f"Bearer {cloud.issue_token(fresh, cid, 'exchange')}"},
    ):
        response = http.get(url, headers=headers)
        assert response.status_code == 401, headers
        assert response.json()["error"]["code"] == "InvalidAuthenticationToken"


def test_missing_role_is_403(cloud: SimCloud, fresh: Tenant, http: httpx.Client) -> None:
    token = cloud.issue_token(fresh, "11111111-1111-1111-1111-111111111111", "graph", roles=("Exchange.ManageAsApp",))
    response = http.get(f"{cloud.endpoints['graph']}/v1.0/users/delta", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 403


def test_users_list_and_one_user_and_one_group(cloud: SimCloud, fresh: Tenant, http: httpx.Client) -> None:
    token = cloud.issue_token(fresh, "11111111-1111-1111-1111-111111111111", "graph",
                              roles=("User.Read.All", "GroupMember.Read.All"))
    headers = {"Authorization": f"Bearer {token}"}
    user = fresh.directory.add_user({"displayName": "O'Brien", "mail": "obrien@x.example",
                                     "userPrincipalName": "obrien@x.example"})
    group = fresh.directory.add_group("Sales")
    base = cloud.endpoints["graph"] + "/v1.0"
    listed = http.get(f"{base}/users", params={"$top": "1", "$select": "id,displayName,manager"}, headers=headers)
    assert listed.status_code == 200 and len(listed.json()["value"]) == 1
    assert "manager@delta" not in listed.json()["value"][0], "a list never reports relationships"
    found = http.get(f"{base}/users", params={"$filter": "userPrincipalName eq 'OBRIEN@x.example' or mail eq 'x'",
                                              "$select": "id"}, headers=headers)
    assert found.json()["value"] == [{"id": user}]
    assert http.get(f"{base}/users", params={"$filter": "startswith(mail,'o')"}, headers=headers).status_code == 400
    assert http.get(f"{base}/users/{user}", params={"$select": "displayName"}, headers=headers).json()["displayName"] == "O'Brien"
    default = http.get(f"{base}/groups/{group}", headers=headers).json()  # Graph's default set, not everything
    assert default["id"] == group and default["displayName"] == "Sales" and "hideFromAddressLists" not in default
    assert http.get(f"{base}/groups/{uuid.uuid4()}", headers=headers).status_code == 404
