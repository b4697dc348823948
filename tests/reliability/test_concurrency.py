"""Overlap: a timer run and a manual resync of one pair plan once (the pair's lease); two worker instances applying
ops of the same user at the same moment leave one contact in the state of the newest op (the user's row claim)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable

from sim.host import HttpReply
from sync.app.wiring.runtime import Runtime
from sync.app.worker.delivery import deliver

from .conftest import SyncPair, exchange_counts


def test_timer_and_manual_resync_at_the_same_moment_make_one_plan(sync: SyncPair, record: Callable[..., None]) -> None:
    users = sync.add_users(8)
    # Whoever reads Graph first is held there a second (Retry-After: 1), with the lease in hand.
    sync.cloud.faults.inject("graph", "throttle", operation="delta", times=1, retry_after="1")
    barrier = threading.Barrier(2)
    replies: list[HttpReply] = []

    def timer() -> None:
        barrier.wait()
        sync.host.fire_timer()

    def resync() -> None:
        barrier.wait()
        replies.append(sync.host.call_http("POST", f"/api/pairs/{sync.pair.id}/resync"))

    threads = [threading.Thread(target=timer), threading.Thread(target=resync)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    runs = sync.rt.stores.runs.recent(sync.pair.id)
    assert [run.outcome for run in runs] == ["planned"], "one run planned; the other found the lease held"
    [reply] = replies
    assert (reply.status, reply.json["outcome"]) in ((202, "planned"), (409, "lease_held"))
    queued = sync.rt.stores.ops.approximate_count()
    assert queued == len(users), "one plan's ops, not two"
    report = sync.drain()
    assert exchange_counts(sync.cloud)["New-MailContact"] == len(users)
    sync.assert_in_step()
    record(plans=1, http_status=reply.status, queued=queued, created=len(sync.ours()), deliveries=report.completed)


def test_two_worker_instances_on_the_same_user_at_once_leave_one_contact(
    sync: SyncPair, record: Callable[..., None]
) -> None:
    [user] = sync.add_users(1)
    sync.plan()
    v1 = sync.take_queued()
    sync.source.directory.update_user(user, jobTitle="Director", department="Legal")
    sync.plan()
    v2 = sync.take_queued()
    assert [json.loads(b)["kind"] for b in v1 + v2] == ["create", "create"], "neither was applied: both create"
    # Whoever looks the address up first is held there a second (Retry-After: 1), with the user's row claimed.
    sync.cloud.faults.inject("exchange", "throttle", operation="Get-Recipient", times=1, retry_after="1")
    sync.cloud.reset_counts()
    instances = [Runtime.from_settings() for _ in range(3)]  # three worker processes, each with its own clients
    deliveries = [(instances[0], v1[0]), (instances[1], v2[0]), (instances[2], v2[0])]
    barrier = threading.Barrier(len(deliveries))
    attempts: list[str] = []
    lock = threading.Lock()

    def worker(rt: Runtime, body: str) -> None:
        barrier.wait()
        for _ in range(10):
            outcome = deliver(rt, body, dequeue_count=1)  # RowBusy is deferred: it never spends a delivery
            with lock:
                attempts.append(outcome)
            if outcome != "deferred":
                return
            time.sleep(0.5)  # the deferral's delay (a few seconds), shortened: the copy comes back at delivery 1

    threads = [threading.Thread(target=worker, args=pair) for pair in deliveries]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert "deferred" in attempts, f"the instances did overlap on the user's row: {attempts}"
    assert len([a for a in attempts if a != "deferred"]) == 3, attempts
    [contact] = sync.contacts_of(user)
    assert (contact["Title"], contact["Department"]) == ("Director", "Legal"), "the newest op won"
    assert sync.rows()[user].version == json.loads(v2[0])["version"]
    assert exchange_counts(sync.cloud)["New-MailContact"] == 1
    assert len(sync.target.exchange.contacts()) == 1
    sync.assert_in_step()
    record(instances=3, attempts=attempts, exchange=exchange_counts(sync.cloud), contacts=1)
