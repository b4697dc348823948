"""Shared setup of the reliability scenarios: the whole path, end to end, against one simulated cloud.

    timer (function_app.sync_timer) → Graph users/delta (msgraph-sdk) → plan → queue (Azurite)
        → worker (function_app.apply_contact_op, driven by sim.host.LocalHost) → Exchange admin API (httpx)

Every scenario builds a pair between two fresh simulated tenants with `make_sync(...)` (the source signs in with
a client secret from `env:`, the target with a certificate from `file:`, both over loopback HTTPS), changes the
source or injects faults, runs the functions, and then checks the *outcome*: `SyncPair.assert_in_step()` computes
the contacts the source calls for (sync.scope + sync.mapping) and compares every attribute with what the
simulated Exchange holds, and `SyncPair.unowned()` snapshots every recipient ctcs did not create so a test can show
they were never touched.

Numbers a scenario wants in the reliability table (docs/reliability.md) go through the `record` fixture; with
CTCS_RELIABILITY_RESULTS=<file> they are written there as JSON when the package finishes.
"""

from __future__ import annotations

import base64
import binascii
import copy
import json
import os
import secrets
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from azure.data.tables import TableServiceClient
from azure.storage.queue import QueueServiceClient

import function_app
from sim import SimCloud, Tenant, make_client_certificate
from sim.host import HostReport, LocalHost
from sync.app.wiring.runtime import Runtime
from sync.contract.pairs import TenantPair, parse_pair
from sync.core.mapping import ContactMapper
from sync.core.scope import decide_scope
from sync.state.contacts import ContactRow
from sync.state.runs import RunRecord
from tests.support.compare import contact_differences
from tests.support.factories import merged
from tests.support.sim_pairs import CertificateLogin, clean_cloud, sim_pair

PAIR_ID = "contoso-to-fabrikam"
SECRET_ENV = "CTCS_SECRET_RELIABILITY_GRAPH"
RESULTS_ENV = "CTCS_RELIABILITY_RESULTS"
_RESULTS: dict[str, dict[str, Any]] = {}


# --- the simulated cloud and the credentials ------------------------------------------------------------------------


@pytest.fixture(scope="package")
def cloud() -> Iterator[SimCloud]:
    """One simulated cloud for the package, trusted through the environment (restored afterwards)."""
    with SimCloud.trusted() as sim_cloud:
        yield sim_cloud


@dataclass(frozen=True)
class Credentials:
    """What the pairs sign in with: a Graph client secret (env:) and an Exchange certificate (file:)."""

    secret: str
    certificate_pem: bytes  # public certificate, registered on the target app
    key_file: Path  # private key + certificate, PEM: what `file:` points at
    private_pem: bytes


@pytest.fixture(scope="package")
def credentials(tmp_path_factory: pytest.TempPathFactory) -> Credentials:
    certificate = make_client_certificate(None, common_name="ctcs reliability")
    key_file = tmp_path_factory.mktemp("reliability-credentials") / "fabrikam-exo.pem"
    key_file.write_bytes(certificate.pem_bytes)
    return Credentials(secrets.token_urlsafe(32), certificate.cert_pem, key_file, certificate.pem_bytes)


@pytest.fixture(autouse=True)
def _clean_cloud(request: pytest.FixtureRequest) -> Iterator[None]:
    """Faults and counters are cloud-wide: each scenario starts with none and zero."""
    yield from clean_cloud(request, seed=0)


# --- results for docs/reliability.md ----------------------------------------------------------------------------------


@pytest.fixture(scope="package", autouse=True)
def _write_results() -> Iterator[None]:
    yield
    path = os.environ.get(RESULTS_ENV)
    if path and _RESULTS:
        previous = json.loads(Path(path).read_text()) if Path(path).is_file() else {}
        Path(path).write_text(json.dumps({**previous, **_RESULTS}, indent=2, sort_keys=True, default=str))


@pytest.fixture
def record(request: pytest.FixtureRequest) -> Callable[..., None]:
    """`record(key=value, ...)`: numbers of this scenario for the table of docs/reliability.md."""

    def put(**values: Any) -> None:
        _RESULTS.setdefault(request.node.name, {}).update(values)

    return put


# --- a pair between two fresh tenants --------------------------------------------------------------------------------


def exchange_counts(sim_cloud: SimCloud) -> dict[str, int]:
    """Exchange requests by cmdlet since the last reset."""
    return {str(key[1]): n for key, n in sim_cloud.counts.snapshot().items()
            if isinstance(key, tuple) and len(key) == 2 and key[0] == "exchange"}


@dataclass
class SyncPair:
    """A pair between two fresh simulated tenants, its storage, and the host driving the function app."""

    cloud: SimCloud
    source: Tenant
    target: Tenant
    pair: TenantPair
    host: LocalHost
    storage_env: dict[str, str]
    definition: dict[str, Any]
    calls: list[tuple[str, dict[str, Any], int]] = field(default_factory=list)  # (cmdlet, params, objects answered)

    @property
    def rt(self) -> Runtime:
        return function_app.runtime()

    # source ------------------------------------------------------------------------------------------------------
    def add_user(self, name: str, **attributes: Any) -> str:
        local = name.lower().replace(" ", ".")
        user = {
            "displayName": name, "givenName": name.split()[0], "surname": name.split()[-1],
            "mail": f"{local}@{self.source.domain}", "userPrincipalName": f"{local}@{self.source.domain}",
            "department": "Sales", "jobTitle": "Rep", "companyName": "Contoso", "city": "Seattle", "country": "US",
            **attributes,
        }
        return self.source.directory.add_user({key: value for key, value in user.items() if value is not None})

    def add_users(self, n: int, *, start: int = 0, **attributes: Any) -> list[str]:
        return [self.add_user(f"User {i:04d}", **attributes) for i in range(start, start + n)]

    # running -----------------------------------------------------------------------------------------------------
    def plan(self) -> None:
        """The timer: plan every enabled pair and queue the ops."""
        self.host.fire_timer()

    def drain(self, deadline_seconds: float = 60.0) -> HostReport:
        report = self.host.drain_queue(deadline_seconds=deadline_seconds)
        assert report.left_in_queue == 0, f"the queue did not drain: {report.as_dict()}"
        return report

    def sync(self, deadline_seconds: float = 60.0) -> HostReport:
        """A timer run and the queue drained through the worker function, as the host would."""
        self.plan()
        return self.drain(deadline_seconds)

    def take_queued(self) -> list[str]:
        """Every op message now in the queue, removed from it (to deliver later, twice, or out of order)."""
        bodies = []
        while messages := self.rt.stores.ops.receive(max_messages=32, visibility_timeout=30):
            for message in messages:
                bodies.append(str(message.content))
                self.rt.stores.ops.delete(message)
        return bodies

    def send(self, bodies: list[str]) -> None:
        for body in bodies:
            self.rt.stores.ops.send_text(body)

    def last_run(self) -> RunRecord:
        return self.rt.stores.runs.recent(self.pair.id, limit=1)[0]

    def replace_pair(self, **overrides: Any) -> TenantPair:
        """Store a changed definition (as `pairs add --replace` does); the worker's pair cache is dropped."""
        self.definition = merged(self.definition, overrides)
        self.pair = parse_pair(self.definition)
        self.rt.stores.pairs.add(self.pair, replace=True)
        self.rt._pairs.clear()
        return self.pair

    # state -------------------------------------------------------------------------------------------------------
    def rows(self) -> dict[str, ContactRow]:
        return {row.source_id: row for row in self.rt.stores.contacts.rows(self.pair.id)}

    def contacts_of(self, user_id: str) -> list[dict[str, Any]]:
        anchor = self.pair.anchor(user_id)
        return [c for c in self.target.exchange.contacts() if c.get(self.pair.contact.anchor_attribute) == anchor]

    def ours(self) -> list[dict[str, Any]]:
        attribute = self.pair.contact.anchor_attribute
        return [c for c in self.target.exchange.contacts() if str(c.get(attribute) or "").startswith(self.pair.anchor_prefix)]

    # expectations ------------------------------------------------------------------------------------------------
    def expected(self) -> dict[str, tuple[str, dict[str, Any], str]]:
        """source id → (anchor, desired contact, hash) for every in-scope source user."""
        mapper = ContactMapper(self.pair)
        wanted = {}
        for user in self.source.directory.users:
            decision = decide_scope(self.pair, user)
            if decision.in_scope:
                mapped = mapper.map(user, decision.address)
                wanted[str(user["id"])] = (self.pair.anchor(str(user["id"])), mapped.contact, mapped.hash)
        return wanted

    def mismatches(self, *, absent: set[str] | frozenset[str] = frozenset(), check_state: bool = True) -> list[str]:
        """Every difference between the target (and ContactState) and what the source calls for.

        `absent`: in-scope users that must have NO contact (a conflict holds their address)."""
        attribute = self.pair.contact.anchor_attribute
        by_anchor: dict[str, list[dict[str, Any]]] = {}
        for contact in self.ours():
            by_anchor.setdefault(str(contact[attribute]), []).append(contact)
        rows = self.rows() if check_state else {}
        problems: list[str] = []
        wanted = self.expected()
        for source_id, (anchor, desired, digest) in wanted.items():
            found = by_anchor.pop(anchor, [])
            if source_id in absent:
                if found:
                    problems.append(f"{source_id}: has {len(found)} contact(s), expected none")
                continue
            if len(found) != 1:
                problems.append(f"{source_id}: {len(found)} contacts, expected 1")
                continue
            problems += [f"{source_id}: {p}" for p in contact_differences(desired, found[0])]
            if check_state:
                row = rows.get(source_id)
                if row is None or row.status != "ok" or row.guid != found[0]["Guid"] or row.hash != digest:
                    problems.append(f"{source_id}: state row {row and (row.status, row.guid, row.hash)} does not "
                                    f"match the contact ({found[0]['Guid']}, {digest})")
        problems += [f"{anchor}: {len(extra)} contact(s) for a user out of scope or gone" for anchor, extra in by_anchor.items()]
        return problems

    def assert_in_step(self, *, absent: set[str] | frozenset[str] = frozenset(), check_state: bool = True) -> int:
        """The target equals the expected contacts, attribute by attribute; returns how many were compared."""
        problems = self.mismatches(absent=absent, check_state=check_state)
        assert not problems, f"{len(problems)} mismatch(es):\n" + "\n".join(problems[:20])
        return len(self.expected()) - len(absent)

    # what ctcs did not create ------------------------------------------------------------------------------------
    def unowned(self) -> dict[str, dict[str, Any]]:
        """Every recipient (soft-deleted ones too) that does not carry this pair's anchor, by Guid."""
        attribute = self.pair.contact.anchor_attribute
        return {
            str(r["Guid"]): r
            for r in self.target.exchange.recipients(include_soft_deleted=True)
            if not str(r.get(attribute) or "").startswith(self.pair.anchor_prefix)
        }

    def assert_untouched(self, before: dict[str, dict[str, Any]]) -> None:
        now = self.unowned()
        changed = [guid for guid, recipient in before.items() if now.get(guid) != recipient]
        assert not changed, f"{len(changed)} recipient(s) ctcs did not create were changed or removed: {changed[:5]}"

    # instrumentation -----------------------------------------------------------------------------------------------
    def record_cmdlets(self) -> None:
        """Keep every cmdlet the target's Exchange runs, with its parameters and how many objects it answered."""
        org = self.target.exchange
        run = org.run

        def recording(cmdlet: str, params: dict[str, Any]) -> list[dict[str, Any]]:
            sent = copy.deepcopy(params)
            result = run(cmdlet, params)
            self.calls.append((cmdlet, sent, len(result)))
            return result

        org.run = recording  # type: ignore[method-assign]


@pytest.fixture
def make_sync(
    cloud: SimCloud, credentials: Credentials, storage_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[..., SyncPair]]:
    """`make_sync(deletion={...}, scope={...}, ...)`: a pair between two fresh tenants, stored, with its host."""
    monkeypatch.setenv(SECRET_ENV, credentials.secret)
    function_app._runtime.clear()  # the worker's Runtime is made from this test's settings on first use

    def build(pair_id: str = PAIR_ID, **overrides: Any) -> SyncPair:
        made = sim_pair(cloud, secret=credentials.secret, secret_env=SECRET_ENV, pair_id=pair_id,
                        certificate=CertificateLogin(credentials.certificate_pem, f"file:{credentials.key_file}"),
                        **overrides)
        function_app.runtime().stores.pairs.add(made.pair)
        return SyncPair(cloud, made.source, made.target, made.pair, LocalHost(visibility_timeout=0), storage_env,
                        made.definition)

    yield build
    function_app._runtime.clear()


@pytest.fixture
def sync(make_sync: Callable[..., SyncPair]) -> SyncPair:
    """A pair with the default definition (delete mode, max 50 deletes / 10 %, conflicts skipped)."""
    return make_sync()


# --- reading everything the app stored -------------------------------------------------------------------------------


def stored_text(storage_env: dict[str, str]) -> dict[str, list[str]]:
    """Every entity of every table of this test, and every message of its queues, as text (where → items)."""
    connection = storage_env["AzureWebJobsStorage"]
    tables = TableServiceClient.from_connection_string(connection)
    found: dict[str, list[str]] = {}
    for name in (storage_env[key] for key in storage_env if key.endswith("_TABLE")):
        client = tables.get_table_client(name)
        found[f"table {name}"] = [json.dumps(dict(entity), default=str, ensure_ascii=False) for entity in client.list_entities()]
    queues = QueueServiceClient.from_connection_string(connection)
    prefix = storage_env["CTCS_OPS_QUEUE"]
    for queue in queues.list_queues(name_starts_with=prefix):
        client = queues.get_queue_client(queue.name)
        found[f"queue {queue.name}"] = [_decoded(str(m.content)) for m in client.peek_messages(max_messages=32)]
    return found


def _decoded(content: str) -> str:
    """A queue message as the trigger reads it (base64), and as stored when it is not base64."""
    try:
        return base64.b64decode(content, validate=True).decode("utf-8", "replace") + "\n" + content
    except (binascii.Error, ValueError):
        return content


REPO = Path(__file__).resolve().parents[2]


def run_cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """`python -m sync ARGS` in a process of its own, with this test's settings (storage, trust, secrets)."""
    return subprocess.run([sys.executable, "-m", "sync", *args], cwd=REPO, env=dict(os.environ), capture_output=True,
                          text=True, timeout=timeout, check=False)
