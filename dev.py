#!/usr/bin/env python3
"""Developer and evaluator entry point; needs only Python 3.11+ and Node.js on the machine.

    python3 dev.py demo      sync simulated tenants end to end (Azurite + simulated Graph and Exchange)
    python3 dev.py test      run the whole test suite (extra arguments go to pytest)
    python3 dev.py lint      ruff, mypy (strict) and import-linter (the layer contract)
    python3 dev.py bench     the planning benchmark (100,000 users)
    python3 dev.py bench exchange   a first load of 10,000 users into a realistic Exchange (before/after issue 12)
    python3 dev.py bench planning-e2e   100,000 users and 50 pairs through the Functions path, before and after
    python3 dev.py bench reconcile   reconcile rounds of 10,000 contacts: idle, after a lost ContactState, and before
    python3 dev.py bench groups     2,000 source groups as contacts: requests per run, hide flags per GET or $batch
    python3 dev.py bench notifications  latency of 100 changes: change notifications against the timer alone

Each command first installs what it needs: a virtual environment in .venv with requirements-dev.txt, and
Azurite (npm, pinned) in .tools. Later runs reuse both and reinstall only when the requirements change.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
TOOLS = ROOT / ".tools"
AZURITE_VERSION = "3.37.0"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
PYTHON = BIN / ("python.exe" if os.name == "nt" else "python")


def say(message: str) -> None:
    print(f"[dev] {message}", flush=True)


def run(*command: str | Path, **kwargs: object) -> int:
    return subprocess.call([str(part) for part in command], cwd=ROOT, **kwargs)  # type: ignore[call-overload]


def ensure_python_packages() -> None:
    requirements = ROOT / "requirements-dev.txt"
    digest = hashlib.sha256(
        requirements.read_bytes() + (ROOT / "requirements.txt").read_bytes()
    ).hexdigest()
    marker = VENV / ".requirements-sha256"
    if marker.exists() and marker.read_text() == digest and PYTHON.exists():
        return
    if not PYTHON.exists():
        say(f"creating a virtual environment in {VENV.name}/")
        venv.EnvBuilder(with_pip=True, clear=True).create(VENV)
    say("installing Python packages from requirements-dev.txt (first run takes a minute)")
    if run(PYTHON, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "-r", requirements) != 0:
        sys.exit("[dev] pip install failed; see the messages above")
    marker.write_text(digest)


def azurite_path() -> Path:
    return TOOLS / "node_modules" / ".bin" / ("azurite.cmd" if os.name == "nt" else "azurite")


def ensure_azurite() -> None:
    if azurite_path().exists():
        return
    npm = shutil.which("npm")
    if npm is None:
        sys.exit("[dev] Node.js and npm are needed for Azurite, the Storage emulator: install Node.js 18 or newer")
    say(f"installing Azurite {AZURITE_VERSION} (Storage emulator) into {TOOLS.name}/")
    TOOLS.mkdir(exist_ok=True)
    code = run(npm, "install", "--prefix", TOOLS, "--no-audit", "--no-fund", "--loglevel=error", f"azurite@{AZURITE_VERSION}")
    if code != 0 or not azurite_path().exists():
        sys.exit("[dev] npm could not install Azurite; see the messages above")


def main(argv: list[str]) -> int:
    command, rest = (argv[0], argv[1:]) if argv else ("help", [])
    if command not in ("demo", "test", "lint", "bench"):
        print(__doc__)
        return 0 if command in ("help", "-h", "--help") else 2
    ensure_python_packages()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "CTCS_AZURITE": str(azurite_path())}
    if command == "lint":
        ruff = run(PYTHON, "-m", "ruff", "check", ".", env=env)
        mypy = run(PYTHON, "-m", "mypy", env=env)  # strict, on sync/, sim/ and function_app.py (pyproject.toml)
        layers = run(BIN / "lint-imports", "--no-cache", env=env)  # the import contracts in pyproject.toml
        return ruff or mypy or layers
    ensure_azurite()
    if command == "demo":
        return run(PYTHON, "-m", "sim", "demo", *rest, env=env)
    if command == "bench":
        # The planning and Exchange benchmarks time rounds, not Graph's processing delay (sim.delta.DeltaDelay);
        # the notification benchmark sets its own (--delta-delay).
        env.setdefault("CTCS_SIM_DELTA_DELAY", "0")
        if rest[:1] == ["exchange"]:
            return run(PYTHON, "benchmarks/exchange_benchmark.py", *rest[1:], env=env)
        if rest[:1] == ["groups"]:
            return run(PYTHON, "benchmarks/group_contacts.py", *rest[1:], env=env)
        if rest[:1] == ["planning-e2e"]:
            return run(PYTHON, "benchmarks/planning_e2e.py", *rest[1:], env=env)
        if rest[:1] == ["reconcile"]:
            return run(PYTHON, "benchmarks/reconcile_benchmark.py", *rest[1:], env=env)
        if rest[:1] == ["notifications"]:
            return run(PYTHON, "benchmarks/notification_latency.py", *rest[1:], env=env)
        return run(PYTHON, "benchmarks/plan_benchmark.py", *rest, env=env)
    code = run(PYTHON, "-m", "pytest", *rest, env=env)
    if code == 5:
        say("pytest collected no tests: that is a failure")
        return 1
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
