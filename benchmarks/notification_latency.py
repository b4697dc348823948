"""How long a change in the source takes to reach the target's address book: with Graph change notifications, and
with the timer alone (issue 17).

    python benchmarks/notification_latency.py [--changes 100] [--spread 120] [--graph-delay 15] [--timer-scale 5]
    python3 dev.py bench notifications      (Azurite must be running)

One pair of 200 users, synced first. Then `--changes` users each get a new job title at seeded random moments over
`--spread` seconds, and a watcher notes when each contact carries its new title. Everything goes through the
Functions entry points driven by `sim.host.LocalHost`: a host loop delivers the pair-runs and contact-ops queues
continuously, as the Functions host polls them.

- notifications: the timer subscribes the pair once; the simulated Graph posts each change to the notification route
  over loopback HTTPS `--graph-delay` seconds after it (plus a seeded jitter of up to the same again: Microsoft
  publishes no delivery latency for directory resources), batched as Graph does; the route asks for a run
  `CTCS_NOTIFICATION_DELAY_SECONDS` (5) later. Latency is measured from the change and from Graph's delivery.
- timer alone: notifications off, the timer every 300 seconds with its first tick at a seeded random phase. To keep
  the run short, the timer's period and the spread of the changes are divided by `--timer-scale`; each change's wait
  for the next tick is multiplied back by it, and the time from the tick to the correct contact (planning, queue,
  Exchange) is added as measured.

Graph is as slow as Microsoft's (`realistic_graph`: ~0.25 s a request, more per page) and every Exchange cmdlet
as slow as the realistic profile's (0.6-1.2 s, jittered). The simulated Graph applies its delivery rules (3 s
timeout, slow replies over 2.9 s, the endpoint delayed or dropped when too many are slow: sim.subscriptions) and
users/delta shows a change up to `--delta-delay` seconds (30, seeded) after it is made, so the run a notification
starts may find nothing and look again (sync.app.planner.fanout). Prints p50, p95 and max for each.

First (`--only handler` for just this): the notification route's first request after a cold import of
function_app and its warm p50/p99 (benchmarks/notification_handler.py).
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import function_app
from benchmarks import notification_handler
from sim import SimCloud, Tenant
from sim.azurite import CONNECTION_STRING
from sim.delta import DeltaDelay
from sim.exchange_limits import ExchangeProfile
from sim.host import LocalHost
from tests.support.sim_pairs import sim_pair

SECRET_ENV, SECRET = "CTCS_SECRET_BENCH", "bench-secret-value"
USERS = 200
TIMER_PERIOD = 300.0


@dataclass
class Change:
    user_id: str
    title: str
    at: float  # monotonic
    delivered: float | None = None
    done: float | None = None
    tick: float | None = None  # timer mode: the first tick after the change


@dataclass
class HostLoop:
    """The Functions host's polling of the queues, in a thread, until stopped."""

    host: LocalHost
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        while not self.stop.is_set():
            self.host.drain_queue(deadline_seconds=2)
            time.sleep(0.1)


def percentiles(values: list[float]) -> str:
    ordered = sorted(values)
    if not ordered:
        return "no values"
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return f"p50 {statistics.median(ordered):6.1f} s   p95 {p95:6.1f} s   max {ordered[-1]:6.1f} s   (n={len(ordered)})"


def fresh_storage(mode: str) -> None:
    suffix = f"{mode}{uuid.uuid4().hex[:6]}"
    os.environ.update({
        "AzureWebJobsStorage": CONNECTION_STRING, "CTCS_PAIRS_TABLE": f"lpairs{suffix}",
        "CTCS_PAIR_STATE_TABLE": f"lstate{suffix}", "CTCS_CONTACT_STATE_TABLE": f"lcontacts{suffix}",
        "CTCS_RUNS_TABLE": f"lruns{suffix}", "CTCS_GROUPS_TABLE": f"lgroups{suffix}",
        "CTCS_TARGETS_TABLE": f"ltargets{suffix}", "CTCS_OPS_QUEUE": f"lops-{suffix}",
        "CTCS_PAIR_RUNS_QUEUE": f"lruns-{suffix}", SECRET_ENV: SECRET,
    })
    function_app._runtime.clear()


def anchor_titles(target: Tenant) -> dict[str, str]:
    return {str(c.get("CustomAttribute15", "")).rsplit("|", 1)[-1]: str(c.get("Title") or "")
            for c in target.exchange.contacts()}


def watch(changes: list[Change], target: Tenant, stop: threading.Event) -> None:
    while not stop.is_set():
        made = list(changes)  # the changes made so far (the list grows while the watcher runs)
        titles = anchor_titles(target)
        now = time.monotonic()
        for change in made:
            if change.done is None and titles.get(change.user_id) == change.title:
                change.done = now
        time.sleep(0.2)


def make_changes(source: Tenant, changes: list[Change], count: int, spread: float, rng: random.Random,
                 label: str) -> None:
    """`count` users each get a new title at seeded moments over `spread` seconds. Each change joins `changes` as it
    is made, so the watcher times it from then (not from the end of the spread)."""
    users = rng.sample([u["id"] for u in source.directory.users], count)
    moments = sorted(rng.uniform(0, spread) for _ in users)
    start = time.monotonic()
    for n, (uid, moment) in enumerate(zip(users, moments, strict=True)):
        time.sleep(max(0.0, start + moment - time.monotonic()))
        title = f"{label} title {n}"
        changes.append(Change(uid, title, time.monotonic()))
        source.directory.update_user(uid, jobTitle=title)


def wait_all_done(changes: list[Change], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while any(c.done is None for c in changes) and time.monotonic() < deadline:
        time.sleep(0.5)


def scenario(cloud: SimCloud, mode: str, args: argparse.Namespace,
             during: Callable[[LocalHost, threading.Event], None] | None = None) -> tuple[list[Change], LocalHost]:
    fresh_storage(mode)
    made = sim_pair(cloud, secret=SECRET, secret_env=SECRET_ENV, pair_id=f"latency-{mode}")
    for i in range(USERS):
        made.source.directory.add_user({"displayName": f"User {i}", "mail": f"user{i}@{made.source.domain}",
                                        "userPrincipalName": f"user{i}@{made.source.domain}", "jobTitle": "Start"})
    rt = function_app.runtime()
    rt.stores.pairs.add(made.pair)
    host = LocalHost(visibility_timeout=1)
    if mode == "notifications":
        base = host.listen(cloud.tls_files)
        os.environ.update({"CTCS_CHANGE_NOTIFICATIONS": "on", "CTCS_NOTIFICATION_URL": f"{base}/api/notifications",
                           "CTCS_NOTIFICATION_KEY": "benchmark-notification-key-0123456789"})
    else:
        os.environ.update({"CTCS_CHANGE_NOTIFICATIONS": "off"})
    function_app._runtime.clear()
    host.fire_timer()
    host.drain_queue(deadline_seconds=300)
    made.target.exchange.limits.configure(latency=ExchangeProfile.realistic(scale=1.0).latency, latency_jitter=0.2)
    if mode == "notifications":
        print(f"  subscribed: {len(cloud.subscriptions.all(made.source.tenant_id))} subscription(s)", flush=True)
    rng = random.Random(17)
    stop = threading.Event()
    loop = HostLoop(host, stop)
    threads = [threading.Thread(target=loop.run, daemon=True)]
    changes: list[Change] = []
    threads.append(threading.Thread(target=watch, args=(changes, made.target, stop), daemon=True))
    if during is not None:
        threads.append(threading.Thread(target=during, args=(host, stop), daemon=True))
    for thread in threads:
        thread.start()
    spread = args.spread if mode == "notifications" else args.spread / args.timer_scale
    make_changes(made.source, changes, args.changes, spread, rng, mode)
    print(f"  {len(changes)} changes made over {spread:.0f} s", flush=True)
    wait_all_done(changes, timeout=600)
    stop.set()
    for thread in threads:
        thread.join(timeout=30)
    if mode == "notifications":
        print(f"  Graph: {dict(cloud.subscriptions.stats)}")
        delivered = list(cloud.subscriptions.delivered)
        for change in changes:
            after = [moment for moment, item in delivered
                     if item.get("resourceData", {}).get("id") == change.user_id and moment >= change.at]
            change.delivered = min(after) if after else None
    if args.verbose and changes:
        zero = changes[0].at
        print("  slowest changes (seconds after the first change: made, Graph delivered, contact correct):")
        for change in sorted(changes, key=lambda c: -((c.done or 0) - c.at))[:8]:
            posted = f"{change.delivered - zero:6.1f}" if change.delivered else "     -"
            print(f"    {change.at - zero:6.1f} {posted} {(change.done or 0) - zero:6.1f}")
    runs = rt.stores.runs.recent(made.pair.id, limit=500)
    by_trigger = {str(t): sum(1 for r in runs if r.trigger == t) for t in sorted({str(r.trigger) for r in runs})}
    print(f"  runs: {len(runs)} (by trigger: {by_trigger})")
    if args.verbose:
        first = min(r.started for r in runs)
        for r in sorted(runs, key=lambda r: r.started):
            print(f"    +{(r.started - first).total_seconds():7.1f} s  {r.trigger:<12} {r.outcome:<10} "
                  f"{r.seconds:5.1f} s  {dict(r.counts)}")
    host.close()
    return changes, host


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--changes", type=int, default=100)
    parser.add_argument("--spread", type=float, default=120.0, help="seconds over which the changes are made")
    parser.add_argument("--graph-delay", type=float, default=15.0, help="seconds from a change to Graph's POST")
    parser.add_argument("--timer-scale", type=float, default=5.0)
    parser.add_argument("--delta-delay", type=float, default=30.0, help="most seconds before delta shows a change")
    parser.add_argument("--only", choices=("handler", "notifications", "timer"))
    parser.add_argument("--verbose", action="store_true", help="print every run of the pair")
    args = parser.parse_args()
    if args.only in (None, "handler"):
        sys.argv = [sys.argv[0]]
        notification_handler.main()
        if args.only == "handler":
            return
    with SimCloud.trusted(realistic_graph=True, seed=17) as cloud:
        cloud.subscriptions.delay, cloud.subscriptions.jitter = args.graph_delay, 1.0
        cloud.delta_delay = DeltaDelay(max_seconds=args.delta_delay, seed=17)
        os.environ["CTCS_NOTIFICATION_DELAY_SECONDS"] = "5"
        if args.only in (None, "notifications"):
            print(f"with change notifications (Graph posts {args.graph_delay:g}-{2 * args.graph_delay:g} s after a "
                  f"change, under its delivery rules; delta shows a change up to {args.delta_delay:g} s after it):",
                  flush=True)
            changes, _ = scenario(cloud, "notifications", args)
            done = [(c, c.done) for c in changes if c.done is not None]
            print(f"  change -> contact correct:           {percentiles([at - c.at for c, at in done])}")
            print(f"  Graph's delivery -> contact correct: "
                  f"{percentiles([max(0.0, at - c.delivered) for c, at in done if c.delivered is not None])}")
            print("  (0: the contact was correct before its own notification arrived: a run that an earlier one "
                  "started read it)")
            print(f"  not correct within 10 minutes: {len(changes) - len(done)}", flush=True)
        if args.only in (None, "timer"):
            period = TIMER_PERIOD / args.timer_scale
            ticks: list[float] = []

            def timer(host: LocalHost, stop: threading.Event) -> None:
                phase = random.Random(5).uniform(0, period)
                next_tick = time.monotonic() + phase
                while not stop.wait(max(0.0, next_tick - time.monotonic())):
                    ticks.append(time.monotonic())
                    host.fire_timer(run_planner=False)
                    next_tick += period

            print(f"timer alone (every {TIMER_PERIOD:.0f} s, run at 1/{args.timer_scale:g} time):", flush=True)
            changes, _ = scenario(cloud, "timer", args, during=timer)
            latencies = []
            for change in changes:
                tick = next((t for t in ticks if t >= change.at), None)
                if change.done is None or tick is None:
                    continue
                latencies.append((tick - change.at) * args.timer_scale + (change.done - tick))
            print(f"  change -> contact correct (real time): {percentiles(latencies)}", flush=True)


if __name__ == "__main__":
    main()
