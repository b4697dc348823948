"""Shared fixtures: a real Azurite (started here unless one is already listening), fresh tables and queues per
test, and runtimes wired to in-memory or simulated tenants."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from sync.runtime import Runtime
from sync.state.stores import Stores
from tests.support.memory_source import MemorySource
from tests.support.memory_target import MemoryTarget

ROOT = Path(__file__).resolve().parent.parent
AZURITE_PORTS = (10000, 10001, 10002)


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _azurite_command() -> list[str]:
    local = Path(os.environ.get("CTCS_AZURITE") or ROOT / ".tools" / "node_modules" / ".bin" / "azurite")
    found = str(local) if local.exists() else shutil.which("azurite")
    if not found:
        pytest.exit("Azurite is not installed: run `bash .ci/run` (or `npm install --prefix .tools azurite`)", returncode=2)
    return [found, "--inMemoryPersistence", "--skipApiVersionCheck", "--disableTelemetry", "--silent"]


@pytest.fixture(scope="session")
def azurite() -> Iterator[str]:
    """A storage connection string for a running Azurite."""
    process = None
    if not all(_listening(port) for port in AZURITE_PORTS):
        process = subprocess.Popen(_azurite_command(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while not all(_listening(port) for port in AZURITE_PORTS):
            if time.monotonic() > deadline or process.poll() is not None:
                process.kill()
                pytest.exit("Azurite did not start on 127.0.0.1:10000-10002", returncode=2)
            time.sleep(0.2)
    yield "UseDevelopmentStorage=true"
    if process is not None:
        process.terminate()
        process.wait(timeout=10)


@pytest.fixture
def storage_env(azurite: str, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """App settings naming fresh tables and queues, so tests never see each other's rows."""
    suffix = uuid.uuid4().hex[:10]
    env = {
        "AzureWebJobsStorage": azurite,
        "CTCS_PAIRS_TABLE": f"pairs{suffix}",
        "CTCS_PAIR_STATE_TABLE": f"pairstate{suffix}",
        "CTCS_CONTACT_STATE_TABLE": f"contacts{suffix}",
        "CTCS_RUNS_TABLE": f"runs{suffix}",
        "CTCS_OPS_QUEUE": f"ops-{suffix}",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return env


@pytest.fixture
def stores(storage_env: dict[str, str]) -> Stores:
    return Stores.from_settings(storage_env)


@pytest.fixture
def source() -> MemorySource:
    return MemorySource()


@pytest.fixture
def target() -> MemoryTarget:
    return MemoryTarget()


@pytest.fixture
def memory_runtime(stores: Stores, source: MemorySource, target: MemoryTarget) -> Runtime:
    """Real Azurite state and queue, in-memory tenants."""
    return Runtime(stores, lambda pair: source, lambda pair: target)

