"""Exchange pushing back: a storm of 429s (with Retry-After) and 503s, and replication lag (NotFound for the first
seconds after a create). Every op is applied in the end, none is poisoned, and the target matches the source."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import pytest

from .conftest import SyncPair, exchange_counts


def test_a_throttling_storm_delays_ops_but_loses_none(
    sync: SyncPair, caplog: pytest.LogCaptureFixture, record: Callable[..., None]
) -> None:
    users = sync.add_users(40)
    faults = sync.cloud.faults
    faults.seed(8)
    faults.inject("exchange", "throttle", probability=0.3, retry_after="0")
    faults.inject("exchange", "concurrency_limit", probability=0.05, retry_after="0")
    faults.inject("exchange", "unavailable", probability=0.05, retry_after="1")
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="ctcs.worker"):
        first = sync.sync(deadline_seconds=120)
        directory = sync.source.directory
        for user in users[:10]:
            directory.update_user(user, jobTitle="Director", city="Paris")
        for user in users[10:13]:
            directory.delete_user(user)
        second = sync.sync(deadline_seconds=120)
    seconds = time.monotonic() - started

    served = {kind: sync.cloud.counts[("faults", "exchange", kind)]
              for kind in ("throttle", "concurrency_limit", "unavailable")}
    requests = sync.cloud.counts["exchange"]
    assert served["throttle"] > 0.2 * requests and served["unavailable"] > 0, (served, requests)
    deferred = sum(1 for r in caplog.records if getattr(r, "outcome", None) == "deferred")
    assert first.poisoned == second.poisoned == 0 and sync.rt.stores.poison.approximate_count() == 0
    assert {row.status for row in sync.rows().values()} == {"ok", "deleted"}
    sync.assert_in_step()
    record(ops=first.completed + second.completed - deferred, exchange_requests=requests, faults=served,
           retried_in_client=sum(served.values()) - deferred, deferred_to_queue=deferred,
           failed_attempts=first.failed_attempts + second.failed_attempts, poisoned=0, seconds=round(seconds, 1))


def test_replication_lag_after_a_create_is_waited_out(sync: SyncPair, record: Callable[..., None]) -> None:
    sync.target.exchange.replication_lag = 1.5  # Set-* by Identity answers NotFound for 1.5 s after New-MailContact
    sync.add_users(6)
    started = time.monotonic()
    report = sync.sync()
    seconds = time.monotonic() - started

    calls = exchange_counts(sync.cloud)
    assert calls["New-MailContact"] == 6 and calls["Set-MailContact"] > 6, "Set-MailContact met the lag and retried"
    assert report.failed_attempts == 0 and report.poisoned == 0
    sync.assert_in_step()
    record(contacts=6, exchange=calls, not_found_retries=calls["Set-MailContact"] - 6, failed_attempts=0,
           seconds=round(seconds, 1))
