"""Fault injection: throttling variants, 503/504, Exchange-only faults, probability with a seeded RNG, counters."""

from __future__ import annotations

import httpx
import pytest

from sim import SimCloud, Tenant

CID = "33333333-3333-3333-3333-333333333333"


@pytest.fixture
def ready(cloud: SimCloud) -> Tenant:
    cloud.faults.clear()
    tenant = cloud.add_tenant()
    tenant.register_app(CID, secret="x")
    return tenant


def graph_get(cloud: SimCloud, http: httpx.Client, tenant: Tenant) -> httpx.Response:
    token = cloud.issue_token(tenant, CID, "graph")
    return http.get(f"{cloud.endpoints['graph']}/v1.0/users/delta", headers={"Authorization": f"Bearer {token}"})


def exo(cloud: SimCloud, http: httpx.Client, tenant: Tenant, cmdlet: str) -> httpx.Response:
    token = cloud.issue_token(tenant, CID, "exchange")
    return http.post(
        f"{cloud.endpoints['exchange']}/adminapi/beta/{tenant.tenant_id}/InvokeCommand",
        json={"CmdletInput": {"CmdletName": cmdlet, "Parameters": {"ResultSize": "Unlimited"}}},
        headers={"Authorization": f"Bearer {token}"},
    )


@pytest.mark.parametrize("retry_after", ["3", "0.249", None, "240"])
def test_graph_throttle_retry_after_variants(cloud: SimCloud, http: httpx.Client, ready: Tenant,
                                             retry_after: str | None) -> None:
    cloud.faults.inject("graph", "throttle", times=2, retry_after=retry_after)
    for _ in range(2):
        response = graph_get(cloud, http, ready)
        assert response.status_code == 429
        assert response.headers.get("retry-after") == retry_after
        assert response.json()["error"]["code"] == "TooManyRequests"
    assert graph_get(cloud, http, ready).status_code == 200


@pytest.mark.parametrize("kind,status", [("unavailable", 503), ("gateway_timeout", 504)])
def test_5xx(cloud: SimCloud, http: httpx.Client, ready: Tenant, kind: str, status: int) -> None:
    cloud.faults.inject("graph", kind)
    cloud.faults.inject("exchange", kind)
    assert graph_get(cloud, http, ready).status_code == status
    assert exo(cloud, http, ready, "Get-MailContact").status_code == status


def test_exchange_concurrency_limit_is_plain_text(cloud: SimCloud, http: httpx.Client, ready: Tenant) -> None:
    cloud.faults.inject("exchange", "concurrency_limit", retry_after="1")
    response = exo(cloud, http, ready, "Get-MailContact")
    assert response.status_code == 429 and "maximum number of concurrent requests" in response.text
    assert not response.headers["content-type"].startswith("application/json")


def test_server_busy_targets_one_cmdlet(cloud: SimCloud, http: httpx.Client, ready: Tenant) -> None:
    cloud.faults.inject("exchange", "server_busy", operation="Get-Recipient")
    assert exo(cloud, http, ready, "Get-MailContact").status_code == 200
    busy = exo(cloud, http, ready, "Get-Recipient")
    assert busy.status_code == 400 and "ServerBusyException" in busy.json()["error"]["details"][0]["message"]
    assert exo(cloud, http, ready, "Get-Recipient").status_code == 200


def test_probability_is_seeded_and_counted(cloud: SimCloud, http: httpx.Client, ready: Tenant) -> None:
    def run() -> list[int]:
        cloud.faults.clear()
        cloud.faults.seed(42)
        cloud.faults.inject("exchange", "throttle", probability=0.5)
        return [exo(cloud, http, ready, "Get-MailContact").status_code for _ in range(20)]

    cloud.reset_counts()
    first, second = run(), run()
    assert first == second and 0 < first.count(429) < 20
    assert cloud.counts[("faults", "throttle")] == first.count(429) * 2
    assert cloud.counts["exchange"] == 40
    assert cloud.counts[("exchange", "Get-MailContact")] == 40
    cloud.faults.clear()


def test_unknown_kind_is_refused(cloud: SimCloud) -> None:
    with pytest.raises(ValueError):
        cloud.faults.inject("graph", "meteor")
