"""Groups as contacts, measured (issue 15): a source with 2,000 groups of every kind (1,000 Microsoft 365 groups,
600 distribution lists, 300 mail-enabled security groups, 100 security groups without mail) synced into the target
through `run_pair` and the in-process drain, then 100 groups changed, then an idle run. Prints, per step, the Graph
requests by endpoint, the Exchange requests and the planning time.

"Before" reads each Microsoft 365 group's hideFromAddressLists with its own `GET /groups/{id}` (what Graph allows
without $batch: the property comes from no list or delta query); "after" sends them 20 to a JSON $batch. Graph
counts every request inside a batch against its throttling limits, so the batch saves round trips and time, not
resource units.

    python3 dev.py bench groups        (Azurite is started or reused by dev.py)
"""

from __future__ import annotations

import os
import sys
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sim import SimCloud, Tenant
from sim.azurite import CONNECTION_STRING
from sync.app.admin.drain import drain
from sync.app.planner.run import run_pair
from sync.app.wiring.runtime import Runtime
from sync.contract.pairs import parse_pair
from sync.contract.vocabulary import RunTrigger
from sync.graph import group_contacts
from tests.support.sim_pairs import sim_definition, sim_tenants

SECRET_ENV, SECRET = "CTCS_SECRET_BENCH", "bench-secret-value"
KINDS = (("unified", 1000), ("distribution", 600), ("mail_enabled_security", 300), ("security", 100))


def add_groups(source: Tenant) -> list[str]:
    directory, ids = source.directory, []
    for kind, count in KINDS:
        for i in range(count):
            mail = f"{kind.replace('_', '')}{i}@{source.domain}"
            properties: dict[str, Any] = {
                "unified": {"mail": mail, "mailEnabled": True, "securityEnabled": False, "groupTypes": ["Unified"],
                            "hideFromAddressLists": i % 50 == 0},
                "distribution": {"mail": mail, "mailEnabled": True, "securityEnabled": False},
                "mail_enabled_security": {"mail": mail, "mailEnabled": True, "securityEnabled": True},
                "security": {},
            }[kind]
            ids.append(directory.add_group(f"{kind} {i}", description=f"group {i}", **properties))
    return ids


def step(cloud: SimCloud, rt: Runtime, pair_id: str, title: str) -> None:
    cloud.reset_counts()
    started = time.monotonic()
    result = run_pair(rt, pair_id, trigger=RunTrigger.CLI)
    planned = time.monotonic() - started
    drained = drain(rt, concurrency=8)
    graph = {key[1]: n for key, n in cloud.counts.snapshot().items() if isinstance(key, tuple) and key[0] == "graph"}
    counts = {k.removeprefix("groups_"): n for k, n in result.run.counts.items() if k.startswith("groups_") and n}
    print(f"  {title:<28} graph {cloud.counts['graph']:>5} {graph}  exchange {cloud.counts['exchange']:>5}  "
          f"planning {planned:5.1f} s  applying {drained.seconds:5.1f} s  {counts}")


def measure(label: str, batch_size: int) -> None:
    group_contacts.BATCH_SIZE = batch_size
    suffix = uuid.uuid4().hex[:8]
    os.environ.update({
        "AzureWebJobsStorage": CONNECTION_STRING, "CTCS_PAIRS_TABLE": f"benchpairs{suffix}",
        "CTCS_PAIR_STATE_TABLE": f"benchstate{suffix}", "CTCS_CONTACT_STATE_TABLE": f"benchcontacts{suffix}",
        "CTCS_RUNS_TABLE": f"benchruns{suffix}", "CTCS_OPS_QUEUE": f"bench-{suffix}",
        "CTCS_GROUPS_TABLE": f"benchgroups{suffix}", SECRET_ENV: SECRET,
    })
    with SimCloud.trusted() as cloud:
        source, target, client_id, _ = sim_tenants(cloud, secret=SECRET)
        source.register_app(client_id, roles=("User.Read.All", "Group.Read.All", "Exchange.ManageAsApp"))
        ids = add_groups(source)
        pair = parse_pair(sim_definition(cloud, source, target, pair_id="bench-groups", secret_env=SECRET_ENV,
                                         source_client=client_id, objects=["users", "groups"],
                                         deletion={"max_deletes": 500, "max_delete_percent": 100}))
        rt = Runtime.from_settings()
        rt.stores.pairs.add(pair)
        print(f"\n{label}: hideFromAddressLists {'one GET per group' if batch_size == 1 else f'{batch_size} per $batch'}")
        step(cloud, rt, pair.id, "first run (2,000 groups)")
        for group_id in ids[:50] + ids[1000:1050]:  # 50 Microsoft 365 groups and 50 lists change
            source.directory.update_group(group_id, description="changed")
        step(cloud, rt, pair.id, "100 groups changed")
        step(cloud, rt, pair.id, "idle")
        contacts = len(target.exchange.contacts())
        print(f"  contacts in the target: {contacts} (expected {1000 - 20 + 600 + 300})")


if __name__ == "__main__":
    measure("before", 1)
    measure("after", 20)
