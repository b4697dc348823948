"""What a run and `status` report must be true: per pair, with causes, `applied` when applied, the drain's deferrals
following the same policy as the Functions worker, and a full resync never lost to a run that holds the lease."""

from __future__ import annotations

import contextlib
import json
import re
import time

import pytest
from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError

from sync.app.admin.drain import drain
from sync.app.planner.run import run_pair
from sync.app.wiring.runtime import Runtime
from sync.cli import main as cli
from sync.contract.vocabulary import RunOutcome, RunTrigger
from sync.errors import TargetThrottled, TargetTransient
from sync.state.stores import Stores
from tests.support.factories import make_pair, make_user
from tests.support.memory_source import MemorySource
from tests.support.memory_target import MemoryTarget

HEALTHY = make_pair(id="healthy-pair")
BROKEN = make_pair(id="broken-pair", source={"tenant_id": "22222222-2222-2222-2222-222222222222"})


class Tenants:
    def __init__(self) -> None:
        self.sources = {HEALTHY.id: MemorySource(), BROKEN.id: MemorySource()}
        self.targets = {HEALTHY.id: MemoryTarget(), BROKEN.id: MemoryTarget()}


@pytest.fixture
def tenants() -> Tenants:
    return Tenants()


@pytest.fixture
def rt(stores: Stores, tenants: Tenants) -> Runtime:
    runtime = Runtime(stores, lambda pair: tenants.sources[pair.id], lambda pair: tenants.targets[pair.id])
    for pair, users in ((HEALTHY, range(3)), (BROKEN, range(10, 12))):
        stores.pairs.add(pair)
        for n in users:
            tenants.sources[pair.id].add(make_user(n))
    return runtime


def status_json(rt: Runtime, capsys: pytest.CaptureFixture[str], *args: str) -> dict[str, object]:
    capsys.readouterr()
    assert cli.main(["status", "--json", *args], runtime=lambda: rt) == cli.EXIT_OK
    report: dict[str, object] = json.loads(capsys.readouterr().out)
    return report


def test_a_cli_run_applies_and_reports_only_its_own_pair(
    rt: Runtime, tenants: Tenants, capsys: pytest.CaptureFixture[str]
) -> None:
    # The broken pair's ops are on the shared queue first, and would fail every delivery.
    run_pair(rt, BROKEN.id, trigger=RunTrigger.TIMER)
    tenants.targets[BROKEN.id].fail_next(*[TargetTransient("503 for ever")] * 50)

    code = cli.main(["run", "--pair", HEALTHY.id], runtime=lambda: rt)

    out = capsys.readouterr().out
    assert code == cli.EXIT_OK, out
    assert len(tenants.targets[HEALTHY.id].contacts()) == 3
    assert tenants.targets[BROKEN.id].calls == {}, "the other pair's ops were not applied by this run"
    assert "poisoned" not in out and "created" in out
    assert rt.stores.ops.approximate_count() == 2, "the other pair's two creates are still queued"
    report = status_json(rt, capsys)
    healthy, broken = sorted(report["pairs"], key=lambda s: s["pair"] != HEALTHY.id)  # type: ignore[arg-type]
    assert healthy["last_run"]["outcome"] == "applied", "planned and applied in-process"
    assert healthy["recent_runs"][0]["counts"]["applied_created"] == 3
    assert healthy["contacts"] == {"ok": 3} and healthy["waiting"] == {"creates_queued": 0, "poisoned": 0}
    assert broken["contacts"] == {"queued": 2} and broken["waiting"]["creates_queued"] == 2
    assert report["queues"] == {"ops": 2, "poison": 0, "poison_poison": 0, "failed": 0, "parked": 0, "pair_runs": 0,
                                "pair_runs_poison": 0, "pair_runs_poison_poison": 0}, "queue depths once, for all pairs"


def test_poisoned_ops_count_under_their_own_pair_with_their_cause(
    rt: Runtime, tenants: Tenants, capsys: pytest.CaptureFixture[str]
) -> None:
    run_pair(rt, HEALTHY.id, trigger=RunTrigger.CLI)
    run_pair(rt, BROKEN.id, trigger=RunTrigger.CLI)
    tenants.targets[BROKEN.id].fail_next(*[TargetTransient("Exchange answered 503 Service Unavailable")] * 50)
    drained = drain(rt, backoff=lambda count: 0)
    assert drained.poisoned == 2

    report = status_json(rt, capsys)
    by_pair = {s["pair"]: s for s in report["pairs"]}  # type: ignore[attr-defined]
    assert by_pair[HEALTHY.id]["waiting"]["poisoned"] == 0 and by_pair[HEALTHY.id]["problems"] == []
    broken = by_pair[BROKEN.id]
    assert broken["waiting"]["poisoned"] == 2 and broken["contacts"] == {"failed": 2}
    assert all("503 Service Unavailable" in problem["error"] for problem in broken["problems"]), broken["problems"]
    assert report["queues"]["poison"] == 2  # type: ignore[index]

    capsys.readouterr()
    cli.main(["status"], runtime=lambda: rt)
    table = capsys.readouterr().out
    assert re.search(rf"^{rt.stores.poison.name} +2  ops that failed every delivery$", table, re.M), table


def test_a_throttled_op_in_the_drain_spends_no_delivery_and_waits_at_least_a_second(
    rt: Runtime, tenants: Tenants
) -> None:
    """Four 429s without Retry-After... then one 503: had the 429s spent deliveries, the 503 would arrive on the
    fifth delivery and poison the op. They do not: the 503 is an ordinary first retry and the op is applied."""
    rt.stores.pairs.remove(BROKEN.id)
    tenants.sources[HEALTHY.id].remove(str(make_user(1)["id"]))
    tenants.sources[HEALTHY.id].remove(str(make_user(2)["id"]))
    run_pair(rt, HEALTHY.id, trigger=RunTrigger.CLI)
    target = tenants.targets[HEALTHY.id]
    target.fail_next(*[TargetThrottled("429", retry_after=0.0)] * 4, TargetTransient("503"))
    started = time.monotonic()
    drained = drain(rt, concurrency=1, backoff=lambda count: 0)
    assert drained.poisoned == 0 and drained.outcomes == {"created": 1}
    assert drained.deferred == 5
    assert time.monotonic() - started >= 4, "each deferral waited at least the one-second floor"


def test_a_full_resync_asked_for_while_another_run_plans_is_not_lost(rt: Runtime) -> None:
    rt.stores.pairs.remove(BROKEN.id)
    assert run_pair(rt, HEALTHY.id, trigger=RunTrigger.CLI).run.full
    pair_state = rt.stores.pair_state
    seen = pair_state.get(HEALTHY.id).full_requested_at  # what a run reads when it starts planning
    pair_state.request_full_round(HEALTHY.id)  # POST resync?full=true while that run holds the lease (409)
    pair_state.record_run(HEALTHY.id, run_id="r1", outcome=RunOutcome.PLANNED, delta_link="mem:3",
                          full_request_seen=seen)  # the holding run finishes
    assert pair_state.get(HEALTHY.id).force_full, "the request made during the run survives it"
    assert run_pair(rt, HEALTHY.id, trigger=RunTrigger.TIMER).run.full
    assert not pair_state.get(HEALTHY.id).force_full, "served once"
    assert not run_pair(rt, HEALTHY.id, trigger=RunTrigger.TIMER).run.full


def test_status_counts_every_queue_the_poison_queues_and_theirs_included(
    rt: Runtime, capsys: pytest.CaptureFixture[str]
) -> None:
    """Every queue has its row in the table and its count in --json, the ones no trigger reads included (the host
    makes a -poison-poison queue on first use): nothing can pile up where status does not look."""
    stores = rt.stores
    run_pair(rt, HEALTHY.id, trigger=RunTrigger.CLI)  # 3 ops
    counts = {"poison": 1, "poison_poison": 2, "failed": 3, "parked": 4, "pair_runs": 5, "pair_runs_poison": 6,
              "pair_runs_poison_poison": 7}
    for role, n in counts.items():
        client = getattr(stores, role).client
        with contextlib.suppress(ResourceExistsError):
            client.create_queue()
        for i in range(n):
            client.send_message(f"message {i}")
    report = status_json(rt, capsys)
    assert report["queues"] == {"ops": 3, **counts}
    names = report["queue_names"]
    assert names["poison_poison"] == stores.ops.name + "-poison-poison"  # type: ignore[index]
    assert names["pair_runs_poison_poison"] == stores.pair_runs.name + "-poison-poison"  # type: ignore[index]

    assert cli.main(["status"], runtime=lambda: rt) == cli.EXIT_OK
    table = capsys.readouterr().out
    for role, n in {"ops": 3, **counts}.items():
        assert re.search(rf"^{re.escape(names[role])} +{n}  \S", table, re.M), (role, table)  # type: ignore[index]
    longest = max(len(name) for name in names.values())  # type: ignore[attr-defined]
    allowance = longest - len("contact-ops-poison-poison")  # the test's queue names are longer than the defaults
    assert max(len(line) for line in table.splitlines() if "-poison" in line) <= 80 + allowance, table


def test_status_counts_a_poison_queue_the_host_never_made_as_empty(
    rt: Runtime, capsys: pytest.CaptureFixture[str]
) -> None:
    for queue in (rt.stores.pair_runs_poison_poison, rt.stores.poison_poison):
        with contextlib.suppress(ResourceNotFoundError):
            queue.client.delete_queue()
    assert status_json(rt, capsys)["queues"]["pair_runs_poison_poison"] == 0  # type: ignore[index]
    assert cli.main(["replay-poison"], runtime=lambda: rt) == cli.EXIT_OK, "a missing -poison-poison holds nothing"
