"""The simulated Exchange as hard as the real one: latency, the per-tenant concurrency cap, the request budget with
Rate-Limit-* headers, the creation quota, and `$batch`; each switchable per tenant and off by default."""

from __future__ import annotations

import re
import threading
import time
from datetime import datetime
from typing import Any

import httpx
import pytest

from sim import SimCloud, Tenant
from sim.exchange_limits import ExchangeLimits, ExchangeProfile

from .test_exchange_cmdlets import CID, call, detail

QUOTA_TYPE = "RecipientUsageExceededRecentQuotaException"


@pytest.fixture
def org(cloud: SimCloud) -> Tenant:
    tenant = cloud.add_tenant()
    tenant.register_app(CID, secret="x")
    return tenant


def seconds_until(response: httpx.Response) -> float:
    """Rate-Limit-Reset, sent as the absolute time Exchange Online sends (`2024-05-22T16:52:26.365Z`), in seconds."""
    return datetime.fromisoformat(response.headers["Rate-Limit-Reset"]).timestamp() - time.time()


def new_contact(cloud: SimCloud, http: httpx.Client, org: Tenant, n: int) -> httpx.Response:
    return call(cloud, http, org, "New-MailContact", Name=f"c{n}", ExternalEmailAddress=f"c{n}@contoso.com")


def batch(cloud: SimCloud, http: httpx.Client, org: Tenant, requests: list[dict[str, Any]]) -> httpx.Response:
    token = cloud.issue_token(org, CID, "exchange")
    return http.post(f"{cloud.endpoints['exchange']}/adminapi/beta/{org.tenant_id}/$batch", json={"requests": requests},
                     headers={"Authorization": f"Bearer {token}", "Prefer": "odata.continue-on-error"})


def sub_request(n: int, cmdlet: str, **params: Any) -> dict[str, Any]:
    return {"id": str(n), "method": "POST", "url": "/adminapi/beta/x/InvokeCommand",
            "headers": {"X-CmdletName": cmdlet, "Content-Type": "application/json"},
            "body": {"CmdletInput": {"CmdletName": cmdlet, "Parameters": params}}}


def test_the_default_profile_limits_nothing(cloud: SimCloud, http: httpx.Client, org: Tenant) -> None:
    assert org.exchange.limits.profile == ExchangeProfile()
    started = time.monotonic()
    responses = [new_contact(cloud, http, org, n) for n in range(20)]
    assert {r.status_code for r in responses} == {200}
    assert time.monotonic() - started < 5
    assert int(responses[-1].headers["Rate-Limit-Remaining"]) > 0 and "Rate-Limit-Reset" in responses[-1].headers


def test_each_cmdlet_takes_its_latency(cloud: SimCloud, http: httpx.Client, org: Tenant) -> None:
    org.exchange.limits.configure(latency={"New-MailContact": 0.3, "*": 0.05})
    started = time.monotonic()
    assert new_contact(cloud, http, org, 1).status_code == 200
    assert time.monotonic() - started >= 0.3
    started = time.monotonic()
    assert call(cloud, http, org, "Get-Recipient", Identity="c1").status_code == 200
    assert 0.05 <= time.monotonic() - started < 0.3


def test_calls_beyond_the_concurrency_cap_get_the_plain_text_429(cloud: SimCloud, org: Tenant) -> None:
    org.exchange.limits.configure(concurrency_cap=3, latency={"*": 0.4})
    barrier = threading.Barrier(6)
    answers: list[httpx.Response] = []
    lock = threading.Lock()

    def one(n: int) -> None:
        with httpx.Client(timeout=10) as client:
            barrier.wait()
            response = call(cloud, client, org, "Get-Recipient", Filter=f"Name -eq 'x{n}'")
            with lock:
                answers.append(response)

    threads = [threading.Thread(target=one, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=20)
    refused = [r for r in answers if r.status_code == 429]
    assert len([r for r in answers if r.status_code == 200]) == 3 and len(refused) == 3
    assert all("maximum number of concurrent requests per tenant" in r.text for r in refused)
    assert all("Retry-After" not in r.headers for r in refused), "Exchange often sends no Retry-After here"
    assert org.exchange.limits.stats.peak_in_flight == 3 and org.exchange.limits.stats.concurrency_rejections == 3


def test_a_spent_budget_answers_429_with_retry_after_until_the_window_renews(
    cloud: SimCloud, http: httpx.Client, org: Tenant
) -> None:
    org.exchange.limits.configure(budget=3, budget_window=1.5)
    remaining = [call(cloud, http, org, "Get-Recipient", Identity="nobody").headers["Rate-Limit-Remaining"]
                 for _ in range(3)]
    assert remaining == ["2", "1", "0"]
    throttled = call(cloud, http, org, "Get-Recipient", Identity="nobody")
    assert throttled.status_code == 429 and int(throttled.headers["Retry-After"]) >= 1
    assert throttled.headers["Rate-Limit-Limit"] == "3" and 0 <= seconds_until(throttled) <= 1.5
    time.sleep(seconds_until(throttled) + 0.05)
    renewed = call(cloud, http, org, "Get-Recipient", Identity="nobody")
    assert renewed.status_code == 404 and renewed.headers["Rate-Limit-Remaining"] == "2"


def test_the_creation_quota_refuses_new_contacts_until_it_frees(cloud: SimCloud, http: httpx.Client, org: Tenant) -> None:
    org.exchange.limits.configure(creation_quota=3, quota_cooldown=1.0)
    assert [new_contact(cloud, http, org, n).status_code for n in range(3)] == [200, 200, 200]
    refused = new_contact(cloud, http, org, 3)
    assert refused.status_code == 400
    exception_type, message = detail(refused)
    assert exception_type == QUOTA_TYPE
    assert message == "You've reached the maximum number of mail users and contacts you can create at this time."
    assert call(cloud, http, org, "Set-MailContact", Identity="c0", CustomAttribute1="x").status_code == 200, (
        "only creations wait: changes go on"
    )
    time.sleep(1.05)
    assert [new_contact(cloud, http, org, n).status_code for n in range(3, 7)] == [200, 200, 200, 400]
    assert len(org.exchange.limits.stats.quota_windows) == 1 and org.exchange.limits.stats.creations == 6


def test_the_quota_is_dynamic_but_seeded() -> None:
    profile = ExchangeProfile(creation_quota=600, quota_jitter=0.1, seed=3)
    drawn = {ExchangeLimits(profile)._quota for _ in range(3)}
    assert len(drawn) == 1 and 540 <= drawn.pop() <= 660


def test_batch_answers_each_sub_request_with_its_own_status(cloud: SimCloud, http: httpx.Client, org: Tenant) -> None:
    requests = [sub_request(n, "New-MailContact", Name=f"b{n}", ExternalEmailAddress=f"b{n}@contoso.com")
                for n in range(9)]
    requests.append(sub_request(9, "Set-MailContact", Identity="nobody", CustomAttribute1="x"))
    answer = batch(cloud, http, org, requests)
    assert answer.status_code == 200
    statuses = {item["id"]: item["status"] for item in answer.json()["responses"]}
    assert statuses == {**{str(n): 200 for n in range(9)}, "9": 404}
    first = next(item for item in answer.json()["responses"] if item["id"] == "0")
    assert first["body"]["value"][0]["Name"] == "b0" and "Rate-Limit-Remaining" in first["headers"]
    assert cloud.counts[("exchange", "New-MailContact")] >= 9


def test_batch_sub_requests_meet_the_concurrency_cap_one_by_one(cloud: SimCloud, http: httpx.Client, org: Tenant) -> None:
    org.exchange.limits.configure(concurrency_cap=4, latency={"*": 0.2})
    answer = batch(cloud, http, org, [sub_request(n, "Get-Recipient", Filter=f"Name -eq 'x{n}'") for n in range(10)])
    statuses = sorted(item["status"] for item in answer.json()["responses"])
    assert statuses == [200] * 4 + [429] * 6
    throttled = next(item for item in answer.json()["responses"] if item["status"] == 429)
    assert "maximum number of concurrent requests" in throttled["body"]


def test_batch_limits_and_refusal(cloud: SimCloud, http: httpx.Client, org: Tenant) -> None:
    eleven = [sub_request(n, "Get-Recipient", Identity="x") for n in range(11)]
    assert batch(cloud, http, org, eleven).status_code == 400
    org.exchange.limits.configure(batch=False)
    refused = batch(cloud, http, org, eleven[:2])
    assert refused.status_code == 400 and "not supported" in refused.json()["error"]["message"]


def test_the_realistic_profile_is_one_switch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CTCS_SIM_EXCHANGE_PROFILE", "realistic:0.05")
    profile = ExchangeProfile.from_environment()
    assert profile.concurrency_cap == 10 and profile.creation_quota == 600
    assert profile.latency["New-MailContact"] == pytest.approx(0.06)
    monkeypatch.setenv("CTCS_SIM_EXCHANGE_PROFILE", "fast")
    assert ExchangeProfile.from_environment() == ExchangeProfile()
    monkeypatch.setenv("CTCS_SIM_EXCHANGE_PROFILE", "slow")
    with pytest.raises(ValueError, match="realistic"):
        ExchangeProfile.from_environment()


def test_an_or_of_equalities_is_answered_from_the_indexes_exactly_as_a_scan_would() -> None:
    from sim.exchange_org import ExchangeOrg
    from sim.opath import compile_filter, equality_terms

    org = ExchangeOrg(tenant_id="t", domain="t.onmicrosoft.com")
    guid = org.add_recipient("MailContact", "ctcs-1", "one@contoso.com", CustomAttribute15="ctcs|t|1")
    org.add_recipient("UserMailbox", "mailbox", "mb@t.com", EmailAddresses=["smtp:Old@Contoso.com"])
    org.add_recipient("SoftDeletedMailbox", "gone", "gone@contoso.com")
    org.add_recipient("MailContact", "other", "other@contoso.com", CustomAttribute15="ctcs|t|2")
    text = ("(CustomAttribute15 -eq 'CTCS|t|1') -or (EmailAddresses -eq 'smtp:old@contoso.com') -or "
            "(Name -eq 'x') -or (EmailAddresses -eq 'smtp:gone@contoso.com') -or (Guid -eq '" + guid + "')")
    assert equality_terms(text) is not None
    answered = {r["Name"] for r in org.run("Get-Recipient", {"Filter": text})}
    scanned = {r["Name"] for r in org.recipients() if compile_filter(text)(r)}
    assert answered == scanned == {"ctcs-1", "mailbox"}
    assert equality_terms("Name -like 'ctcs*'") is None and equality_terms("(Name -eq 'a') -and (Alias -eq 'b')") is None


def test_budget_headers_come_in_the_live_iso_form_or_as_seconds(cloud: SimCloud, http: httpx.Client, org: Tenant) -> None:
    org.exchange.limits.configure(budget=100, budget_window=30.0)
    reset = call(cloud, http, org, "Get-Recipient", Identity="nobody").headers["Rate-Limit-Reset"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", reset), reset
    assert 0 < datetime.fromisoformat(reset).timestamp() - time.time() <= 30.001
    org.exchange.limits.configure(rate_limit_reset_format="seconds")
    seconds = float(call(cloud, http, org, "Get-Recipient", Identity="nobody").headers["Rate-Limit-Reset"])
    assert 0 < seconds <= 30
    with pytest.raises(ValueError, match="rate_limit_reset_format must be one of iso, seconds"):
        ExchangeProfile(rate_limit_reset_format="epoch")


def test_every_answer_carries_the_concurrency_headers(cloud: SimCloud, http: httpx.Client, org: Tenant) -> None:
    org.exchange.limits.configure(foreign_in_flight=2, concurrency_cap=10)
    for answer in (call(cloud, http, org, "Get-Recipient", Identity="nobody"), new_contact(cloud, http, org, 1)):
        assert answer.headers["X-Concurrencycount"] == "1", "the answered call counts itself"
        assert answer.headers["X-Combinedapponlyconcurrencycount"] == "3", "and the other apps' calls"
    org.exchange.limits.configure(concurrency_cap=2)  # the other apps' two calls fill the cap
    refused = call(cloud, http, org, "Get-Recipient", Identity="nobody")
    assert refused.status_code == 429 and refused.headers["X-Combinedapponlyconcurrencycount"] == "2"
    org.exchange.limits.configure(concurrency_headers=False, concurrency_cap=0)
    assert "X-Concurrencycount" not in call(cloud, http, org, "Get-Recipient", Identity="nobody").headers


def test_failures_come_in_both_live_envelopes_drawn_by_the_seed(cloud: SimCloud, http: httpx.Client, org: Tenant) -> None:
    def envelopes() -> list[str]:
        return [call(cloud, http, org, "Get-MailContact", Identity=f"none{n}").json()["error"]["message"]
                for n in range(12)]

    org.exchange.limits.configure(seed=7)
    drawn = envelopes()
    assert set(drawn) == {"Error executing cmdlet", "Invalid Operation"}, "strict by default: both shapes"
    org.exchange.limits.configure(seed=7)
    assert envelopes() == drawn, "seeded"
    org.exchange.limits.configure(error_envelope="invalid_operation")
    error = call(cloud, http, org, "Get-MailContact", Identity="nobody").json()["error"]
    assert error["details"][0]["code"] == "Client" and error["details"][0]["message"].startswith(
        "|Microsoft.Exchange.Configuration.Tasks.ManagementObjectNotFoundException|")
    assert error["innererror"]["internalexception"]["type"].endswith("ManagementObjectNotFoundException")
    assert detail(call(cloud, http, org, "Get-MailContact", Identity="nobody"))[0] == "ManagementObjectNotFoundException"
    org.exchange.limits.configure(error_envelope="classic")
    assert set(envelopes()) == {"Error executing cmdlet"}


def test_a_403_carries_nul_bytes_as_seen_live_or_json(cloud: SimCloud, http: httpx.Client, org: Tenant) -> None:
    weak = "00000000-0000-0000-0000-00000000f403"
    org.register_app(weak, secret="x", roles=["User.Read.All"])
    token = {"Authorization": f"Bearer {cloud.issue_token(org, weak, 'exchange')}"}
    refused = call(cloud, http, org, "Get-Recipient", headers=token, Identity="nobody")
    assert refused.status_code == 403 and refused.content and set(refused.content) == {0}
    org.exchange.limits.configure(forbidden_body="json")
    assert call(cloud, http, org, "Get-Recipient", headers=token, Identity="nobody").json()["error"]["code"] == "Forbidden"
