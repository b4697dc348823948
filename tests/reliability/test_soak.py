"""Soak: twenty incremental runs over a changing population of generated users (hostile values included) with
seeded random faults on both edges and a lost delta token half way; afterwards the target equals the expected
contacts exactly, attribute by attribute, and not one of the 100 recipients ctcs did not create was touched."""

from __future__ import annotations

import os
import random
import time
from collections import Counter
from collections.abc import Callable

import pytest

from sim.generator import generate_users, mutate
from sync.app.admin.drain import drain
from sync.app.planner.run import run_pair
from sync.contract.vocabulary import RunTrigger

from .conftest import SyncPair

# The size the scenario is specified for: 5,000 users take about 5 minutes on 2 cores (first load 2.5 minutes).
# CTCS_SOAK_USERS=800 makes a quick local pass.
SOAK_USERS = int(os.environ.get("CTCS_SOAK_USERS", "5000"))
RUNS = 20
CHANGES_PER_RUN = 40


@pytest.mark.soak
@pytest.mark.timeout(1800)
def test_twenty_incremental_runs_with_random_faults_end_exactly_in_step(
    make_sync: Callable[..., SyncPair], record: Callable[..., None]
) -> None:
    rng = random.Random(2026)  # not the generator's seed: its hires would repeat the first users' ids
    sync = make_sync(deletion={"max_deletes": 200, "max_delete_percent": 10})
    directory, exchange = sync.source.directory, sync.target.exchange
    for user in generate_users(SOAK_USERS, seed=13, domain=sync.source.domain):
        directory.add_user(user)
    users = directory.users
    for n in range(100):  # 10 hold a source user's address, 20 a source user's display name, 70 are strangers
        user = users[n * 37 % len(users)]
        if n < 10 and user.get("mail"):
            exchange.add_recipient("MailContact", f"legacy-{n}", user["mail"], DisplayName=user["displayName"])
        elif n < 30:
            exchange.add_recipient("MailContact", f"namesake-{n}", f"namesake{n}@partner.example",
                                   DisplayName=user["displayName"])
        else:
            exchange.add_recipient("MailContact", f"partner-{n}", f"partner{n}@partner.example", Company="Partner")
    before = sync.unowned()
    started = time.monotonic()

    # The first full load as `python -m sync run` does it: plan, then apply in-process with 8 workers.
    first = run_pair(sync.rt, sync.pair.id, trigger=RunTrigger.CLI)
    assert first.outcome == "planned"
    loaded = drain(sync.rt, concurrency=8)
    load_seconds = time.monotonic() - started
    assert loaded.poisoned == 0

    faults = sync.cloud.faults
    faults.seed(13)
    totals: Counter[str] = Counter()
    run_seconds = []
    for run in range(1, RUNS + 1):
        done = mutate(directory, rng, CHANGES_PER_RUN)
        totals.update(what for what, _ in done)
        faults.clear()
        faults.inject("exchange", "throttle", probability=0.10, retry_after=rng.choice(["0", "1"]))
        faults.inject("exchange", "unavailable", probability=0.03, retry_after="0")
        faults.inject("exchange", "concurrency_limit", probability=0.02, retry_after="0")
        if rng.random() < 0.3:
            faults.inject("graph", "throttle", times=1, retry_after="0")
        if run == RUNS // 2:
            directory.expire_tokens()  # the next round is full, and sweeps what it does not see
        tick = time.monotonic()
        report = sync.sync(deadline_seconds=300)
        run_seconds.append(time.monotonic() - tick)
        totals["poisoned"] += report.poisoned
        totals["deliveries"] += report.completed
        outcome = sync.last_run()
        assert outcome.outcome in ("planned", "no_changes"), (run, outcome.outcome, outcome.error)
        totals["full_rounds"] += outcome.full
    faults.clear()
    seconds = time.monotonic() - started

    assert totals["poisoned"] == 0 and sync.rt.stores.poison.approximate_count() == 0
    conflicts = {row.source_id for row in sync.rows().values() if row.status == "conflict"}
    compared = sync.assert_in_step(absent=conflicts)
    sync.assert_untouched(before)
    assert totals["full_rounds"] == 1
    record(users=SOAK_USERS, runs=RUNS, changes=sum(v for k, v in totals.items() if k in (
        "rename", "move", "title", "delete", "restore", "hire", "disable", "purge")), first_load_ops=loaded.outcomes,
        first_load_seconds=round(load_seconds, 1), runs_seconds_max=round(max(run_seconds), 1),
        runs_seconds_total=round(sum(run_seconds), 1), deliveries=totals["deliveries"],
        faults=sync.cloud.counts["faults"], contacts_compared=compared, conflicts=len(conflicts), unowned_touched=0,
        exchange_requests=sync.cloud.counts["exchange"], seconds=round(seconds, 1))
