"""Exchange benchmark: a first load of generated users through the Functions path into a realistic Exchange.

    python3 dev.py bench exchange [--users 10000] [--mode both|before|after] [--scale 0.1] [--json FILE]

What runs, as in Azure: the timer function plans the pair and queues its ops (Azurite, a private instance on free
ports so nothing else shares it); two worker instances, each a process of its own driving `function_app`'s queue
trigger as the Functions host does (`sim.host.LocalHost`), apply them into a simulated Exchange with the realistic
profile (`sim.exchange_limits.ExchangeProfile.realistic`): per-cmdlet latency (real latency x `--scale`), a cap of 10
concurrent calls per tenant answering 429, a request budget, and a creation quota. Then a second, incremental round
updates and deletes some users. Printed per mode:

    contacts per second (wall, and while creates were not paused by the quota), the ideal rate the cap and latency
    allow, their ratio, Exchange calls per create/update/delete, the share of calls answered 429, the quota pauses
    and how long they lasted, wall time, and the final check (duplicates, failed, poisoned, contacts not exact).

Modes: `before` is the worker as it was before issue 12 (one Get-Recipient per create, no pacing: each instance
calls as fast as its queue batch of 4 (+2) runs); `after` is the default configuration. Both meet the same target.
`--batch` adds the `$batch` evaluation (benchmarks/exchange_batch.py).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

from sim import azurite
from sim.cloud import SimCloud
from sim.exchange_limits import ExchangeProfile
from sim.generator import generate_users
from sim.tenant import Tenant
from sync.contract.pairs import TenantPair, parse_pair
from sync.core.mapping import ContactMapper
from sync.core.scope import decide_scope
from sync.state.stores import Stores
from tests.support.compare import contact_differences

ROOT = Path(__file__).resolve().parent.parent
PAIR_ID = "bench-exchange"
SECRET_VARIABLE = "CTCS_SECRET_BENCH"
WRITES = ("New-MailContact", "Set-MailContact", "Set-Contact")
MODES = {
    # Before issue 12: a look-up per create, no pacing, host.json's old batch of 4 (+2) per instance.
    "before": {"settings": {"CTCS_EXCHANGE_MAX_CONCURRENCY": "0", "CTCS_LOOKUP_BATCH": "1"},
               "queues": {"batchSize": 4, "newBatchThreshold": 2}},
    "after": {"settings": {}, "queues": {}},
}


def log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


@dataclasses.dataclass
class Options:
    users: int
    scale: float
    quota: int
    quota_cooldown: float
    backoff: str
    instances: int
    updates: int
    deletes: int
    seed: int
    connection: str


def host_json(tmp: Path, mode: str) -> Path:
    config = json.loads((ROOT / "host.json").read_text(encoding="utf-8"))
    config["extensions"]["queues"].update(MODES[mode]["queues"])
    path = tmp / f"host-{mode}.json"
    path.write_text(json.dumps(config), encoding="utf-8")
    return path


def settings(options: Options, mode: str) -> dict[str, str]:
    suffix = uuid.uuid4().hex[:8]
    return {
        "AzureWebJobsStorage": options.connection,
        "CTCS_PAIRS_TABLE": f"BenchPairs{suffix}", "CTCS_PAIR_STATE_TABLE": f"BenchPairState{suffix}",
        "CTCS_CONTACT_STATE_TABLE": f"BenchContacts{suffix}", "CTCS_RUNS_TABLE": f"BenchRuns{suffix}",
        "CTCS_GROUPS_TABLE": f"BenchGroups{suffix}", "CTCS_TARGETS_TABLE": f"BenchTargets{suffix}",
        "CTCS_OPS_QUEUE": f"bench-ops-{suffix}", "CTCS_QUOTA_BACKOFF_SECONDS": options.backoff,
        **MODES[mode]["settings"],
    }


@contextmanager
def environment(values: dict[str, str]) -> Iterator[None]:
    previous = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in previous.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def tenants(cloud: SimCloud, options: Options) -> tuple[TenantPair, Tenant, Tenant]:
    source = cloud.add_tenant(domain=f"src{uuid.uuid4().hex[:6]}.onmicrosoft.com", name="Contoso")
    target = cloud.add_tenant(domain=f"tgt{uuid.uuid4().hex[:6]}.onmicrosoft.com", name="Fabrikam")
    client = str(uuid.uuid4())
    secret = os.environ[SECRET_VARIABLE]
    source.register_app(client, secret=secret)
    target.register_app(client, secret=secret)
    for user in generate_users(options.users, seed=options.seed, domain="contoso.com"):
        source.directory.add_user(user)
    credential = {"type": "client_secret", "secret": f"env:{SECRET_VARIABLE}"}
    pair = parse_pair({
        "id": PAIR_ID,
        "source": {"tenant_id": source.tenant_id, "client_id": client, "name": "Contoso", "credential": credential,
                   "cloud": dict(cloud.endpoints)},
        "target": {"tenant_id": target.tenant_id, "organization": target.domain, "client_id": client,
                   "credential": credential, "cloud": dict(cloud.endpoints)},
        "deletion": {"mode": "delete", "max_deletes": 100_000, "max_delete_percent": 100},
    })
    return pair, source, target


class PauseWatch:
    """Once a second: the organisation's creation-quota pause (when ctcs paused creates), the shared pace limit,
    and how many calls Exchange is running at that moment (outside pauses)."""

    def __init__(self, stores: Stores, target: Tenant) -> None:
        self.stores, self.target = stores, target
        self.pauses: list[tuple[datetime, datetime | None]] = []
        self.limits: list[int] = []
        self.in_flight: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(1.0):
            pause, _ = self.stores.targets.quota(self.target.domain)
            if pause.active and pause.reached_at and (not self.pauses or self.pauses[-1][0] != pause.reached_at):
                self.pauses.append((pause.reached_at, None))
            elif not pause.active and self.pauses and self.pauses[-1][1] is None:
                self.pauses[-1] = (self.pauses[-1][0], pause.last_freed_at)
            pace, _ = self.stores.targets.pace(self.target.domain)
            if not pause.active and pace is not None:
                self.limits.append(pace.limit)
                self.in_flight.append(self.target.exchange.limits.in_flight)

    def averages(self) -> tuple[float, float]:
        """(the pace limit, the calls Exchange was running) on average while creates were not paused."""
        def mean(values: list[int]) -> float:
            return round(sum(values) / len(values), 1) if values else 0.0

        return mean(self.limits), mean(self.in_flight)

    def stop(self) -> list[float]:
        self._stop.set()
        self._thread.join()
        return [round((end - start).total_seconds(), 1) for start, end in self.pauses if end is not None]


def run_workers(options: Options, host: Path, deadline: float) -> list[dict[str, Any]]:
    command = [sys.executable, str(ROOT / "benchmarks" / "exchange_worker.py"), str(host), str(deadline)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    workers = [subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True)
               for _ in range(options.instances)]
    reports = []
    for worker in workers:
        out, _ = worker.communicate(timeout=deadline + 120)
        if worker.returncode != 0:
            raise RuntimeError(f"a worker instance failed with exit code {worker.returncode}")
        reports.append(json.loads(out.strip().splitlines()[-1]))
    return reports


def exchange_counts(cloud: SimCloud) -> dict[str, int]:
    """Calls by cmdlet that Exchange answered (429 refusals left out), and the refusals."""
    snapshot = cloud.counts.snapshot()
    calls = {str(k[1]): n for k, n in snapshot.items() if isinstance(k, tuple) and len(k) == 2 and k[0] == "exchange"}
    refused = {str(k[2]): n for k, n in snapshot.items() if isinstance(k, tuple) and len(k) == 3 and k[0] == "limits"}
    answered = {cmdlet: n - refused.get(cmdlet, 0) for cmdlet, n in calls.items()}
    return {**answered, "_all": sum(calls.values()), "_refused": sum(refused.values())}


def first_load(cloud: SimCloud, options: Options, mode: str, host: Path, stores: Stores, target: Tenant,
               report: dict[str, Any]) -> None:
    import function_app
    from sim.host import LocalHost

    cloud.reset_counts()
    watch = PauseWatch(stores, target)
    started = time.monotonic()
    timer = threading.Thread(target=LocalHost(host_json=host).fire_timer)
    timer.start()
    while stores.ops.approximate_count() == 0 and timer.is_alive():
        time.sleep(0.2)
    log(f"{mode}: timer is queueing the first load; {options.instances} worker instances start")
    progress = threading.Event()

    def show() -> None:
        while not progress.wait(15):
            done = cloud.counts[("exchange", "New-MailContact")]
            log(f"{mode}: {time.monotonic() - started:.0f} s, New-MailContact calls so far {done}")

    threading.Thread(target=show, daemon=True).start()
    workers = run_workers(options, host, deadline=3600)
    timer.join()
    seconds = time.monotonic() - started
    progress.set()
    pauses = watch.stop()
    mean_limit, mean_in_flight = watch.averages()
    counts = exchange_counts(cloud)
    created = sum(1 for row in stores.contacts.rows(PAIR_ID) if row.status == "ok")
    latency = target.exchange.limits.profile.latency
    cap = target.exchange.limits.profile.concurrency_cap
    ideal = cap / sum(latency[cmdlet] for cmdlet in WRITES)
    active = max(1e-9, seconds - sum(pauses))
    report.update({
        "users": options.users, "contacts_created": created, "wall_seconds": round(seconds, 1),
        "contacts_per_second": round(created / seconds, 2),
        "contacts_per_second_unpaused": round(created / active, 2),
        "ideal_per_second": round(ideal, 2), "ratio_to_ideal": round(created / active / ideal, 3),
        "calls_per_create": round(sum(counts.get(c, 0) for c in ("Get-Recipient", *WRITES)) / max(1, created), 3),
        "lookups_per_create": round(counts.get("Get-Recipient", 0) / max(1, created), 3),
        "share_429": round(counts["_refused"] / max(1, counts["_all"]), 4),
        "calls_answered": counts["_all"] - counts["_refused"], "calls_refused_429": counts["_refused"],
        "quota_pauses_seconds": pauses, "quota_refusals": target.exchange.limits.stats.quota_refusals,
        "peak_in_flight": target.exchange.limits.stats.peak_in_flight,
        "mean_pace_limit": mean_limit, "mean_in_flight": mean_in_flight,
        "worker_deliveries": sum(w["invocations"].get("apply_contact_op", 0) for w in workers),
        "worker_failed_attempts": sum(w["failed_attempts"] for w in workers),
    })
    function_app._runtime.clear()


def changes(cloud: SimCloud, options: Options, host: Path, source: Tenant, stores: Stores,
            report: dict[str, Any]) -> None:
    from sim.host import LocalHost

    members = [user for user in source.directory.users if user.get("mail")]
    updated = members[: options.updates]
    deleted = members[options.updates : options.updates + options.deletes]
    for user in updated:
        source.directory.update_user(user["id"], displayName=f"{user['displayName']} (moved)", jobTitle="Moved")
    for user in deleted:
        source.directory.delete_user(user["id"])
    cloud.reset_counts()
    LocalHost(host_json=host).fire_timer()
    run = stores.runs.recent(PAIR_ID, limit=1)[0]
    run_workers(options, host, deadline=1800)
    counts = exchange_counts(cloud)
    updates, deletes = run.counts.get("update", 0), run.counts.get("delete", 0)
    report.update({
        "updates": updates, "deletes": deletes,
        "calls_per_update": round((counts.get("Set-MailContact", 0) + counts.get("Set-Contact", 0)) / max(1, updates), 3),
        "calls_per_delete": round(counts.get("Remove-MailContact", 0) / max(1, deletes), 3),
        "lookups_in_round_2": counts.get("Get-Recipient", 0),
    })


def check(pair: TenantPair, source: Tenant, target: Tenant, stores: Stores, report: dict[str, Any]) -> None:
    attribute = pair.contact.anchor_attribute
    by_anchor: dict[str, list[dict[str, Any]]] = {}
    for contact in target.exchange.contacts():
        if str(contact.get(attribute) or "").startswith(pair.anchor_prefix):
            by_anchor.setdefault(str(contact[attribute]), []).append(contact)
    mapper = ContactMapper(pair)
    rows = {row.source_id: row for row in stores.contacts.rows(PAIR_ID)}
    not_exact = missing = 0
    for user in source.directory.users:
        decision = decide_scope(pair, user)
        row = rows.get(str(user["id"]))
        if not decision.in_scope or (row is not None and row.status == "conflict"):
            continue
        found = by_anchor.get(pair.anchor(str(user["id"])), [])
        if not found:
            missing += 1
        elif contact_differences(mapper.map(user, decision.address).contact, found[0]):
            not_exact += 1
    counts = stores.contacts.status_counts(PAIR_ID)
    report["check"] = {
        "duplicates": sum(len(found) - 1 for found in by_anchor.values()),
        "failed": counts.get("failed", 0), "poisoned": counts.get("poisoned", 0) + stores.poison.approximate_count(),
        "missing": missing, "not_exact": not_exact, "conflicts": counts.get("conflict", 0),
        "queued_left": counts.get("queued", 0),
    }


def run_mode(options: Options, mode: str) -> dict[str, Any]:
    profile = dataclasses.replace(ExchangeProfile.realistic(scale=options.scale, seed=options.seed),
                                  creation_quota=options.quota, quota_cooldown=options.quota_cooldown)
    report: dict[str, Any] = {"mode": mode}
    with SimCloud.start(exchange_profile=profile) as cloud, tempfile.TemporaryDirectory() as tmp:
        values = {**cloud.client_env(), **settings(options, mode), SECRET_VARIABLE: uuid.uuid4().hex}
        with environment(values):
            import function_app

            function_app._runtime.clear()
            pair, source, target = tenants(cloud, options)
            stores = Stores.from_settings()
            stores.pairs.add(pair)
            host = host_json(Path(tmp), mode)
            log(f"{mode}: {options.users} users, Exchange cap {profile.concurrency_cap}, quota {options.quota} "
                f"per {options.quota_cooldown:g} s, latency x{options.scale:g}")
            first_load(cloud, options, mode, host, stores, target, report)
            changes(cloud, options, host, source, stores, report)
            check(pair, source, target, stores, report)
            function_app._runtime.clear()
    log(f"{mode}: done in {report['wall_seconds']} s")
    return report


ROWS = [
    ("contacts created", "contacts_created", "{:,}"),
    ("wall time of the first load", "wall_seconds", "{:.0f} s"),
    ("contacts per second (wall)", "contacts_per_second", "{:.1f}"),
    ("contacts per second while not paused", "contacts_per_second_unpaused", "{:.1f}"),
    ("ideal rate the cap and latency allow", "ideal_per_second", "{:.1f}/s"),
    ("ratio to the ideal", "ratio_to_ideal", "{:.0%}"),
    ("Exchange calls per create", "calls_per_create", "{:.2f}"),
    ("  of which look-ups", "lookups_per_create", "{:.3f}"),
    ("calls per update (name + title)", "calls_per_update", "{:.2f}"),
    ("calls per delete", "calls_per_delete", "{:.2f}"),
    ("calls answered 429", "share_429", "{:.2%}"),
    ("quota pauses (seconds each)", "quota_pauses_seconds", "{}"),
    ("New-MailContact refused by the quota", "quota_refusals", "{}"),
    ("peak concurrent calls at Exchange", "peak_in_flight", "{}"),
    ("mean concurrent calls at Exchange", "mean_in_flight", "{}"),
    ("mean pace limit (all instances)", "mean_pace_limit", "{}"),
]


def print_table(reports: list[dict[str, Any]]) -> None:
    modes = [r["mode"] for r in reports]
    print()
    print(f"{'measure':42}" + "".join(f"{mode:>18}" for mode in modes))
    print("-" * 42 + "  ".join("-" * 16 for _ in modes))
    for label, key, fmt in ROWS:
        print(f"{label:42}" + "".join(f"{fmt.format(r.get(key, '')):>18}" for r in reports))
    for name in ("duplicates", "failed", "poisoned", "missing", "not_exact", "queued_left"):
        print(f"{'check: ' + name:42}" + "".join(f"{r['check'][name]:>18}" for r in reports))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--mode", choices=("both", "before", "after"), default="both")
    parser.add_argument("--scale", type=float, default=0.1, help="simulated latency = real latency x this")
    parser.add_argument("--quota", type=int, default=4000, help="creations before the quota stops them")
    parser.add_argument("--quota-cooldown", type=float, default=20.0, help="seconds until the quota frees")
    parser.add_argument("--backoff", default="10,30,120", help="CTCS_QUOTA_BACKOFF_SECONDS for the run")
    parser.add_argument("--instances", type=int, default=2)
    parser.add_argument("--updates", type=int, default=500)
    parser.add_argument("--deletes", type=int, default=100)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--batch", action="store_true", help="also evaluate $batch (benchmarks/exchange_batch.py)")
    parser.add_argument("--json", type=Path, help="write the results here as JSON")
    args = parser.parse_args()
    process, connection = azurite.start_private()
    try:
        options = Options(args.users, args.scale, args.quota, args.quota_cooldown, args.backoff, args.instances,
                          args.updates, args.deletes, args.seed, connection)
        modes = ["before", "after"] if args.mode == "both" else [args.mode]
        reports = [run_mode(options, mode) for mode in modes]
        print_table(reports)
        results: dict[str, Any] = {"first_load": reports}
        if args.batch:
            from benchmarks.exchange_batch import evaluate

            results["batch"] = evaluate(scale=args.scale)
        if args.json:
            args.json.write_text(json.dumps(results, indent=2, default=str), encoding="utf-8")
    finally:
        azurite.stop(process)


if __name__ == "__main__":
    main()
