"""Pacing by a request budget announced the live way: the share of Exchange calls answered 429, before and after
ctcs read `Rate-Limit-Reset` as the absolute ISO-8601 time Exchange Online sends (issue 23).

    .venv/bin/python benchmarks/budget_headers.py [--calls 240] [--threads 4] [--budget 60] [--window 4]

One simulated target tenant announces a budget of `--budget` calls per `--window` seconds with
`Rate-Limit-Reset: 2024-05-22T16:52:26.365Z`-style headers (the simulator's default); `--threads` threads send
`--calls` Get-Recipient calls in all through one `AdminApiClient` and its `OrgPacer`, over loopback HTTPS with the
real httpx and azure-identity. `before` reads the reset with `float()` as ctcs did up to issue 23 (so the ISO form
is ignored and only Retry-After after a 429 slows the calls); `after` is the current reader. Printed per mode:
calls answered, 429s (budget), their share of all requests, and the wall time.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import sync.exchange.pacing as pacing
from sim import SimCloud
from sync.core.pacing import LocalPaceBoard
from sync.exchange.client import AdminApiClient
from sync.exchange.pacing import OrgPacer
from sync.identity.credentials import CredentialCache
from sync.identity.secrets import SecretResolver
from tests.support.sim_pairs import SimPair, sim_pair

SECRET_ENV, SECRET = "CTCS_SECRET_BENCH", "bench-secret-value"


def float_only_budget(headers: Mapping[str, str] | None, wall: float) -> tuple[int | None, float | None]:
    """The reader before issue 23: `float()` on Rate-Limit-Reset, so an absolute time reads as nothing."""
    if not headers:
        return None, None
    try:
        remaining = int(headers.get("Rate-Limit-Remaining") or "")
        reset = float(headers.get("Rate-Limit-Reset") or "")
    except ValueError:
        return None, None
    return remaining, max(0.0, reset)


@contextmanager
def reader(mode: str) -> Iterator[None]:
    current = pacing._budget
    if mode == "before":
        pacing._budget = float_only_budget
    try:
        yield
    finally:
        pacing._budget = current


def run(cloud: SimCloud, made: SimPair, mode: str, args: argparse.Namespace) -> None:
    limits = made.target.exchange.limits
    limits.configure(budget=args.budget, budget_window=args.window, latency={"*": 0.02})
    time.sleep(args.window)  # start on a fresh window
    cloud.reset_counts()
    rejected_before = limits.stats.budget_rejections
    resolver = SecretResolver(environ={SECRET_ENV: SECRET})
    pacer = OrgPacer(made.target.domain, board=LocalPaceBoard(), instance=mode, report_seconds=1.0)
    client = AdminApiClient(CredentialCache().for_target(made.pair, resolver), exchange_endpoint=cloud.endpoints["exchange"],
                            tenant=made.pair.target.tenant_id, organization=made.pair.target.organization, pacer=pacer)
    per_thread = args.calls // args.threads

    def work() -> None:
        for _ in range(per_thread):
            client.invoke("Get-Recipient", {"Filter": "Name -eq 'nobody'"})

    with reader(mode):
        started = time.monotonic()
        threads = [threading.Thread(target=work) for _ in range(args.threads)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        wall = time.monotonic() - started
    client.close()
    requests = cloud.counts["exchange"]
    refused = limits.stats.budget_rejections - rejected_before
    print(f"{mode:>6}: {per_thread * args.threads} calls, {requests} requests, {refused} answered 429 "
          f"({100.0 * refused / max(1, requests):.1f} %), {wall:.1f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=240)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--budget", type=int, default=60)
    parser.add_argument("--window", type=float, default=4.0)
    parser.add_argument("--mode", choices=("both", "before", "after"), default="both")
    args = parser.parse_args()
    with SimCloud.trusted() as cloud:
        made = sim_pair(cloud, secret=SECRET, secret_env=SECRET_ENV, pair_id="bench-budget")
        print(f"budget {args.budget} calls per {args.window:g} s, Rate-Limit-Reset as "
              f"{made.target.exchange.limits.profile.rate_limit_reset_format}")
        for mode in (("before", "after") if args.mode == "both" else (args.mode,)):
            run(cloud, made, mode, args)


if __name__ == "__main__":
    main()
