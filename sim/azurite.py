"""Find or start Azurite, the Storage emulator, on its default loopback ports (or a private one on free ports, for a
benchmark that must not share the emulator with anything else)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PORTS = (10000, 10001, 10002)  # blob, queue, table: what UseDevelopmentStorage=true points at
CONNECTION_STRING = "UseDevelopmentStorage=true"
# The emulator's well-known development account (published in Azurite's documentation; not a secret).
DEV_ACCOUNT = "devstoreaccount1"
DEV_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


def listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def running() -> bool:
    return all(listening(port) for port in PORTS)


def command() -> list[str]:
    local = Path(os.environ.get("CTCS_AZURITE") or ROOT / ".tools" / "node_modules" / ".bin" / "azurite")
    found = str(local) if local.exists() else shutil.which("azurite")
    if not found:
        raise FileNotFoundError("Azurite is not installed: run `python3 dev.py test` once, or `npm install --prefix .tools azurite`")
    return [found, "--inMemoryPersistence", "--skipApiVersionCheck", "--disableTelemetry", "--silent"]


def start(timeout: float = 30.0) -> subprocess.Popen[bytes] | None:
    """Start Azurite unless one is already listening; returns the process to stop, or None."""
    if running():
        return None
    process = subprocess.Popen(command(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + timeout
    while not running():
        if time.monotonic() > deadline or process.poll() is not None:
            process.kill()
            raise RuntimeError("Azurite did not start on 127.0.0.1:10000-10002")
        time.sleep(0.2)
    return process


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_private(timeout: float = 30.0) -> tuple[subprocess.Popen[bytes], str]:
    """A private Azurite on three free ports (in memory); returns the process to stop and its connection string."""
    blob, queue, table = free_port(), free_port(), free_port()
    ports = ["--blobPort", str(blob), "--queuePort", str(queue), "--tablePort", str(table)]
    process = subprocess.Popen([*command(), *ports], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + timeout
    while not all(listening(port) for port in (blob, queue, table)):
        if time.monotonic() > deadline or process.poll() is not None:
            process.kill()
            raise RuntimeError(f"a private Azurite did not start on 127.0.0.1:{blob},{queue},{table}")
        time.sleep(0.2)
    base = "http://127.0.0.1"
    connection = (f"DefaultEndpointsProtocol=http;AccountName={DEV_ACCOUNT};AccountKey={DEV_KEY};"
                  f"BlobEndpoint={base}:{blob}/{DEV_ACCOUNT};QueueEndpoint={base}:{queue}/{DEV_ACCOUNT};"
                  f"TableEndpoint={base}:{table}/{DEV_ACCOUNT};")
    return process, connection


def stop(process: subprocess.Popen[bytes] | None) -> None:
    if process is not None:
        process.terminate()
        process.wait(timeout=10)
