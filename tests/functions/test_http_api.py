"""Every HTTP route through its decorated function: JSON in and out, errors as {"error": ...} with 400/404/409/500,
resync with full and allow_deletes, and definitions that carry secret references only."""

from __future__ import annotations

import pytest

from sync.api import handlers as http_api
from sync.errors import ConfigError

from .conftest import PAIR_ID, SECRET, SECRET_ENV, Sync


def resync(sync: Sync, pair_id: str = PAIR_ID, **params: str):  # type: ignore[no-untyped-def]
    return sync.host.call_http("POST", f"/api/pairs/{pair_id}/resync", params)


def test_resync_plans_now_and_reports_the_run(sync: Sync) -> None:
    sync.add_users(4)
    reply = resync(sync)
    assert reply.status == 202 and reply.headers["Content-Type"].startswith("application/json")
    body = reply.json
    assert body["outcome"] == "planned" and body["queued"] == 4 and body["counts"]["create"] == 4
    assert body["run_id"] == sync.rt.stores.runs.recent(PAIR_ID)[0].run_id
    assert sync.rt.stores.runs.recent(PAIR_ID)[0].trigger == "http"
    sync.host.drain_queue(deadline_seconds=30)
    again = resync(sync, code="function-key-is-the-hosts-business")
    assert again.status == 200 and again.json["outcome"] == "no_changes" and again.json["queued"] == 0
    full = resync(sync, full="true")
    assert full.status in (200, 202) and full.json["full"] is True
    assert sync.rt.stores.runs.recent(PAIR_ID)[0].full


@pytest.mark.parametrize(
    ("params", "message"),
    [({"full": "maybe"}, "'full' must be true or false"), ({"allow_deletes": "2"}, "'allow_deletes' must be true"),
     ({"fulll": "true"}, "unknown query parameter(s): fulll")],
)
def test_bad_parameters_are_400(sync: Sync, params: dict[str, str], message: str) -> None:
    reply = resync(sync, **params)
    assert reply.status == 400 and message in reply.json["error"]
    assert sync.rt.stores.runs.recent(PAIR_ID) == []


@pytest.mark.parametrize("bad_id", ["Contoso", "ab", "x" * 41, "a_b"])
def test_a_malformed_pair_id_is_400(sync: Sync, bad_id: str) -> None:
    assert resync(sync, bad_id).status == 400
    reply = sync.host.call_http("GET", f"/api/pairs/{bad_id}")
    assert reply.status == 400 and "3 to 40 lower-case letters" in reply.json["error"]


def test_an_unknown_pair_is_404(sync: Sync) -> None:
    for reply in (resync(sync, "no-such-pair"), sync.host.call_http("GET", "/api/pairs/no-such-pair")):
        assert reply.status == 404 and reply.json == {"error": "no tenant pair with id 'no-such-pair'"}


def test_lease_held_is_409(sync: Sync) -> None:
    sync.rt.stores.pair_state.acquire_lease(PAIR_ID, "another-run", 600)
    reply = resync(sync)
    assert reply.status == 409 and reply.json["outcome"] == "lease_held"
    assert "being planned by run another-run" in reply.json["error"]


def test_a_quarantined_pair_is_409_until_allow_deletes_releases_it_once(sync: Sync) -> None:
    sync.add_users(10)
    resync(sync)
    sync.host.drain_queue(deadline_seconds=30)
    for user in sync.source.directory.users[:3]:  # 30% leave; the pair allows 10%
        sync.source.directory.delete_user(user["id"], permanent=False)
    stopped = resync(sync)
    assert stopped.status == 409 and stopped.json["outcome"] == "quarantined"
    assert "3 of 10 contacts" in stopped.json["error"]
    still = resync(sync, full="true")
    assert still.status == 409 and still.json["quarantine_reason"] in stopped.json["error"]
    assert sync.rt.stores.pair_state.get(PAIR_ID).delta_link, "a refused full resync keeps the deltaLink"
    assert len(sync.target.exchange.contacts()) == 10

    released = resync(sync, allow_deletes="true")
    assert released.status == 202 and released.json["counts"]["delete"] == 3
    assert released.json["quarantine_released"] is True
    assert not sync.rt.stores.pair_state.get(PAIR_ID).quarantined
    sync.host.drain_queue(deadline_seconds=30)
    assert sync.anchors() == sync.expected_anchors() and len(sync.anchors()) == 7
    assert resync(sync).status == 200  # released: the next run is an ordinary one


def test_list_and_show_return_definitions_with_references_and_status(sync: Sync) -> None:
    sync.add_users(2)
    resync(sync)
    listing = sync.host.call_http("GET", "/api/pairs")
    assert listing.status == 200
    [entry] = listing.json["pairs"]
    assert entry["id"] == PAIR_ID
    assert entry["definition"]["source"]["credential"]["secret"] == f"env:{SECRET_ENV}"
    shown = sync.host.call_http("GET", f"api/pairs/{PAIR_ID}")
    assert shown.status == 200 and shown.json["definition"] == entry["definition"]
    status = shown.json["status"]
    assert status["pair"] == PAIR_ID and status["quarantined"] is False
    assert status["contacts"] == {"queued": 2} and status["waiting"] == {"creates_queued": 2, "poisoned": 0}
    assert shown.json["queues"] == listing.json["queues"] == {
        "ops": 2, "poison": 0, "poison_poison": 0, "failed": 0, "parked": 0, "pair_runs": 0, "pair_runs_poison": 0,
        "pair_runs_poison_poison": 0}
    assert status["recent_runs"][0]["trigger"] == "http"
    for reply in (listing, shown):
        assert SECRET not in reply.body.decode()
    assert sync.host.call_http("GET", "/api/pairs", {"verbose": "1"}).status == 400


def test_routes_the_app_does_not_have(sync: Sync) -> None:
    assert sync.host.call_http("GET", "/api/nothing").status == 404
    assert sync.host.call_http("DELETE", f"/api/pairs/{PAIR_ID}").status == 405


def test_errors_never_leak_a_stack_trace() -> None:
    def broken() -> http_api.ApiResponse:
        raise RuntimeError("something with a value inside")

    def misconfigured() -> http_api.ApiResponse:
        raise ConfigError("app setting CTCS_OPS_QUEUE is not set")

    assert http_api.respond(broken).body == {
        "error": "internal error (RuntimeError); see the function's log"
    }
    assert http_api.respond(misconfigured).status == 500
    assert http_api.respond(misconfigured).body["error"].startswith("app setting CTCS_OPS_QUEUE")
