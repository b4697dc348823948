"""Planning benchmark: a full round of N generated users against N existing state rows.

Prints three numbers: pure planning throughput (scope + map + diff, users/s, one core), the time to load the
state rows from Azurite, and peak memory. Run it with `python3 dev.py bench` (it uses the Azurite listening on
127.0.0.1:10000-10002, or starts one for the measurement and stops it after).

    python benchmarks/plan_benchmark.py [--users 100000] [--skip-storage]
"""

from __future__ import annotations

import argparse
import gc
import random
import resource
import time
import tracemalloc
import uuid

from azure.data.tables import TableServiceClient

from sim import azurite
from sim.generator import generate_users
from sync.contract.summaries import StateSummary
from sync.core.mapping import ContactMapper
from sync.core.plan import Baseline, PlanOptions, plan_pair
from sync.core.scope import decide_scope
from sync.core.source import DeltaRound
from sync.state.contacts import ContactStateStore
from sync.state.entities import int64
from tests.support.factories import make_pair

PAIR = make_pair("bench-pair")


def build_inputs(count: int) -> tuple[DeltaRound, dict[str, StateSummary]]:
    """Users as Graph returns them, and state rows: 90% unchanged, 5% changed, 5% of the users new,
    and as many rows again whose user is gone (the sweep's work)."""
    rng = random.Random(7)
    users = generate_users(count, seed=7, domain="contoso.com")
    round_ = DeltaRound(full=True)
    round_.add_page(users)
    mapper = ContactMapper(PAIR)
    state: dict[str, StateSummary] = {}
    for user in users:
        decision = decide_scope(PAIR, user)
        roll = rng.random()
        if not decision.in_scope or roll < 0.05:
            continue
        digest = mapper.map(user, decision.address).hash if roll < 0.95 else "changed"
        state[str(user["id"])] = StateSummary("ok", digest, 1, str(uuid.uuid4()))
    while len(state) < count:
        state[str(uuid.uuid4())] = StateSummary("ok", "gone", 1, str(uuid.uuid4()))
    return round_, state


def bench_planning(round_: DeltaRound, state: dict[str, StateSummary]) -> tuple[float, int, dict[str, int]]:
    """Best of three timed runs, then one more under tracemalloc (which slows it) for the memory peak."""
    best = float("inf")
    for _ in range(3):
        gc.collect()
        started = time.perf_counter()
        plan = plan_pair(PAIR, round_, Baseline(state), PlanOptions(1, "bench"))
        best = min(best, time.perf_counter() - started)
    gc.collect()
    tracemalloc.start()
    plan_pair(PAIR, round_, Baseline(state), PlanOptions(1, "bench"))
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return len(round_.users) / best, peak, plan.counts()


def bench_state_load(count: int) -> tuple[float, int]:
    table_name = f"benchstate{uuid.uuid4().hex[:8]}"
    service = TableServiceClient.from_connection_string("UseDevelopmentStorage=true")
    table = service.create_table(table_name)
    try:
        started = time.perf_counter()
        batch: list[tuple[str, dict[str, object]]] = []
        for n in range(count):
            batch.append(("upsert", {
                "PartitionKey": PAIR.id, "RowKey": str(uuid.UUID(int=n)), "status": "ok",
                "hash": f"{n:032x}", "version": int64(1_700_000_000_000_000 + n), "guid": str(uuid.UUID(int=n + 1)),
                "applied": '{"DisplayName":"User"}', "last_op": "create:created",
            }))
            if len(batch) == 100:
                table.submit_transaction(batch)  # type: ignore[arg-type]
                batch = []
        if batch:
            table.submit_transaction(batch)  # type: ignore[arg-type]
        print(f"  (wrote {count:,} rows in {time.perf_counter() - started:.1f} s)", flush=True)
        started = time.perf_counter()
        loaded = ContactStateStore(table).summaries(PAIR.id)
        return time.perf_counter() - started, len(loaded)
    finally:
        service.delete_table(table_name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--skip-storage", action="store_true", help="skip the Azurite load measurement")
    args = parser.parse_args()

    print(f"generating {args.users:,} users and state rows ...", flush=True)
    round_, state = build_inputs(args.users)
    users_per_second, planning_peak, counts = bench_planning(round_, state)
    print(f"  plan: {counts}")
    load_seconds, loaded = 0.0, 0
    if not args.skip_storage:
        emulator = azurite.start()
        try:
            load_seconds, loaded = bench_state_load(args.users)
        finally:
            azurite.stop(emulator)
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux

    print()
    print("measure                                      value")
    print("-------------------------------------------  ---------------")
    print(f"planning throughput (scope+map+diff, 1 core)  {users_per_second:>10,.0f} users/s")
    if not args.skip_storage:
        print(f"load {loaded:,} state rows from Azurite         {load_seconds:>10.1f} s")
    print(f"memory allocated while planning (peak)        {planning_peak / 2**20:>10.0f} MiB")
    print(f"process peak RSS (inputs + plan + SDKs)       {peak_rss:>10.0f} MiB")


if __name__ == "__main__":
    main()
