"""The simulated users/delta as Graph pages and times it: Prefer odata.maxpagesize (capped at 200), nextLinks that can
be read again and that expire, full rounds rendered as they are served, and the realistic latency profile."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from sim import SimCloud, Tenant
from sim.generator import load_users
from sim.graph import REALISTIC_GRAPH_ENV, GraphLatency

APP = "22222222-2222-2222-2222-222222222222"


@pytest.fixture
def fresh(cloud: SimCloud) -> Tenant:
    tenant = cloud.add_tenant()
    tenant.register_app(APP, secret="x")
    return tenant


def get(cloud: SimCloud, tenant: Tenant, http: httpx.Client, url: str, **headers: str) -> httpx.Response:
    token = cloud.issue_token(tenant, APP, "graph")
    return http.get(url, headers={"Authorization": f"Bearer {token}", **headers})


def pages(cloud: SimCloud, tenant: Tenant, http: httpx.Client, url: str, **headers: str) -> list[dict[str, Any]]:
    bodies = []
    while True:
        response = get(cloud, tenant, http, url, **headers)
        assert response.status_code == 200, response.text
        bodies.append({**response.json(), "_applied": response.headers.get("preference-applied")})
        if "@odata.deltaLink" in bodies[-1]:
            return bodies
        url = bodies[-1]["@odata.nextLink"]


def test_users_come_200_a_page_and_prefer_maxpagesize_lowers_it(cloud: SimCloud, fresh: Tenant, http: httpx.Client) -> None:
    load_users(fresh.directory, 450, seed=3)
    url = f"{cloud.endpoints['graph']}/v1.0/users/delta"
    assert [len(b["value"]) for b in pages(cloud, fresh, http, url)] == [200, 200, 50]
    smaller = pages(cloud, fresh, http, url, Prefer="odata.maxpagesize=120")
    assert [len(b["value"]) for b in smaller] == [120, 120, 120, 90]
    assert {b["_applied"] for b in smaller} == {"odata.maxpagesize=120"}
    capped = pages(cloud, fresh, http, url, Prefer="return=minimal, odata.maxpagesize=999")
    assert [len(b["value"]) for b in capped] == [200, 200, 50] and capped[0]["_applied"] == "odata.maxpagesize=200"


def test_a_next_link_can_be_read_again_and_expires(cloud: SimCloud, fresh: Tenant, http: httpx.Client) -> None:
    fresh.directory.page_size = 3
    load_users(fresh.directory, 7, seed=4)
    first = get(cloud, fresh, http, f"{cloud.endpoints['graph']}/v1.0/users/delta").json()
    link = first["@odata.nextLink"]
    again = [get(cloud, fresh, http, link).json() for _ in range(2)]
    assert again[0]["value"] == again[1]["value"] and len(again[0]["value"]) == 3
    last = pages(cloud, fresh, http, link)[-1]
    assert "@odata.deltaLink" in last
    fresh.directory.skip_token_lifetime = 0.0  # nextLinks expire; the round's deltaLink does not
    expired = get(cloud, fresh, http, link)
    assert expired.status_code == 400 and expired.json()["error"]["code"] == "syncStateNotFound"
    assert get(cloud, fresh, http, last["@odata.deltaLink"]).status_code == 200


def test_a_full_round_renders_each_page_when_it_is_served(cloud: SimCloud, fresh: Tenant, http: httpx.Client) -> None:
    fresh.directory.page_size = 2
    ids = load_users(fresh.directory, 4, seed=5)
    first = get(cloud, fresh, http, f"{cloud.endpoints['graph']}/v1.0/users/delta?$select=displayName").json()
    later = sorted(ids)[2:]
    fresh.directory.update_user(later[0], displayName="Renamed Meanwhile")
    fresh.directory.delete_user(later[1], permanent=True)
    second = get(cloud, fresh, http, first["@odata.nextLink"]).json()
    assert second["value"] == [{"id": later[0], "displayName": "Renamed Meanwhile"}]


def test_the_realistic_profile_is_as_slow_as_graph_and_off_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    assert GraphLatency().seconds(200) == 0.0
    monkeypatch.setenv(REALISTIC_GRAPH_ENV, "1")
    realistic = GraphLatency.switch(seed=9)
    page = [realistic.seconds(200) for _ in range(200)]
    assert 0.55 < sum(page) / len(page) < 0.75 and min(page) > 0.3  # ~0.65 s for 200 users
    starts = [realistic.seconds(200, starts_full_round=True) for _ in range(100)]
    assert 1.4 < sum(starts) / len(starts) < 1.9  # the first page of a full round: +1 s
    assert 0.2 < sum(realistic.seconds(0) for _ in range(100)) / 100 < 0.3  # an empty incremental page
    monkeypatch.setenv(REALISTIC_GRAPH_ENV, "0")
    assert not GraphLatency.switch().enabled


def test_a_realistic_cloud_answers_pages_at_graph_speed_and_in_parallel() -> None:
    with SimCloud.trusted(realistic_graph=True) as cloud, httpx.Client(timeout=30) as http:
        tenant = cloud.add_tenant()
        tenant.register_app(APP, secret="x")
        load_users(tenant.directory, 400, seed=6)
        url = f"{cloud.endpoints['graph']}/v1.0/users/delta"
        started = time.monotonic()
        first = get(cloud, tenant, http, url).json()
        get(cloud, tenant, http, first["@odata.nextLink"])
        two_pages = time.monotonic() - started
        assert two_pages > 1.2, "a round's first page (~1.65 s) and a full page (~0.65 s)"
        with httpx.Client(timeout=30) as other:
            started = time.monotonic()
            with ThreadPoolExecutor(4) as pool:
                list(pool.map(lambda client: get(cloud, tenant, client, first["@odata.nextLink"]), [http, other] * 2))
            assert time.monotonic() - started < 4 * 0.65, "answers wait outside the lock: clients overlap"
