"""The pieces of change notifications that need no Graph: the settings that switch them on and say where Graph
posts, the burst mark in PairState (one request per burst, shared by instances), the subscription rows (clientState
kept as a hash, counts that concurrent requests do not lose), and what the route does with bodies that are not
Graph's. Storage is Azurite."""

from __future__ import annotations

import json
import threading
from datetime import timedelta

import pytest

from sync.api.notifications import receive
from sync.app.wiring.runtime import Runtime
from sync.errors import ConfigError
from sync.settings import Tuning, notification_url, notifications_on
from sync.state.entities import now_utc
from sync.state.stores import Stores
from tests.support.memory_source import MemorySource
from tests.support.memory_target import MemoryTarget


def test_notifications_are_on_in_azure_and_off_locally_unless_set() -> None:
    azure = {"WEBSITE_HOSTNAME": "ctcs-abc.azurewebsites.net"}
    assert notifications_on(azure) and notification_url(azure) == "https://ctcs-abc.azurewebsites.net/api/notifications"
    assert not notifications_on({}) and notification_url({}) == ""
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


def test_the_route_answers_the_handshake_and_refuses_what_is_not_graphs(stores: Stores) -> None:
    rt = Runtime(stores, lambda pair: MemorySource(), lambda pair: MemoryTarget())
    handshake = receive(rt, {"validationToken": "Validation: token & more"}, b"")
    assert (handshake.status, handshake.text, handshake.mimetype) == (200, "Validation: token & more", "text/plain")
    for body in (b"", b"[1, 2]", b'{"value": 3}', b"{" * 5000, b"x" * 2_000_000):
        assert receive(rt, {}, body).status == 400
    forged = json.dumps({"value": [{"subscriptionId": "nobody", "clientState": "x", "changeType": "updated"}]})
    assert receive(rt, {}, forged.encode()).status == 202
    assert stores.subscriptions.unmatched() == 1 and stores.pair_runs.approximate_count() == 0
