"""Shared fixtures: a real Azurite (started here unless one is already listening), fresh tables and queues per
test, and runtimes wired to in-memory or simulated tenants."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

from sim import azurite as azurite_process
from sync.app.wiring.runtime import Runtime
from sync.state.stores import Stores
from tests.support.memory_source import MemorySource
from tests.support.memory_target import MemoryTarget

# The simulated users/delta shows a change up to 30 s after it is made, as Graph's does (sim.delta.DeltaDelay). The
# suite's tests assert what one run finds right after a change, so they switch the delay off here, for every
# simulated cloud and every process they start; the tests of the delay itself and of what ctcs does about it
# (tests/sim/test_delta_delay.py, tests/functions/test_notification_delivery.py) switch it on for their own cloud.
os.environ.setdefault("CTCS_SIM_DELTA_DELAY", "0")


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

