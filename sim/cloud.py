"""`SimCloud`: the simulated Microsoft cloud (token authority, Graph, Exchange admin API) over loopback HTTPS.

Each service is a Starlette app served by its own uvicorn server in a daemon thread, on a random free port of
127.0.0.1, so every base URL is a bare `https://127.0.0.1:PORT` like the real clouds. State lives in plain Python
objects guarded by one lock (`cloud.lock`); handlers are short and synchronous under that lock, which keeps the
three event-loop threads and the test thread from stepping on each other.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import shutil
import socket
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import uvicorn
from starlette.applications import Starlette

from sim.authority import build_authority_app
from sim.certs import make_server_tls
from sim.delta import DeltaDelay
from sim.exchange import build_exchange_app
from sim.exchange_limits import ExchangeLimits, ExchangeProfile
from sim.faults import Faults, RequestCounts
from sim.graph import GraphLatency, build_graph_app
from sim.profile import SimProfile
from sim.subscriptions import SubscriptionService
from sim.tenant import Tenant
from sim.tokens import Forbidden, TokenClaims, TokenRejected, TokenSigner

# Roles that let an app use each service (either one of a tuple suffices).
REQUIRED_ROLES = {
    "graph": ("User.Read.All", "Directory.Read.All"),
    "exchange": ("Exchange.ManageAsApp",),
}


@dataclass(frozen=True)
class ManagedIdentity:
    """A user-assigned managed identity of the (simulated) Function App, living in its hosting tenant."""

    client_id: str
    object_id: str
    tenant_id: str


class _QuietShutdown(logging.Filter):
    """uvicorn logs "Cancel 0 running task(s)" at ERROR when idle keep-alive clients outlive shutdown: not an error here."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Cancel ")


logging.getLogger("uvicorn.error").addFilter(_QuietShutdown())


class Listener:
    """One uvicorn server on a pre-bound loopback socket, run in a daemon thread."""

    def __init__(self, name: str, certfile: str, keyfile: str) -> None:
        self.name = name
        self.socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        # asyncio only sets TCP_NODELAY on sockets it creates itself; a pre-bound listener must carry it, or each
        # small response waits ~40 ms for a delayed ACK (Linux copies the option to accepted connections).
        self.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.socket.bind(("127.0.0.1", 0))
        self.port: int = self.socket.getsockname()[1]
        self._certfile, self._keyfile = certfile, keyfile
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def start(self, app: Starlette) -> None:
        config = uvicorn.Config(
            app, ssl_certfile=self._certfile, ssl_keyfile=self._keyfile, log_level="warning",
            access_log=False, lifespan="off", timeout_graceful_shutdown=1,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self.socket]}, name=f"sim-{self.name}", daemon=True
        )
        self._thread.start()

    def wait_started(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while self._server is not None and not self._server.started:
            if time.monotonic() > deadline or (self._thread is not None and not self._thread.is_alive()):
                raise RuntimeError(f"simulated {self.name} service did not start")
            time.sleep(0.01)

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=5)
        self.socket.close()


class SimCloud:
    """The simulated cloud; see the `sim` package docstring for usage."""

    def __init__(
        self,
        *,
        token_lifetime: int = 3600,
        seed: int = 0,
        exchange_profile: ExchangeProfile | None = None,
        realistic_graph: bool | None = None,
    ) -> None:
        self._tmpdir = tempfile.mkdtemp(prefix="ctcs-sim-")
        tls = make_server_tls(self._tmpdir)
        self.ca_bundle_path: str = tls.ca_bundle_path
        self.tls_files: tuple[str, str] = (tls.certfile, tls.keyfile)  # for other loopback listeners (sim.host)
        self._listeners = {name: Listener(name, tls.certfile, tls.keyfile) for name in ("authority", "graph", "exchange")}
        self.endpoints: dict[str, str] = {name: listener.url for name, listener in self._listeners.items()}
        self.lock = threading.RLock()
        self.counts = RequestCounts()
        self.faults = Faults(self.counts, seed=seed)
        # Graph as slow as Microsoft's (sim.graph.GraphLatency); None: the CTCS_SIM_REALISTIC_GRAPH variable decides.
        self.graph_latency = GraphLatency.switch(realistic_graph, seed=seed)
        self.signer = TokenSigner(self.endpoints["authority"])
        self.token_lifetime = token_lifetime  # seconds; tests may lower it
        self.clock_skew = 0.0  # seconds the token authority's clock is ahead (negative: behind) of the client's
        self.tenants: dict[str, Tenant] = {}
        # How hard each new tenant's Exchange pushes back (sim.exchange_limits); the environment's switch by default.
        self.exchange_profile = exchange_profile if exchange_profile is not None else ExchangeProfile.from_environment()
        # A recorded tenant's behaviour (sim.profile): CTCS_SIM_PROFILE=FILE, written by `pairs test --deep --record`.
        self.profile = SimProfile.from_environment()
        self.exchange_profile = self.profile.exchange_profile(self.exchange_profile)
        self._replaced_properties = self.profile.apply_properties()  # put back when the cloud stops
        self.identity_header = secrets.token_urlsafe(24)
        self.hosting_tenant_id = str(uuid.uuid4())
        self.managed_identities: dict[str, ManagedIdentity] = {}
        self.managed_identity = self.add_managed_identity()
        # How long after a change users/delta shows it (sim.delta.DeltaDelay): CTCS_SIM_DELTA_DELAY, else 30 s.
        self.delta_delay = DeltaDelay.switch(seed=seed)
        # Graph's change-notification subscriptions and their delivery thread (sim.subscriptions).
        self.subscriptions = SubscriptionService(self, seed=seed)
        self._started = False

    # lifecycle -------------------------------------------------------------------------------------------------
    @classmethod
    def start(cls, **kwargs: Any) -> SimCloud:
        """Create the cloud and start its three HTTPS listeners (returns once they accept connections)."""
        cloud = cls(**kwargs)
        cloud._start()
        return cloud

    def _start(self) -> None:
        apps = {
            "authority": build_authority_app(self),
            "graph": build_graph_app(self),
            "exchange": build_exchange_app(self),
        }
        for name, listener in self._listeners.items():
            listener.start(apps[name])
        for listener in self._listeners.values():
            listener.wait_started(timeout=10)
        self.subscriptions.start()
        self._started = True

    def stop(self) -> None:
        self.subscriptions.stop()
        for listener in self._listeners.values():
            listener.stop()
        self._started = False
        SimProfile.restore_properties(self._replaced_properties)
        shutil.rmtree(self._tmpdir, ignore_errors=True)

    def __enter__(self) -> SimCloud:
        if not self._started:
            self._start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()

    @classmethod
    @contextlib.contextmanager
    def trusted(cls, **kwargs: Any) -> Iterator[SimCloud]:
        """A started cloud whose CA this process trusts (`apply_client_env`) until the block ends; then the
        environment is restored and the listeners stop. What test fixtures and in-process tools want."""
        with cls.start(**kwargs) as cloud:
            previous = cloud.apply_client_env()
            try:
                yield cloud
            finally:
                cls.restore_env(previous)

    # environment -----------------------------------------------------------------------------------------------
    def client_env(self) -> dict[str, str]:
        """Environment a client process needs: CA trust for httpx and requests, and the managed-identity endpoint."""
        return {
            "SSL_CERT_FILE": self.ca_bundle_path,
            "REQUESTS_CA_BUNDLE": self.ca_bundle_path,
            "IDENTITY_ENDPOINT": f"{self.endpoints['authority']}/msi/token",
            "IDENTITY_HEADER": self.identity_header,
        }

    def apply_client_env(self) -> dict[str, str | None]:
        """Put `client_env()` into os.environ (for in-process clients); returns the previous values for restore_env."""
        previous = {key: os.environ.get(key) for key in self.client_env()}
        os.environ.update(self.client_env())
        return previous

    @staticmethod
    def restore_env(previous: dict[str, str | None]) -> None:
        for key, value in previous.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value

    # tenants and identities ----------------------------------------------------------------------------------------
    def add_tenant(self, tenant_id: str | None = None, domain: str | None = None, name: str | None = None) -> Tenant:
        tenant_id = (tenant_id or str(uuid.uuid4())).lower()
        name = name or f"Tenant {tenant_id[:8]}"
        domain = domain or f"{''.join(c for c in name.lower() if c.isalnum()) or 'tenant'}.onmicrosoft.com"
        with self.lock:
            if tenant_id in self.tenants or self.find_tenant(domain) is not None:
                raise ValueError(f"tenant {tenant_id} / {domain} already exists")
            tenant = Tenant(tenant_id, domain, name)
            tenant.exchange.lock = self.lock
            tenant.exchange.limits = ExchangeLimits(self.exchange_profile)
            tenant.directory.lock = self.lock
            self.tenants[tenant.tenant_id] = tenant
        return tenant

    def find_tenant(self, id_or_domain: str) -> Tenant | None:
        key = id_or_domain.lower()
        with self.lock:
            if key in self.tenants:
                return self.tenants[key]
            return next((t for t in self.tenants.values() if t.domain == key), None)

    def add_managed_identity(self, client_id: str | None = None, object_id: str | None = None) -> ManagedIdentity:
        identity = ManagedIdentity(
            (client_id or str(uuid.uuid4())).lower(), (object_id or str(uuid.uuid4())).lower(), self.hosting_tenant_id
        )
        self.managed_identities[identity.client_id] = identity
        return identity

    def find_managed_identity(self, client_or_object_id: str | None) -> ManagedIdentity | None:
        if not client_or_object_id:
            return self.managed_identity  # the "system-assigned" default
        key = client_or_object_id.lower()
        return self.managed_identities.get(key) or next(
            (mi for mi in self.managed_identities.values() if mi.object_id == key), None
        )

    # tokens --------------------------------------------------------------------------------------------------------
    def known_resources(self) -> tuple[str, ...]:
        return (self.endpoints["graph"], self.endpoints["exchange"])

    def issue_token(self, tenant: Tenant, client_id: str, service: str, *, lifetime: int | None = None,
                    roles: tuple[str, ...] | None = None) -> str:
        """Mint an access token directly (tests: expired = negative lifetime, wrong audience = other service)."""
        app = tenant.apps.get(client_id.lower())
        token, _ = self.signer.issue(
            tenant_id=tenant.tenant_id, client_id=client_id.lower(), audience=self.endpoints[service],
            roles=roles if roles is not None else (app.roles if app else ()),
            lifetime=self.token_lifetime if lifetime is None else lifetime,
        )
        return token

    def authenticate(self, token: str | None, service: str, tenant_hint: str | None = None) -> tuple[Tenant, TokenClaims]:
        """Validate a bearer token for `service`; raise TokenRejected (→401) or Forbidden (→403)."""
        if not token:
            raise TokenRejected("Access token is empty.")
        claims = self.signer.verify(token, audience=self.endpoints[service])
        tenant = self.find_tenant(claims.tenant_id)
        if tenant is None:
            raise TokenRejected("Access token is from an unknown tenant.")
        if tenant_hint is not None and self.find_tenant(tenant_hint) is not tenant:
            raise TokenRejected("Access token was issued for another tenant.")
        if not set(claims.roles) & set(REQUIRED_ROLES[service]):
            raise Forbidden(f"The app lacks the {' or '.join(REQUIRED_ROLES[service])} permission.")
        return tenant, claims

    def reset_counts(self) -> None:
        self.counts.reset()
