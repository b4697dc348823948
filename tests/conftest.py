"""Shared fixtures: a real Azurite (started here unless one is already listening), fresh tables and queues per
test, and runtimes wired to in-memory or simulated tenants."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from sim import azurite as azurite_process
from sync.app.wiring.runtime import Runtime
from sync.state.stores import Stores
from tests.support.memory_source import MemorySource
from tests.support.memory_target import MemoryTarget


@pytest.fixture(scope="session", autouse=True)
def _secret_files(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """The tests' `file:` references point into pytest's temporary directory: allow reading there
    (CTCS_SECRET_FILE_DIR), as an operator's settings would for their own directory."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CTCS_SECRET_FILE_DIR", str(tmp_path_factory.getbasetemp()))
        yield


@pytest.fixture(scope="session")
def azurite() -> Iterator[str]:
    """A storage connection string for a running Azurite (started here unless one is already listening)."""
    try:
        process = azurite_process.start()
    except (FileNotFoundError, RuntimeError) as error:
        pytest.exit(str(error), returncode=2)
    yield azurite_process.CONNECTION_STRING
    azurite_process.stop(process)


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
        "CTCS_TARGETS_TABLE": f"targets{suffix}",
        "CTCS_OPS_QUEUE": f"ops-{suffix}",
        "CTCS_PAIR_RUNS_QUEUE": f"ops-{suffix}-runs",  # the ops queue's prefix: cleaned up and read with it
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

