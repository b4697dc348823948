"""End-to-end planning benchmark through the Functions path: timer → pair-runs → planner invocations → ops queue,
against the simulated Graph at realistic speed (sim.graph.GraphLatency) and the shared Azurite.

    python3 dev.py bench planning-e2e [--users 100000] [--pairs 50] [--pair-users 2000] [--instances 2]
                                      [--before REV | --no-before] [--skip-kill]

Scenarios, each with fresh tables and queues; every host instance is a process of its own (sim.host.LocalHost in
benchmarks/host_process.py), so its memory is measured alone and it can be killed like a crashed host:
  1. one pair, a first full round of --users users: wall time, invocations and the longest, Graph requests, ops
     queued per second (time spent sending), rows written per second, peak memory of the planner process;
  2. the same round with the planner killed (SIGKILL) part way and a new host resuming it: ops lost (in-scope users
     with no create) and ops applied twice (a user with creates of two versions); creates sent twice as the very
     same op (same version: the worker applies it once) are counted apart;
  3. --pairs pairs of --pair-users users each: time from the timer firing to every pair planned.
With --before REV (default: the last commit before fan-out) scenarios 1 and 3 also run with that commit's code
(`git archive`), killed like the host would kill them at host.json's functionTimeout (10 minutes).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from azure.core.exceptions import ResourceNotFoundError
from azure.data.tables import TableServiceClient
from azure.storage.queue import QueueServiceClient

from sim import SimCloud, Tenant, azurite
from sim.generator import load_users
from sync.contract.ops import ContactOp, OpKind, decode_batch, decode_op, is_batch
from sync.contract.pairs import TenantPair
from sync.core.scope import decide_scope
from sync.state.stores import Stores
from tests.support.sim_pairs import sim_pair

ROOT = Path(__file__).resolve().parent.parent
HOST = ROOT / "benchmarks" / "host_process.py"
BEFORE_REV = "e6b1c2c"  # the last commit before fan-out, streamed rounds and fast enqueue
SECRET_ENV, SECRET = "CTCS_SECRET_BENCH_GRAPH", "bench-secret-value"
FUNCTION_TIMEOUT = 600.0  # host.json functionTimeout: the host kills an invocation after this
CRASH_LEASE_SECONDS = 30  # lease and message visibility of the crash scenario, so the resume need not wait 10 minutes


@dataclass
class Outcome:
    label: str
    wall: float = 0.0
    finished: bool = True
    invocations: int = 0
    longest: float = 0.0
    graph_requests: int = 0
    ops: int = 0
    expected: int = 0
    ops_per_second: float = 0.0
    rows_per_second: float = 0.0
    peak_mb: float = 0.0
    lost: int = 0
    applied_twice: int = 0
    sent_twice: int = 0
    planned_pairs: int = 0
    notes: list[str] = field(default_factory=list)


# --- the world --------------------------------------------------------------------------------------------------

def storage_settings(tag: str) -> dict[str, str]:
    suffix = f"{tag}{uuid.uuid4().hex[:6]}"
    return {
        "AzureWebJobsStorage": azurite.CONNECTION_STRING, "CTCS_PAIRS_TABLE": f"BenchPairs{suffix}",
        "CTCS_PAIR_STATE_TABLE": f"BenchPairState{suffix}", "CTCS_CONTACT_STATE_TABLE": f"BenchContacts{suffix}",
        "CTCS_RUNS_TABLE": f"BenchRuns{suffix}", "CTCS_GROUPS_TABLE": f"BenchGroups{suffix}",
        "CTCS_OPS_QUEUE": f"bench-ops-{suffix}".lower(), "CTCS_PAIR_RUNS_QUEUE": f"bench-runs-{suffix}".lower(),
    }


def new_pair(cloud: SimCloud, pair_id: str, users: int, seed: int) -> tuple[TenantPair, Tenant]:
    made = sim_pair(cloud, secret=SECRET, secret_env=SECRET_ENV, pair_id=pair_id,
                    deletion={"max_deletes": 1000, "max_delete_percent": 100})
    load_users(made.source.directory, users, seed=seed, managers=True)
    return made.pair, made.source


def in_scope(pair: TenantPair, source: Tenant) -> set[str]:
    directory = source.directory
    with directory.lock:
        return {uid for uid in directory.user_ids() if decide_scope(pair, directory.peek_user(uid) or {}).in_scope}


# --- a host process ---------------------------------------------------------------------------------------------

class HostProcess:
    """benchmarks/host_process.py in a process of its own, its peak memory watched from outside."""

    def __init__(self, code: Path, env: dict[str, str], *flags: str) -> None:
        self.report_file = Path(tempfile.mkstemp(prefix="ctcs-bench-", suffix=".json")[1])
        self.process = subprocess.Popen(
            [sys.executable, str(HOST), "--report", str(self.report_file), *flags], cwd=code,
            env={**os.environ, **env, "PYTHONPATH": str(code)}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )
        self.peak_kb = 0
        self._watch = threading.Thread(target=self._watch_memory, daemon=True)
        self._watch.start()

    def _watch_memory(self) -> None:
        status = Path(f"/proc/{self.process.pid}/status")
        while self.process.poll() is None:
            try:
                for line in status.read_text().splitlines():
                    if line.startswith("VmHWM:"):
                        self.peak_kb = max(self.peak_kb, int(line.split()[1]))
            except (OSError, ValueError):
                pass
            time.sleep(0.2)

    def wait(self, timeout: float) -> bool:
        """True when it ended by itself; else it is killed at `timeout`, as the host kills an invocation."""
        try:
            self.process.wait(timeout=timeout)
            return True
        except subprocess.TimeoutExpired:
            self.kill()
            return False

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def report(self) -> dict[str, Any]:
        try:
            return dict(json.loads(self.report_file.read_text() or "{}"))
        except (OSError, ValueError):
            return {}
        finally:
            self.report_file.unlink(missing_ok=True)

    @property
    def peak_mb(self) -> float:
        return self.peak_kb / 1024

    def errors(self) -> str:
        assert self.process.stderr is not None
        return self.process.stderr.read().decode("utf-8", "replace")[-2000:]


def host_env(storage: dict[str, str], cloud: SimCloud, **extra: str) -> dict[str, str]:
    return {**storage, **cloud.client_env(), SECRET_ENV: SECRET, **extra}


# --- reading the results ----------------------------------------------------------------------------------------

def take_ops(stores: Stores) -> list[ContactOp]:
    """Every op on the ops queue (batches unpacked); read, not deleted (the queue goes with `clean_up`)."""
    ops: list[ContactOp] = []
    while messages := stores.ops.receive(max_messages=32, visibility_timeout=3600):
        for message in messages:
            text = str(message.content)
            ops += decode_batch(text) if is_batch(text) else [decode_op(text)]
    return ops


def clean_up(storage: dict[str, str]) -> None:
    """Drop the scenario's tables and queues: the shared Azurite keeps everything in memory."""
    tables = TableServiceClient.from_connection_string(storage["AzureWebJobsStorage"])
    for name in (value for key, value in storage.items() if key.endswith("_TABLE")):
        with contextlib.suppress(ResourceNotFoundError):
            tables.delete_table(name)
    queues = QueueServiceClient.from_connection_string(storage["AzureWebJobsStorage"])
    ops = storage["CTCS_OPS_QUEUE"]
    for name in (ops, f"{ops}-poison", f"{ops}-failed", storage["CTCS_PAIR_RUNS_QUEUE"]):
        with contextlib.suppress(ResourceNotFoundError):
            queues.delete_queue(name)


def judge(outcome: Outcome, ops: list[ContactOp], expected: set[str]) -> None:
    creates = [op for op in ops if op.kind is OpKind.CREATE]
    versions: dict[str, set[int]] = {}
    for op in creates:
        versions.setdefault(op.source_id, set()).add(op.version)
    outcome.ops, outcome.expected = len({(op.source_id, op.version) for op in creates}), len(expected)
    outcome.lost = len(expected - set(versions))
    outcome.applied_twice = sum(1 for found in versions.values() if len(found) > 1)
    outcome.sent_twice = len(creates) - outcome.ops


def runs_of(stores: Stores, pair_id: str) -> tuple[int, float]:
    runs = [run for run in stores.runs.recent(pair_id, limit=200) if run.outcome != "lease_held"]
    return len(runs), max((run.seconds for run in runs), default=0.0)


def fill(outcome: Outcome, host: HostProcess, report: dict[str, Any]) -> None:
    outcome.peak_mb = max(host.peak_mb, float(report.get("peak_rss_mb", 0.0)))
    if report.get("send_seconds"):
        outcome.ops_per_second = report["ops_sent"] / report["send_seconds"]
    if report.get("row_seconds"):
        outcome.rows_per_second = report["rows_written"] / report["row_seconds"]


# --- scenarios --------------------------------------------------------------------------------------------------

LATER_KEYS = ("reconcile_hours", "objects", "groups")  # pair options newer than the 'before' code (left at defaults)


def store_pair(stores: Stores, pair: TenantPair, code: Path) -> None:
    """Store the pair as the code under test reads it: the 'before' code refuses options it did not know yet."""
    stores.pairs.add(pair)
    if code != ROOT:
        entity = stores.pairs.table.get_entity("pair", pair.id)
        definition = {k: v for k, v in json.loads(entity["definition"]).items() if k not in LATER_KEYS}
        entity["definition"] = json.dumps(definition)
        stores.pairs.table.upsert_entity(entity)


def one_big_round(cloud: SimCloud, pair: TenantPair, source: Tenant, code: Path, label: str, *,
                  limit: float | None) -> Outcome:
    storage = storage_settings("big")
    stores = Stores.from_settings(storage)
    store_pair(stores, pair, code)
    outcome = Outcome(label)
    cloud.reset_counts()
    print(f"  {label}: planning {len(source.directory.user_ids()):,} users ...", flush=True)
    started = time.monotonic()
    host = HostProcess(code, host_env(storage, cloud), "--timer", "--planner")
    outcome.finished = host.wait(limit or 3 * 3600)
    outcome.wall = time.monotonic() - started
    report = host.report()
    fill(outcome, host, report)
    if not outcome.finished:
        outcome.notes.append(f"killed at {limit:.0f} s (host.json functionTimeout), as the host would")
    outcome.graph_requests = cloud.counts[("graph", "users/delta")]
    outcome.invocations, outcome.longest = runs_of(stores, pair.id)
    if not outcome.finished:
        outcome.invocations, outcome.longest = 1, outcome.wall
    elif host.process.returncode:
        outcome.notes.append(f"host failed: {host.errors()}")
    judge(outcome, take_ops(stores), in_scope(pair, source))
    clean_up(storage)
    return outcome


def crash_and_resume(cloud: SimCloud, pair: TenantPair, source: Tenant, *, kill_at_page: int) -> Outcome:
    storage = storage_settings("crash")
    stores = Stores.from_settings(storage)
    stores.pairs.add(pair)
    env = host_env(storage, cloud, CTCS_LEASE_SECONDS=str(CRASH_LEASE_SECONDS))
    lease = ("--message-lease", str(CRASH_LEASE_SECONDS))
    outcome = Outcome("after: killed part way, resumed")
    print(f"  crash: planning, to be killed at page {kill_at_page} ...", flush=True)
    started = time.monotonic()
    first = HostProcess(ROOT, env, "--timer", "--planner", *lease)
    while first.process.poll() is None:
        round_ = stores.pair_state.get(pair.id).round
        if round_ is not None and round_.page >= kill_at_page:
            time.sleep(0.3)  # into the next page: marking, sending
            first.kill()
            break
        time.sleep(0.2)
    killed = stores.pair_state.get(pair.id)
    assert killed.round is not None, "the round ended before the kill: lower --kill-at-page"
    outcome.notes.append(f"killed at page {killed.round.page} of round {killed.round.round_id}")
    time.sleep(CRASH_LEASE_SECONDS + 2)  # the dead run's lease and its message's visibility run out
    second = HostProcess(ROOT, env, "--timer", "--planner", *lease)
    second.wait(3 * 3600)
    outcome.wall = time.monotonic() - started
    fill(outcome, second, second.report())
    outcome.peak_mb = max(outcome.peak_mb, first.peak_mb)
    status = stores.pair_state.get(pair.id)
    outcome.finished = status.round is None and bool(status.delta_link)
    outcome.invocations, outcome.longest = runs_of(stores, pair.id)
    judge(outcome, take_ops(stores), in_scope(pair, source))
    clean_up(storage)
    return outcome


def many_pairs(cloud: SimCloud, pairs: list[tuple[TenantPair, Tenant]], code: Path, label: str, *,
               instances: int, limit: float | None) -> Outcome:
    storage = storage_settings("many")
    stores = Stores.from_settings(storage)
    for pair, _ in pairs:
        store_pair(stores, pair, code)
    outcome = Outcome(label)
    cloud.reset_counts()
    print(f"  {label}: {len(pairs)} pairs ...", flush=True)
    env = host_env(storage, cloud)
    started = time.monotonic()
    timer = HostProcess(code, env, "--timer")
    timer.wait(limit or 3 * 3600)
    hosts = [HostProcess(code, env, "--planner") for _ in range(instances)] if timer.process.returncode == 0 else []
    for host in hosts:
        host.wait(max(1.0, (limit or 3 * 3600) - (time.monotonic() - started)))
    outcome.wall = time.monotonic() - started
    states = [stores.pair_state.get(pair.id) for pair, _ in pairs]
    outcome.planned_pairs = sum(1 for s in states if s.delta_link and s.round is None)
    outcome.finished = outcome.planned_pairs == len(pairs)
    if not outcome.finished and limit:
        outcome.notes.append(f"stopped at {limit:.0f} s (host.json functionTimeout)")
    outcome.peak_mb = max([timer.peak_mb, *(h.peak_mb for h in hosts)])
    if hosts:
        runs = [runs_of(stores, pair.id) for pair, _ in pairs]
        outcome.invocations, outcome.longest = sum(n for n, _ in runs), max(longest for _, longest in runs)
    else:  # before fan-out the timer planned every pair in its one invocation
        outcome.invocations, outcome.longest = 1, outcome.wall
    outcome.graph_requests = cloud.counts[("graph", "users/delta")]
    clean_up(storage)
    return outcome


# --- printing ---------------------------------------------------------------------------------------------------

def minutes(seconds: float) -> str:
    return f"{int(seconds // 60)} min {seconds % 60:04.1f} s"


def print_big(results: list[Outcome]) -> None:
    rows: list[tuple[str, Callable[[Outcome], str]]] = [
        ("finished", lambda o: "yes" if o.finished else "no (" + "; ".join(o.notes) + ")"),
        ("wall time, timer to round planned", lambda o: minutes(o.wall)),
        ("planner invocations (longest)", lambda o: f"{o.invocations} ({o.longest:.0f} s)"),
        ("Graph users/delta requests", lambda o: f"{o.graph_requests:,}"),
        ("creates queued / users in scope", lambda o: f"{o.ops:,} / {o.expected:,}"),
        ("ops queued per second (sending)", lambda o: f"{o.ops_per_second:,.0f}"),
        ("rows written per second", lambda o: f"{o.rows_per_second:,.0f}"),
        ("peak memory of the planner process", lambda o: f"{o.peak_mb:,.0f} MB"),
        ("ops lost / applied twice", lambda o: f"{o.lost:,} / {o.applied_twice:,}" if o.finished else "-"),
        ("creates sent twice as the same op", lambda o: f"{o.sent_twice:,}" if o.finished else "-"),
    ]
    width = max(len(o.label) for o in results) + 2
    print("\n" + "measure".ljust(38) + "".join(o.label.ljust(width) for o in results))
    for name, value in rows:
        print(name.ljust(38) + "".join(value(o).ljust(width) for o in results))
    for o in results:
        for note in o.notes:
            print(f"  {o.label}: {note}")


def export(rev: str) -> Path:
    target = Path(tempfile.mkdtemp(prefix="ctcs-before-"))
    archive = subprocess.run(["git", "archive", rev], cwd=ROOT, check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(target)], input=archive, check=True)
    return target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--pairs", type=int, default=50)
    parser.add_argument("--pair-users", type=int, default=2_000)
    parser.add_argument("--instances", type=int, default=2, help="host instances planning the pairs (Bicep caps 2)")
    parser.add_argument("--before", default=BEFORE_REV, help="commit whose code is 'before' (git archive)")
    parser.add_argument("--no-before", action="store_true")
    parser.add_argument("--skip-kill", action="store_true")
    parser.add_argument("--only-before", action="store_true", help="run the 'before' scenarios only")
    parser.add_argument("--kill-at-page", type=int, default=0, help="default: 40 %% of the round's pages")
    args = parser.parse_args()

    emulator = azurite.start()
    before = None if args.no_before else export(args.before)
    try:
        with SimCloud.trusted(realistic_graph=True) as cloud:
            print(f"generating {args.users:,} users (and {args.pairs} x {args.pair_users:,}) ...", flush=True)
            big, source = new_pair(cloud, "bench-big", args.users, seed=7)
            many = [new_pair(cloud, f"bench-pair-{n:02d}", args.pair_users, seed=100 + n) for n in range(args.pairs)]
            latency = cloud.graph_latency
            print(f"realistic Graph: {latency.base + 200 * latency.per_object:.2f} s per 200-user page on average, "
                  f"+{latency.round_start:.0f} s to start a full round")
            big_results = [] if args.only_before else [one_big_round(cloud, big, source, ROOT, "after", limit=None)]
            if not args.skip_kill and not args.only_before:
                pages = max(2, args.users // 200)
                kill_page = args.kill_at_page or int(pages * 0.4)
                crashed = crash_and_resume(cloud, big.model_copy(update={"id": "bench-crash"}), source,
                                           kill_at_page=kill_page)
                big_results.append(crashed)
            if before is not None:
                big_results.insert(0, one_big_round(cloud, big, source, before, f"before ({args.before})",
                                                    limit=FUNCTION_TIMEOUT))
            pair_results = [] if args.only_before else [
                many_pairs(cloud, many, ROOT, f"after ({args.instances} instances)", instances=args.instances, limit=None)]
            if before is not None:
                pair_results.insert(0, many_pairs(cloud, many, before, f"before ({args.before})", instances=0,
                                                  limit=FUNCTION_TIMEOUT))
    finally:
        azurite.stop(emulator)
    print(f"\n== one pair, a first full round of {args.users:,} users, realistic Graph ==")
    print_big(big_results)
    print(f"\n== {args.pairs} pairs x {args.pair_users:,} users: timer to every pair planned ==")
    for o in pair_results:
        print(f"{o.label.ljust(28)} {minutes(o.wall)}   {o.planned_pairs}/{args.pairs} pairs planned   "
              f"{o.invocations} invocations, longest {o.longest:.0f} s   {o.graph_requests:,} Graph requests   "
              f"peak {o.peak_mb:,.0f} MB" + (f"   ({'; '.join(o.notes)})" if o.notes else ""))


if __name__ == "__main__":
    main()
