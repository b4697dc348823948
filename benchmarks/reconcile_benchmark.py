"""Reconcile at scale, measured on the simulator: what a reconcile round of N contacts costs in Exchange calls and
writes, idle (nothing drifted) and after ContactState was lost, and what recovering from a lost ContactState cost
before reconcile existed (a full round: every create adopts its own contact by anchor and sets every parameter).

    python3 dev.py bench reconcile        (N = CTCS_BENCH_RECONCILE_USERS, default 10,000; Azurite must be running)

The target starts with the contacts ctcs would have made for the source's users (seeded straight into the simulated
organisation, as Exchange would hold them: `SMTP:` addresses, country names), so the numbers are about reconciling,
not about a first load.
"""

from __future__ import annotations

import math
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import function_app
from sim import SimCloud, make_client_certificate
from sim.azurite import CONNECTION_STRING
from sim.countries import country_name
from sim.generator import load_users
from sim.host import LocalHost
from sync.app.planner.reconcile import reconcile_pair
from sync.app.planner.rounds import Invocation
from sync.app.planner.run import run_pair
from sync.contract.vocabulary import RunTrigger
from sync.core.mapping import ContactMapper
from sync.core.scope import decide_scope
from tests.support.sim_pairs import CertificateLogin, sim_pair

SECRET_ENV, SECRET = "CTCS_SECRET_BENCH", "bench-secret-value"
WRITES = ("New-MailContact", "Set-MailContact", "Set-Contact", "Remove-MailContact")


def exchange_calls(cloud: SimCloud) -> dict[str, int]:
    return {str(key[1]): n for key, n in cloud.counts.snapshot().items()
            if isinstance(key, tuple) and len(key) == 2 and key[0] == "exchange"}


def seed_target(made: Any) -> int:
    """Every in-scope user's contact, as ctcs would have created it."""
    mapper = ContactMapper(made.pair)
    exchange = made.target.exchange
    seeded = 0
    for user in made.source.directory.users:
        decision = decide_scope(made.pair, user)
        if not decision.in_scope:
            continue
        contact = dict(mapper.map(user, decision.address).contact)
        name, address = contact.pop("Name"), contact.pop("ExternalEmailAddress")
        if contact.get("CountryOrRegion"):
            contact["CountryOrRegion"] = country_name(str(contact["CountryOrRegion"]))
        contact = {k: (None if v == "" and k in ("Manager", "CountryOrRegion") else v) for k, v in contact.items()}
        try:
            exchange.add_recipient("MailContact", name, address, **contact)
        except Exception:  # a generated address shared by two users: the second is a conflict, as in real life
            continue
        seeded += 1
    return seeded


def measure(label: str, cloud: SimCloud, rt: Any, host: LocalHost, action: Any) -> None:
    cloud.reset_counts()
    started = time.monotonic()
    result = action()
    planned = time.monotonic() - started
    queued = rt.stores.ops.approximate_count()
    report = host.drain_queue(deadline_seconds=3600)
    calls = exchange_calls(cloud)
    writes = sum(calls.get(cmdlet, 0) for cmdlet in WRITES)
    print(f"{label}: {sum(calls.values()):,} Exchange calls ({', '.join(f'{k} {v:,}' for k, v in sorted(calls.items()))}), "
          f"{writes:,} writes; {queued:,} op messages queued, {report.completed:,} deliveries; "
          f"outcome {result.outcome}; planned in {planned:.1f} s, {time.monotonic() - started:.1f} s with the ops applied")
    counts = result.run.counts
    repaired = {k: counts.get(k, 0) for k in ("drift_repaired", "recreated", "orphans_removed", "duplicates_removed",
                                              "rows_rebuilt") if k in counts}
    if repaired:
        print(f"  repairs: {repaired}")


def main() -> None:
    users = int(os.environ.get("CTCS_BENCH_RECONCILE_USERS", "10000"))
    suffix = uuid.uuid4().hex[:8]
    os.environ.update({
        "AzureWebJobsStorage": CONNECTION_STRING, "CTCS_PAIRS_TABLE": f"benchpairs{suffix}",
        "CTCS_PAIR_STATE_TABLE": f"benchstate{suffix}", "CTCS_CONTACT_STATE_TABLE": f"benchcontacts{suffix}",
        "CTCS_RUNS_TABLE": f"benchruns{suffix}", "CTCS_OPS_QUEUE": f"bench-{suffix}",
        "CTCS_PAIR_RUNS_QUEUE": f"bench-runs-{suffix}", "CTCS_TARGETS_TABLE": f"benchtargets{suffix}",
        "CTCS_GROUPS_TABLE": f"benchgroups{suffix}", SECRET_ENV: SECRET,
    })
    certificate = make_client_certificate(None, common_name="ctcs bench")
    key_file = Path(tempfile.mkdtemp()) / "exo.pem"
    os.environ["CTCS_SECRET_FILE_DIR"] = str(key_file.parent)  # file: references are read only under it
    key_file.write_bytes(certificate.pem_bytes)
    with SimCloud.trusted() as cloud:
        made = sim_pair(cloud, secret=SECRET, secret_env=SECRET_ENV, pair_id="reconcile-bench",
                        certificate=CertificateLogin(certificate.cert_pem, f"file:{key_file}"))
        load_users(made.source.directory, users, seed=13)
        seeded = seed_target(made)
        page = made.target.exchange.page_size
        rt = function_app.runtime()
        rt.stores.pairs.add(made.pair)
        host = LocalHost(visibility_timeout=0)
        print(f"{users:,} source users, {seeded:,} contacts in the target, {page:,} per Get-Recipient page "
              f"(bound for an idle reconcile: ceil({seeded:,} / {page:,}) + 2 = {math.ceil(seeded / page) + 2} calls)")
        if os.environ.get("CTCS_BENCH_RECONCILE_BEFORE", "1") == "1":
            measure("before (no reconcile): lost ContactState recovered by a full round", cloud, rt, host,
                    lambda: run_pair(rt, made.pair.id, trigger=RunTrigger.CLI, full=True,
                                     invocation=Invocation(keep_ops=False)))
            rt.stores.contacts.forget_pair(made.pair.id)
            rt.stores.pair_state.forget(made.pair.id)
        measure("after: lost ContactState recovered by a reconcile", cloud, rt, host,
                lambda: reconcile_pair(rt, made.pair.id, keep_ops=False)[0])
        measure("after: idle reconcile", cloud, rt, host, lambda: reconcile_pair(rt, made.pair.id, keep_ops=False)[0])


if __name__ == "__main__":
    main()
