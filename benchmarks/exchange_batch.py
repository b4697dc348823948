"""Does the admin API's undocumented `$batch` raise throughput under the same concurrency cap? Measured, not assumed.

The same cmdlets (Set-Contact on existing contacts) go to the simulated Exchange with the realistic profile
(latency x `scale`, a cap of 10 concurrent calls per tenant, each `$batch` sub-request counted against the cap
like a single call, as the reference describes), three ways with the same 10 calls in flight:

    single      10 threads, one InvokeCommand each at a time
    batch x10   one `$batch` of 10 sub-requests at a time
    batch x5    two `$batch`es of 5 sub-requests at a time

and once more with the endpoint refusing `$batch` (400): the sender falls back to single calls for the rest of the
run. Prints cmdlets per second, their ratio to single calls, and the share answered 429.

    python benchmarks/exchange_batch.py [--calls 2000] [--scale 0.1]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
from azure.identity import ClientSecretCredential

from sim.cloud import SimCloud
from sim.exchange_limits import ExchangeProfile
from sim.tenant import Tenant

MAX_BATCH = 10


class Sender:
    """InvokeCommand one at a time, or `$batch` with a fallback to single calls once the endpoint refuses it."""

    def __init__(self, cloud: SimCloud, tenant: Tenant, token: str) -> None:
        self.base = f"{cloud.endpoints['exchange']}/adminapi/beta/{tenant.tenant_id}"
        self.headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        self.client = httpx.Client(timeout=60, limits=httpx.Limits(max_connections=64))
        self.batch_refused = False
        self.refused_429 = 0
        self._lock = threading.Lock()

    def single(self, cmdlet: str, params: dict[str, Any]) -> None:
        while True:
            answer = self.client.post(f"{self.base}/InvokeCommand", headers={**self.headers, "X-CmdletName": cmdlet},
                                      json={"CmdletInput": {"CmdletName": cmdlet, "Parameters": params}})
            if answer.status_code != 429:
                return
            with self._lock:
                self.refused_429 += 1
            time.sleep(0.05)

    def batch(self, items: list[tuple[str, dict[str, Any]]]) -> None:
        if self.batch_refused:
            for cmdlet, params in items:
                self.single(cmdlet, params)
            return
        pending = list(enumerate(items))
        while pending:
            requests = [{"id": str(n), "method": "POST", "url": "/InvokeCommand",
                         "headers": {"X-CmdletName": cmdlet, "Content-Type": "application/json"},
                         "body": {"CmdletInput": {"CmdletName": cmdlet, "Parameters": params}}}
                        for n, (cmdlet, params) in pending]
            answer = self.client.post(f"{self.base}/$batch", headers={**self.headers, "Prefer": "odata.continue-on-error"},
                                      json={"requests": requests})
            if answer.status_code != 200:
                self.batch_refused = True  # refused: single calls for the rest of the run
                for _, (cmdlet, params) in pending:
                    self.single(cmdlet, params)
                return
            throttled = {item["id"] for item in answer.json()["responses"] if item["status"] == 429}
            with self._lock:
                self.refused_429 += len(throttled)
            pending = [(n, item) for n, item in pending if str(n) in throttled]
            if pending:
                time.sleep(0.05)


def _measure(name: str, work: Callable[[], None], sender: Sender, calls: int, cloud: SimCloud) -> dict[str, Any]:
    cloud.reset_counts()
    sender.refused_429 = 0
    started = time.monotonic()
    work()
    seconds = time.monotonic() - started
    total = cloud.counts["exchange"]
    return {"way": name, "cmdlets": calls, "seconds": round(seconds, 1), "per_second": round(calls / seconds, 1),
            "share_429": round(sender.refused_429 / max(1, total), 4)}


def evaluate(*, calls: int = 2000, scale: float = 0.1) -> dict[str, Any]:
    profile = dataclasses.replace(ExchangeProfile.realistic(scale=scale), creation_quota=0)
    cap = profile.concurrency_cap
    results: dict[str, Any] = {"cap": cap, "ways": []}
    with SimCloud.start(exchange_profile=profile) as cloud:
        previous = cloud.apply_client_env()
        try:
            tenant = cloud.add_tenant(domain=f"batch{uuid.uuid4().hex[:6]}.onmicrosoft.com", name="Fabrikam")
            client_id, secret = str(uuid.uuid4()), uuid.uuid4().hex
            tenant.register_app(client_id, secret=secret)
            guids = [tenant.exchange.add_recipient("MailContact", f"c{n}", f"c{n}@contoso.com") for n in range(calls)]
            credential = ClientSecretCredential(tenant.tenant_id, client_id, secret,
                                                authority=cloud.endpoints["authority"], disable_instance_discovery=True)
            token = credential.get_token(f"{cloud.endpoints['exchange']}/.default").token
            sender = Sender(cloud, tenant, token)
            work = [("Set-Contact", {"Identity": guid, "Title": "Benchmarked"}) for guid in guids]

            def singles() -> None:
                with ThreadPoolExecutor(max_workers=cap) as pool:
                    list(pool.map(lambda item: sender.single(*item), work))

            def batches(size: int) -> Callable[[], None]:
                def run() -> None:
                    chunks = [work[i : i + size] for i in range(0, len(work), size)]
                    in_flight = threading.BoundedSemaphore(max(1, cap // size))  # batches x size = the cap

                    def one(chunk: list[tuple[str, dict[str, Any]]]) -> None:
                        if sender.batch_refused:  # fallen back: single calls, `cap` at a time as above
                            for item in chunk:
                                sender.single(*item)
                            return
                        with in_flight:
                            sender.batch(chunk)

                    with ThreadPoolExecutor(max_workers=cap) as pool:
                        list(pool.map(one, chunks))

                return run

            ways = [("single calls", singles), ("$batch of 10", batches(10)), ("$batch of 5, two at a time", batches(5))]
            for name, run in ways:
                results["ways"].append(_measure(name, run, sender, calls, cloud))
            tenant.exchange.limits.configure(batch=False)
            fallback = _measure("$batch refused: fell back to single", batches(10), sender, calls, cloud)
            fallback["fell_back"] = sender.batch_refused
            results["ways"].append(fallback)
        finally:
            SimCloud.restore_env(previous)
    single = results["ways"][0]["per_second"]
    print(f"\n$batch under the same cap of {cap} concurrent calls ({calls} Set-Contact each way, latency x{scale:g})")
    print(f"{'way':40}{'cmdlets/s':>12}{'vs single':>12}{'429 share':>12}")
    for way in results["ways"]:
        print(f"{way['way']:40}{way['per_second']:>12.1f}{way['per_second'] / single:>12.0%}{way['share_429']:>12.2%}")
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--scale", type=float, default=0.1)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    results = evaluate(calls=args.calls, scale=args.scale)
    if args.json:
        print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
