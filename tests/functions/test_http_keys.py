"""Function keys by role, through the HTTP entry points: `ctcs-read` reads, `ctcs-operate` also plans, reconciles,
tests and provisions, only `ctcs-dangerous` may set `allow_deletes=true`. The key comes as the host takes it
(`x-functions-key` header or `?code=`); ctcs compares it with CTCS_KEY_READ / _OPERATE / _DANGEROUS."""

from __future__ import annotations

import pytest

from sync.api.keys import Role, caller_role

from .conftest import PAIR_ID, Sync

KEYS = {"CTCS_KEY_READ": "read-key-value", "CTCS_KEY_OPERATE": "operate-key-value",
        "CTCS_KEY_DANGEROUS": "dangerous-key-value"}
READ, OPERATE, DANGEROUS = KEYS.values()


@pytest.fixture
def keyed(sync: Sync, monkeypatch: pytest.MonkeyPatch) -> Sync:
    for name, value in KEYS.items():
        monkeypatch.setenv(name, value)
    sync.add_users(3)
    return sync


def call(sync: Sync, method: str, route: str, key: str | None, **params: str):  # type: ignore[no-untyped-def]
    headers = {"x-functions-key": key} if key is not None else {}
    return sync.host.call_http(method, route, params, headers=headers)


def test_a_read_key_reads_but_cannot_resync(keyed: Sync) -> None:
    assert call(keyed, "GET", "/api/pairs", READ).status == 200
    assert call(keyed, "GET", f"/api/pairs/{PAIR_ID}", READ).status == 200
    for route in ("resync", "reconcile", "test", "users/user0/sync"):
        reply = call(keyed, "POST", f"/api/pairs/{PAIR_ID}/{route}", READ)
        assert reply.status == 403 and "ctcs-operate or ctcs-dangerous" in reply.json["error"], route
        assert "used ctcs-read" in reply.json["error"]
    assert keyed.rt.stores.runs.recent(PAIR_ID) == [] and keyed.rt.stores.pair_runs.approximate_count() == 0


def test_an_operate_key_resyncs_but_cannot_allow_deletes(keyed: Sync) -> None:
    assert call(keyed, "POST", f"/api/pairs/{PAIR_ID}/resync", OPERATE).status == 202
    runs = len(keyed.rt.stores.runs.recent(PAIR_ID))
    for route in ("resync", "reconcile"):
        reply = call(keyed, "POST", f"/api/pairs/{PAIR_ID}/{route}", OPERATE, allow_deletes="true")
        assert reply.status == 403 and "allow_deletes=true needs the function key ctcs-dangerous" in reply.json["error"]
    assert len(keyed.rt.stores.runs.recent(PAIR_ID)) == runs and keyed.rt.stores.pair_runs.approximate_count() == 0


def test_the_dangerous_key_may_allow_deletes(keyed: Sync) -> None:
    reply = keyed.host.call_http("POST", f"/api/pairs/{PAIR_ID}/resync", {"allow_deletes": "true", "code": DANGEROUS})
    assert reply.status == 202 and reply.json["outcome"] == "planned"
    assert call(keyed, "POST", f"/api/pairs/{PAIR_ID}/reconcile", DANGEROUS, allow_deletes="true").status == 202
    assert call(keyed, "GET", "/api/pairs", DANGEROUS).status == 200, "each role includes the ones below it"


def test_a_key_that_is_no_role_key_is_401(keyed: Sync) -> None:
    for key in (None, "", "the-hosts-default-key", READ + "x"):
        reply = call(keyed, "GET", "/api/pairs", key)
        assert reply.status == 401 and "ctcs-read, ctcs-operate or ctcs-dangerous" in reply.json["error"]


def test_in_azure_without_role_keys_every_route_is_refused(sync: Sync, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WEBSITE_INSTANCE_ID", "0123abcd")  # as on every instance in Azure
    monkeypatch.setenv("CTCS_CHANGE_NOTIFICATIONS", "off")
    reply = call(sync, "GET", "/api/pairs", "any")
    assert reply.status == 403 and "CTCS_KEY_READ" in reply.json["error"]


def test_func_start_without_role_keys_lets_every_caller_in(monkeypatch: pytest.MonkeyPatch) -> None:
    """Core Tools sets WEBSITE_HOSTNAME=localhost:7071 on a laptop: that is not Azure, so no role key is needed."""
    monkeypatch.setenv("WEBSITE_HOSTNAME", "localhost:7071")
    for name in ("CTCS_KEY_READ", "CTCS_KEY_OPERATE", "CTCS_KEY_DANGEROUS"):
        monkeypatch.delenv(name, raising=False)
    assert caller_role({}, {}) is Role.DANGEROUS
