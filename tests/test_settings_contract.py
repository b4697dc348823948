"""SETTINGS (sync/settings.py), local.settings.sample.json and the settings the code reads stay in step.

"Read" means `setting("X"`, `required_setting("X"`, `int_setting("X"` or `steps_setting("X"` in sync/ and
function_app.py, `%X%` in function_app.py's bindings, and a binding's `connection="X"` (the host reads X and its
`X__*` family).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from sync.settings import SETTINGS

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "local.settings.sample.json"
# Declared, but not for local runs: locally storage is Azurite by connection string and Key Vault/Graph use `az login`.
NOT_LOCAL = {
    "AzureWebJobsStorage__tableServiceUri", "AzureWebJobsStorage__queueServiceUri", "AzureWebJobsStorage__blobServiceUri",
    "AzureWebJobsStorage__credential", "AzureWebJobsStorage__clientId", "AZURE_CLIENT_ID",
}
HOST_ONLY = {"FUNCTIONS_WORKER_RUNTIME"}  # read by the Functions host, not by ctcs
READ_CALL = re.compile(r"\b(?:required_setting|int_setting|steps_setting|setting)\(\s*\"([A-Za-z0-9_]+)\"")
BINDING_TOKEN = re.compile(r"%([A-Za-z0-9_]+)%")
CONNECTION = re.compile(r"connection=\"([A-Za-z0-9_]+)\"")


def declared() -> dict[str, str | None]:
    return {s.name: s.default for s in SETTINGS}


def read_by_code(root: Path = ROOT) -> set[str]:
    names: set[str] = set()
    for path in [*sorted((root / "sync").rglob("*.py")), root / "function_app.py"]:
        names |= set(READ_CALL.findall(path.read_text(encoding="utf-8")))
    app = (root / "function_app.py").read_text(encoding="utf-8")
    names |= set(BINDING_TOKEN.findall(app))
    for connection in CONNECTION.findall(app):
        names |= {connection} | {name for name in declared() if name.startswith(f"{connection}__")}
    return names


def contract_problems(settings: dict[str, str | None], sample: dict[str, object], read: set[str]) -> list[str]:
    problems = [f"{name} is read but not declared in SETTINGS" for name in sorted(read - set(settings))]
    problems += [f"{name} is declared but nothing reads it" for name in sorted(set(settings) - read)]
    if sample.get("IsEncrypted") is not False:
        problems.append("the sample must say IsEncrypted: false")
    values = sample.get("Values")
    if not isinstance(values, dict):
        return [*problems, "the sample has no Values object"]
    if values.get("FUNCTIONS_WORKER_RUNTIME") != "python":
        problems.append("the sample must set FUNCTIONS_WORKER_RUNTIME to python")
    local = set(settings) - NOT_LOCAL
    problems += [f"{name} is missing from the sample" for name in sorted(local - set(values))]
    problems += [f"{name} is in the sample but not declared" for name in sorted(set(values) - set(settings) - HOST_ONLY)]
    problems += [f"{name} is in the sample but is not a local setting" for name in sorted(set(values) & NOT_LOCAL)]
    for name in sorted(local & set(values)):
        default = settings[name]
        if default is not None and values[name] != default:
            problems.append(f"{name} is {values[name]!r} in the sample, SETTINGS says {default!r}")
    if values.get("AzureWebJobsStorage") != "UseDevelopmentStorage=true":
        problems.append("the sample's AzureWebJobsStorage must be UseDevelopmentStorage=true (Azurite)")
    return problems


def test_settings_sample_and_code_agree() -> None:
    sample = json.loads(SAMPLE.read_text(encoding="utf-8"))
    assert contract_problems(declared(), sample, read_by_code()) == []


def test_the_check_reads_what_the_code_reads() -> None:
    read = read_by_code()
    assert {"SYNC_SCHEDULE", "CTCS_OPS_QUEUE", "CTCS_LEASE_SECONDS", "AzureWebJobsStorage__blobServiceUri"} <= read


def test_the_check_fails_on_drift() -> None:
    settings, read = declared(), read_by_code()
    sample = json.loads(SAMPLE.read_text(encoding="utf-8"))
    values = sample["Values"]
    assert contract_problems(settings, sample, read | {"CTCS_NEW"}) == ["CTCS_NEW is read but not declared in SETTINGS"]
    assert contract_problems({**settings, "CTCS_DEAD": "1"}, sample, read)[0] == "CTCS_DEAD is declared but nothing reads it"
    missing = {**sample, "Values": {k: v for k, v in values.items() if k != "CTCS_RUNS_TABLE"}}
    assert contract_problems(settings, missing, read) == ["CTCS_RUNS_TABLE is missing from the sample"]
    changed = {**sample, "Values": {**values, "CTCS_LEASE_SECONDS": "60"}}
    assert contract_problems(settings, changed, read) == ["CTCS_LEASE_SECONDS is '60' in the sample, SETTINGS says '600'"]
    extra = {**sample, "Values": {**values, "CTCS_TYPO": "x", "AZURE_CLIENT_ID": "x"}}
    assert contract_problems(settings, extra, read) == [
        "CTCS_TYPO is in the sample but not declared", "AZURE_CLIENT_ID is in the sample but is not a local setting"
    ]
