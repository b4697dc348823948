"""The pieces of change notifications that need no Graph: the settings that switch them on and say where Graph
posts, the burst mark in PairState (one request per burst, shared by instances), the subscription rows (clientState
kept as a hash, counts that concurrent requests do not lose), the URL path tokens (checked without storage), the
refused-request counter (exact under concurrency, one log line a minute on a simulated clock), and what the route
does with paths and bodies that are not Graph's. Storage is Azurite."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from dataclasses import replace
from datetime import timedelta

import pytest

from sync.api.notifications import receive
from sync.app.notifications.intake import RefusedPaths
from sync.app.wiring.runtime import Runtime
from sync.core.notification_path import checked_address_id, key_id, new_address_id, notification_address, path_token
from sync.errors import ConfigError
from sync.settings import Tuning, notification_url, notifications_on
from sync.state.entities import now_utc
from sync.state.stores import Stores
from tests.support.memory_source import MemorySource
from tests.support.memory_target import MemoryTarget


def test_notifications_are_on_in_azure_and_off_locally_unless_set() -> None:
    azure = {"WEBSITE_HOSTNAME": "ctcs-abc.azurewebsites.net", "WEBSITE_INSTANCE_ID": "0123abcd"}
    assert notifications_on(azure) and notification_url(azure) == "https://ctcs-abc.azurewebsites.net/api/notifications"
    assert not notifications_on({}) and notification_url({}) == ""
    core_tools = {"WEBSITE_HOSTNAME": "localhost:7071"}  # what `func start` sets: a laptop, not Azure
    assert not notifications_on(core_tools)
    assert notifications_on({"WEBSITE_HOSTNAME": "ctcs-abc.azurewebsites.net"}), "a public host name is Azure"
    assert not notifications_on({**azure, "CTCS_CHANGE_NOTIFICATIONS": "off"})
    local = {"CTCS_CHANGE_NOTIFICATIONS": "on", "CTCS_NOTIFICATION_URL": "https://tunnel.example/api/notifications"}
    tuning = Tuning.from_settings(local)
    assert tuning.change_notifications and tuning.notification_url == local["CTCS_NOTIFICATION_URL"]
    with pytest.raises(ConfigError, match="https"):
        notification_url({"CTCS_NOTIFICATION_URL": "http://plain.example/api/notifications"})
    with pytest.raises(ConfigError, match="auto, on or off"):
        notifications_on({"CTCS_CHANGE_NOTIFICATIONS": "sometimes"})


def test_a_burst_arms_one_request_on_any_number_of_instances(stores: Stores) -> None:
    armed: list[bool] = []
    barrier = threading.Barrier(8)

    def notification() -> None:
        barrier.wait()
        armed.append(stores.pair_state.arm_notification_run("pair-a", pending_seconds=60))

    threads = [threading.Thread(target=notification) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert armed.count(True) == 1
    assert not stores.pair_state.arm_notification_run("pair-a", pending_seconds=60)
    assert stores.pair_state.arm_notification_run("pair-b", pending_seconds=60), "pairs are armed on their own"
    stores.pair_state.disarm_notification_run("pair-a")
    assert stores.pair_state.arm_notification_run("pair-a", pending_seconds=60), "the run started: arm again"
    later = now_utc() + timedelta(seconds=61)
    assert stores.pair_state.arm_notification_run("pair-a", pending_seconds=60, now=later), "a lost request lapses"


def test_subscription_rows_keep_a_hash_and_count_every_notification(stores: Stores) -> None:
    store = stores.subscriptions
    store.created("pair-a", "users", "sub-1", client_state="the-secret-state", expires_at="2030-01-01T00:00:00+00:00")
    [row] = store.of_pair("pair-a")
    assert row.matches("the-secret-state") and not row.matches("the-secret-statE") and not row.matches(None)
    assert "the-secret-state" not in json.dumps([dict(e) for e in store.table.list_entities()], default=str)
    threads = [threading.Thread(target=store.count, args=(row,), kwargs={"accepted": 2, "rejected": 1})
               for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    store.count(None, rejected=4)
    [row] = store.of_pair("pair-a")
    assert (row.accepted, row.rejected, store.unmatched()) == (12, 6, 4) and row.last_notification_at
    assert store.by_subscription_id() == {"sub-1": row}


def _route(stores: Stores, key: str = "route-test-key") -> Runtime:
    return Runtime(stores, lambda pair: MemorySource(), lambda pair: MemoryTarget(),
                   tuning=replace(Tuning(), notification_key=key))


def test_counts_stay_exact_when_many_requests_count_at_once(stores: Stores) -> None:
    """8 requests at once, 25 times each, on one subscription's row and on `~unmatched`: not one count lost."""
    store = stores.subscriptions
    store.created("pair-a", "users", "sub-1", client_state="s", expires_at="2030-01-01T00:00:00+00:00")
    [row] = store.of_pair("pair-a")
    barrier = threading.Barrier(8)

    def burst() -> None:
        barrier.wait()
        for _ in range(25):
            store.count(row, rejected=1)
            store.count(None, rejected=1)

    threads = [threading.Thread(target=burst) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    [row] = store.of_pair("pair-a")
    assert (row.rejected, store.unmatched()) == (200, 200)


def test_path_tokens_are_checked_by_arithmetic_alone() -> None:
    address_id = new_address_id()
    token = path_token("key-1", "pair-a", address_id)
    assert checked_address_id("key-1", "pair-a", token) == address_id
    assert notification_address("https://x.example/api/notifications/", "key-1", "pair-a", address_id) == (
        f"https://x.example/api/notifications/pair-a/{token}")
    for key, pair, presented in (("key-2", "pair-a", token), ("key-1", "pair-b", token), ("", "pair-a", token),
                                 ("key-1", "pair-a", token[:-1] + ("A" if token[-1] != "A" else "B")),
                                 ("key-1", "pair-a", "x" * 5000), ("key-1", "pair-a", "\ud800." + token[17:])):
        assert checked_address_id(key, pair, presented) is None
    assert key_id("key-1") != key_id("key-2") and "key-1" not in key_id("key-1")


def test_refused_paths_are_counted_exactly_and_logged_once_a_minute(caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    refused = RefusedPaths(clock=lambda: now[0])
    barrier = threading.Barrier(8)

    def flood() -> None:
        barrier.wait()
        for _ in range(250):
            refused.refuse()

    with caplog.at_level(logging.WARNING, logger="ctcs.notifications"):
        threads = [threading.Thread(target=flood) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert refused.total == 2000 and len(caplog.records) == 1
        now[0] = 59.0
        refused.refuse()
        assert len(caplog.records) == 1
        now[0] = 61.0
        refused.refuse()
    assert [r.refused for r in caplog.records] == [1, 1999 + 2]  # type: ignore[attr-defined]


def test_the_route_refuses_a_wrong_path_before_storage_and_what_is_not_graphs_after(stores: Stores) -> None:
    rt = _route(stores)
    address_id = new_address_id()
    token = path_token("route-test-key", "pair-a", address_id)
    reads: list[int] = []

    def body(content: bytes) -> Callable[[], bytes]:
        def read() -> bytes:
            reads.append(1)
            return content
        return read

    wrong = receive(rt, ("pair-a", "guess"), {}, {}, body(b"{}"))
    assert (wrong.status, reads) == (404, [])
    handshake = receive(rt, ("pair-a", token), {"validationToken": "Validation: token & more"}, {}, body(b""))
    assert handshake.status == 404, "no subscription of this pair is being created"
    stores.subscriptions.begin_creating("pair-a", address_id, seconds=60)
    handshake = receive(rt, ("pair-a", token), {"validationToken": "Validation: token & more"}, {}, body(b""))
    assert (handshake.status, handshake.text, handshake.mimetype) == (200, "Validation: token & more", "text/plain")
    stores.subscriptions.end_creating("pair-a", address_id)
    assert receive(rt, ("pair-a", token), {"validationToken": "v"}, {}, body(b"")).status == 404
    assert receive(rt, ("pair-a", token), {}, {"Content-Length": "2000000"}, body(b"")).status == 413 and reads == []
    for content in (b"", b"[1, 2]", b'{"value": 3}', b"{" * 5000, b"x" * 2_000_000, b'{"value": ["\\ud800"]}'):
        assert receive(rt, ("pair-a", token), {}, {}, body(content)).status == 400
    forged = json.dumps({"value": [{"subscriptionId": "nobody", "clientState": "x", "changeType": "updated"}]})
    assert receive(rt, ("pair-a", token), {}, {}, body(forged.encode())).status == 202
    assert stores.subscriptions.unmatched() == 1 and stores.pair_runs.approximate_count() == 0


def test_a_notification_key_not_stored_yet_turns_only_subscriptions_off() -> None:
    unresolved = {"CTCS_NOTIFICATION_KEY": "@Microsoft.KeyVault(VaultName=kv;SecretName=ctcs-notification-key)"}
    assert Tuning.from_settings(unresolved).notification_key == ""
    tuning = Tuning.from_settings({"CTCS_NOTIFICATION_KEY": "the-key-value"})
    assert tuning.notification_key == "the-key-value" and "the-key-value" not in repr(tuning)
