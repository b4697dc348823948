"""The broken-credential scenario of issue 16, measured: a pair whose target certificate is not registered on its
app (32 users) next to a healthy pair (5 users), a timer run drained through the worker as the Functions host would,
then two more timer runs. Prints what it cost: token requests (refused ones among them), failed deliveries, ops
poisoned, ops parked, and what each later timer run queued.

    python benchmarks/broken_credential.py        (Azurite must be running; dev.py bench starts none for this one)

Written so it also runs on a release without the credentials quarantine (the "before" numbers).
"""

from __future__ import annotations

import os
import sys
import tempfile
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import function_app
from sim import SimCloud, make_client_certificate
from sim.azurite import CONNECTION_STRING
from sim.host import LocalHost
from tests.support.sim_pairs import CertificateLogin, sim_pair

SECRET_ENV, SECRET = "CTCS_SECRET_BENCH", "bench-secret-value"


def queue_depth(rt: object, name: str) -> int:
    queue = getattr(rt.stores, name, None)  # type: ignore[attr-defined]
    return queue.approximate_count() if queue is not None else 0


def main() -> None:
    suffix = uuid.uuid4().hex[:8]
    os.environ.update({
        "AzureWebJobsStorage": CONNECTION_STRING, "CTCS_PAIRS_TABLE": f"benchpairs{suffix}",
        "CTCS_PAIR_STATE_TABLE": f"benchstate{suffix}", "CTCS_CONTACT_STATE_TABLE": f"benchcontacts{suffix}",
        "CTCS_RUNS_TABLE": f"benchruns{suffix}", "CTCS_OPS_QUEUE": f"bench-{suffix}", SECRET_ENV: SECRET,
    })
    certificate = make_client_certificate(None, common_name="ctcs bench")
    key_file = Path(tempfile.mkdtemp()) / "exo.pem"
    os.environ["CTCS_SECRET_FILE_DIR"] = str(key_file.parent)  # file: references are read only under it
    key_file.write_bytes(certificate.pem_bytes)
    with SimCloud.trusted() as cloud:
        login = CertificateLogin(certificate.cert_pem, f"file:{key_file}")
        bad = sim_pair(cloud, secret=SECRET, secret_env=SECRET_ENV, pair_id="bad-certificate", certificate=login)
        good = sim_pair(cloud, secret=SECRET, secret_env=SECRET_ENV, pair_id="healthy", certificate=login)
        bad.target.apps[bad.pair.target.client_id.lower()].certificates = []
        for made, count in ((bad, 32), (good, 5)):
            for i in range(count):
                made.source.directory.add_user({"displayName": f"User {i}", "mail": f"user{i}@{made.source.domain}",
                                                "userPrincipalName": f"user{i}@{made.source.domain}"})
        rt = function_app.runtime()
        rt.stores.pairs.add(bad.pair)
        rt.stores.pairs.add(good.pair)
        host = LocalHost(visibility_timeout=0)
        cloud.reset_counts()
        host.fire_timer()
        report = host.drain_queue(deadline_seconds=120)
        print(f"first run: {cloud.counts['token']} token requests ({cloud.counts[('token', 'rejected')]} refused), "
              f"{report.failed_attempts} failed deliveries, {report.poisoned} poisoned, "
              f"{queue_depth(rt, 'parked')} parked, {queue_depth(rt, 'failed')} kept for replay-poison")
        for n in (1, 2):
            host.fire_timer()
            queued = queue_depth(rt, "ops")
            host.drain_queue(deadline_seconds=120)
            print(f"timer run {n + 1}: {queued} ops queued; {cloud.counts['token']} token requests so far")
        healthy = sum(1 for c in good.target.exchange.contacts() if str(c.get("CustomAttribute15", "")).startswith("ctcs|"))
        print(f"healthy pair: {healthy} of 5 contacts")


if __name__ == "__main__":
    main()
