"""`python -m sim demo`: the main job end to end against simulated tenants and Azurite.

It goes through the same entry points Azure runs: the local host driver fires `function_app`'s timer, then feeds
the queue to its worker function, which calls the simulated Exchange admin API with the real httpx client after
the timer read the simulated Graph with the real msgraph-sdk, both signed in with azure-identity.
"""

from __future__ import annotations

import os
import random
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

from sim import azurite
from sim.certs import make_client_certificate
from sim.cloud import SimCloud
from sim.generator import generate_users, mutate
from sim.tenant import Tenant
from sync.cli.console import table
from sync.contract.countries import country_code
from sync.contract.pairs import TenantPair, parse_pair
from sync.core.group_mapping import GroupMapper
from sync.core.group_scope import decide_group_scope
from sync.core.mapping import ContactMapper
from sync.core.scope import decide_scope
from sync.state.stores import Stores

PAIR_ID = "contoso-to-fabrikam"
SECRET_VARIABLE = "CTCS_SECRET_DEMO_GRAPH"
COMPARED = ("DisplayName", "FirstName", "LastName", "Company", "Department", "Title", "Office", "Phone",
            "MobilePhone", "City", "PostalCode", "CountryOrRegion")


def _storage_settings() -> dict[str, str]:
    suffix = uuid.uuid4().hex[:6]  # a fresh set of tables and queues, even on an Azurite that was already running
    return {
        "AzureWebJobsStorage": azurite.CONNECTION_STRING,
        "CTCS_PAIRS_TABLE": f"DemoPairs{suffix}",
        "CTCS_PAIR_STATE_TABLE": f"DemoPairState{suffix}",
        "CTCS_CONTACT_STATE_TABLE": f"DemoContactState{suffix}",
        "CTCS_RUNS_TABLE": f"DemoSyncRuns{suffix}",
        "CTCS_TARGETS_TABLE": f"DemoTargetState{suffix}",
        "CTCS_OPS_QUEUE": f"demo-contact-ops-{suffix}",
        "CTCS_PAIR_RUNS_QUEUE": f"demo-pair-runs-{suffix}",
    }


def _tenants(cloud: SimCloud, workdir: Path, users: int, seed: int) -> tuple[TenantPair, Tenant, Tenant]:
    source = cloud.add_tenant(domain="contoso.onmicrosoft.com", name="Contoso")
    target = cloud.add_tenant(domain="fabrikam.onmicrosoft.com", name="Fabrikam")
    graph_app, exchange_app = str(uuid.uuid4()), str(uuid.uuid4())
    graph_secret = uuid.uuid4().hex  # generated per demo; reaches ctcs only through env:, as a real one would
    os.environ[SECRET_VARIABLE] = graph_secret
    source.register_app(graph_app, secret=graph_secret, roles=("User.Read.All", "Group.Read.All"))
    certificate = make_client_certificate(None)  # Exchange app-only access needs a certificate
    target.register_app(exchange_app, certificate_pem=certificate.cert_pem)
    key_file = workdir / "fabrikam-exo.pem"
    os.environ["CTCS_SECRET_FILE_DIR"] = str(workdir)  # file: references are read only under this directory
    key_file.write_bytes(certificate.pem_bytes)
    for user in generate_users(users, seed=seed, domain="contoso.com"):
        source.directory.add_user(user)
    # What a real target already holds: a guest account and an old import holding addresses of source users.
    in_scope = [u for u in source.directory.users if u.get("mail") and u.get("userType") == "Member"]
    target.exchange.add_recipient("GuestMailUser", "guest-of-contoso", in_scope[0]["mail"])
    target.exchange.add_recipient("MailContact", "old-import-contact", in_scope[1]["mail"])
    for n in range(20):
        target.exchange.add_recipient("MailContact", f"partner-{n}", f"partner{n}@partner.example")
    _groups(source)
    pair = parse_pair({
        "id": PAIR_ID,
        "source": {"tenant_id": source.tenant_id, "client_id": graph_app, "name": "Contoso",
                   "credential": {"type": "client_secret", "secret": f"env:{SECRET_VARIABLE}"},
                   "cloud": dict(cloud.endpoints)},
        "target": {"tenant_id": target.tenant_id, "organization": target.domain, "client_id": exchange_app,
                   "credential": {"type": "certificate", "certificate": f"file:{key_file}"},
                   "cloud": dict(cloud.endpoints)},
        "objects": ["users", "groups"],
        "groups": {"display_name": "{displayName} ({source.name} group)"},
    })
    return pair, source, target


def _groups(source: Tenant) -> None:
    """A few groups of every kind: five become contacts; a security group without mail and a hidden team do not."""
    directory = source.directory
    for name, mail in (("Sales", "sales"), ("Project Falcon", "falcon"), ("Support", "support")):
        directory.add_group(name, mail=f"{mail}@contoso.com", mailEnabled=True, securityEnabled=False,
                            groupTypes=["Unified"], proxyAddresses=[f"SMTP:{mail}@contoso.com"],
                            description=f"The {name} team", visibility="Public")
    directory.add_group("All staff", mail="allstaff@contoso.com", mailEnabled=True, securityEnabled=False,
                        proxyAddresses=["SMTP:allstaff@contoso.com"], description="Every employee")
    directory.add_group("IT admins", mail="itadmins@contoso.com", mailEnabled=True, securityEnabled=True)
    directory.add_group("Laptop policy")  # a security group without mail
    directory.add_group("Board", mail="board@contoso.com", mailEnabled=True, securityEnabled=False,
                        groupTypes=["Unified"], hideFromAddressLists=True)


def _change_groups(source: Tenant) -> None:
    directory = source.directory
    by_name = {group["displayName"]: group["id"] for group in directory.groups}
    directory.update_group(by_name["Project Falcon"], displayName="Project Falcon (closed)")
    directory.delete_group(by_name["Support"])


def _sync(host: Any, stores: Stores, cloud: SimCloud, title: str) -> dict[str, int]:
    cloud.reset_counts()
    started = time.monotonic()
    host.fire_timer()
    report = host.drain_queue(deadline_seconds=900)
    seconds = time.monotonic() - started
    run = stores.runs.recent(PAIR_ID, limit=1)[0]
    outcomes = Counter(
        row.last_op.split(":", 1)[1]
        for row in stores.contacts.rows(PAIR_ID)
        if row.last_run_id == run.run_id and ":" in row.last_op
    )
    exchange = {key[1]: n for key, n in cloud.counts.snapshot().items() if isinstance(key, tuple) and key[0] == "exchange"}
    print(f"\n{title}: run {run.run_id}, {'full round' if run.full else 'incremental'}, {seconds:.1f} s")
    rows: list[list[object]] = [[f"contacts {name}", n] for name, n in sorted(outcomes.items())]
    rows.append(["users unchanged", run.counts.get("unchanged", 0)])
    rows += [[f"groups {k.removeprefix('groups_')}", n] for k, n in sorted(run.counts.items())
             if k.startswith("groups_") and n and not k.startswith("groups_skipped_")]
    rows += [[f"groups skipped: {k.removeprefix('groups_skipped_')}", n] for k, n in sorted(run.counts.items())
             if k.startswith("groups_skipped_")]
    rows += [[f"users skipped: {k.removeprefix('skipped_')}", n] for k, n in sorted(run.counts.items())
             if k.startswith("skipped_")]
    rows.append(["ops failed and poisoned", report.poisoned])
    rows.append(["Graph requests", cloud.counts["graph"]])
    rows.append(["Exchange requests", cloud.counts["exchange"]])
    rows += [[f"  {cmdlet}", n] for cmdlet, n in sorted(exchange.items())]
    rows.append(["token requests", cloud.counts["token"]])
    table(["what", "count"], rows)
    return {**outcomes, "exchange": cloud.counts["exchange"]}


def _check(pair: TenantPair, source: Tenant, target: Tenant, stores: Stores) -> bool:
    """Compare every in-scope user's desired contact with what the simulated Exchange holds."""
    mapper = ContactMapper(pair)
    anchor_attribute = pair.contact.anchor_attribute
    by_anchor = {c.get(anchor_attribute): c for c in target.exchange.contacts() if c.get(anchor_attribute)}
    conflicts = {row.source_id for row in stores.contacts.rows(PAIR_ID, status="conflict")}
    expected, mismatched = 0, []
    for user in source.directory.users:
        decision = decide_scope(pair, user)
        if not decision.in_scope or user["id"] in conflicts:
            continue
        expected += 1
        desired = mapper.map(user, decision.address).contact
        actual = by_anchor.get(pair.anchor(user["id"]))
        if actual is None:
            mismatched.append(f"{user['id']}: no contact")
            continue
        for name in COMPARED:
            value = str(actual.get(name) or "")
            if name == "CountryOrRegion" and value:
                value = country_code(value) or value  # Exchange answers with the country's name
            if value != str(desired.get(name) or ""):
                mismatched.append(f"{user['id']}: {name} is {actual.get(name)!r}, expected {desired.get(name)!r}")
    mapper_of_groups = GroupMapper(pair)
    for group in source.directory.groups:
        decision = decide_group_scope(pair, group)
        if not decision.in_scope:
            continue
        expected += 1
        desired = mapper_of_groups.map(group, decision.address).contact
        actual = by_anchor.get(pair.anchor(group["id"]))
        if actual is None:
            mismatched.append(f"group {group['id']}: no contact")
            continue
        mismatched += [f"group {group['id']}: {name} is {actual.get(name)!r}, expected {desired.get(name)!r}"
                       for name in ("DisplayName", "Notes") if str(actual.get(name) or "") != desired[name]]
    extra = len(by_anchor) - expected
    untouched = all(c.get(anchor_attribute) in (None, "") for c in target.exchange.contacts() if c["Name"].startswith("partner-"))
    print(f"\ncheck: {expected} in-scope users and groups, {len(by_anchor)} ctcs contacts, {len(conflicts)} conflicts reported, "
          f"{len(mismatched)} attribute mismatches, {max(extra, 0)} extra contacts, "
          f"contacts ctcs did not create untouched: {'yes' if untouched else 'NO'}")
    for line in mismatched[:10]:
        print(f"  {line}")
    return not mismatched and extra == 0 and untouched


def demo(users: int = 2000, changes: int = 80, seed: int = 1) -> int:
    process = azurite.start()
    try:
        os.environ.update(_storage_settings())
        with SimCloud.start() as cloud, tempfile.TemporaryDirectory() as workdir:
            cloud.delta_delay.max_seconds = 0.0  # the demo shows ctcs's rounds, not Graph's processing delay
            previous = cloud.apply_client_env()
            try:
                pair, source, target = _tenants(cloud, Path(workdir), users, seed)
                from sim.host import LocalHost  # imports function_app, which reads the settings set above

                stores = Stores.from_settings()
                stores.pairs.add(pair)
                print(f"ctcs demo: {users} generated users in {source.name} ({source.domain}) -> "
                      f"mail contacts in {target.name} ({target.domain})")
                print(f"simulated tenants at {cloud.endpoints['authority']} (authority), {cloud.endpoints['graph']} "
                      f"(Graph), {cloud.endpoints['exchange']} (Exchange); storage: Azurite")
                host = LocalHost()
                _sync(host, stores, cloud, "First sync")
                done = Counter(what for what, _ in mutate(source.directory, random.Random(seed), changes))
                _change_groups(source)
                done.update({"group renamed": 1, "group deleted": 1})
                print(f"\nsource changes: {', '.join(f'{n} {what}' for what, n in sorted(done.items()))}")
                _sync(host, stores, cloud, "Incremental sync")
                cloud.reset_counts()
                host.fire_timer()
                host.drain_queue(deadline_seconds=60)
                print(f"\nidle run (no changes): {cloud.counts['graph']} Graph and {cloud.counts['exchange']} Exchange requests")
                ok = _check(pair, source, target, stores)
            finally:
                SimCloud.restore_env(previous)
        print("\ndemo", "finished: the target matches the source" if ok else "FAILED: the target does not match")
        return 0 if ok else 1
    finally:
        azurite.stop(process)
