"""The Function App's settings and local.settings.json stay in step with sync/settings.py (the SETTINGS registry)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from infracheck import NOT_IN_AZURE, REPO, app_settings, settings_problems, text_of

HOOKS = {"sh": REPO / "scripts" / "postprovision.sh", "ps1": REPO / "scripts" / "postprovision.ps1"}
# Settings that only make sense in Azure: locally the code falls back to DefaultAzureCredential (`az login`).
AZURE_ONLY = {"AzureWebJobsStorage__credential", "AzureWebJobsStorage__clientId", "AZURE_CLIENT_ID"}
# The app's own secrets: Key Vault references in Azure, never copied into local.settings.json by the hooks.
AZURE_ONLY |= {"CTCS_NOTIFICATION_KEY", "CTCS_KEY_READ", "CTCS_KEY_OPERATE", "CTCS_KEY_DANGEROUS"}


def test_app_settings_match_the_registry(declared) -> None:
    assert settings_problems(app_settings(), declared) == []


def test_settings_left_out_of_azure_are_declared(declared) -> None:
    assert set(NOT_IN_AZURE) <= set(declared)
    assert set(declared) >= AZURE_ONLY


def test_storage_is_reached_by_identity_not_by_connection_string() -> None:
    settings = app_settings()
    assert "AzureWebJobsStorage" not in settings
    assert settings["AzureWebJobsStorage__credential"] == "managedidentity"
    for service in ("blob", "queue", "table"):
        uri = settings[f"AzureWebJobsStorage__{service}ServiceUri"]
        assert re.fullmatch(rf"https://\S*\$\{{resourceToken\}}\.{service}\.\$\{{storageSuffix\}}", uri), uri


def test_identity_settings_point_at_the_user_assigned_identity() -> None:
    settings = app_settings()
    for name in ("AZURE_CLIENT_ID", "AzureWebJobsStorage__clientId"):
        assert '"identity"' in text_of(settings[name]) and '"clientId"' in text_of(settings[name]), name
    assert '"keyVault"' in text_of(settings["CTCS_KEY_VAULT_URI"]) and '"uri"' in text_of(
        settings["CTCS_KEY_VAULT_URI"]
    )
    assert settings["APPLICATIONINSIGHTS_AUTHENTICATION_STRING"] == "ClientId=${identityClientId};Authorization=AAD"
    assert "APPLICATIONINSIGHTS_CONNECTION_STRING" in settings


def _hook_settings(path: Path) -> dict[str, str | None]:
    """Setting name → fallback default as each hook script writes it."""
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".sh":
        pairs = re.findall(r'printf \'    "(\w+)": "%s",?\\n\' "\$\(json "\$\(value \w+ ?\'?([^\')"]*)\'?\)"\)"', text)
        names = re.findall(r'printf \'    "(\w+)": ', text)
    else:
        pairs = re.findall(r"^\s+(\w+)\s+= Get-Value '\w+'(?: '([^']*)')?", text, re.MULTILINE)
        names = re.findall(r"^\s+(\w+)\s+= ", text, re.MULTILINE)
    defaults = {name: (default or None) for name, default in pairs}
    return {name: defaults.get(name) for name in names if name not in ("value",)}


@pytest.mark.parametrize("hook", sorted(HOOKS))
def test_postprovision_hooks_write_every_local_setting(hook, declared) -> None:
    written = _hook_settings(HOOKS[hook])
    written.pop("FUNCTIONS_WORKER_RUNTIME", None)
    expected = set(declared) - AZURE_ONLY - {"AzureWebJobsStorage"}
    assert set(written) == expected
    for name, default in written.items():
        if declared[name] is not None:
            assert default == declared[name], (
                f"{hook}: {name} falls back to {default!r}, SETTINGS says {declared[name]!r}"
            )


@pytest.mark.parametrize("hook", sorted(HOOKS))
def test_postprovision_hooks_never_write_keys(hook) -> None:
    text = HOOKS[hook].read_text(encoding="utf-8")
    assert "AccountKey" not in text and "connection-string" not in text and "keys list" not in text
    assert '"AzureWebJobsStorage"' not in text and not re.search(r"^\s+AzureWebJobsStorage\s+=", text, re.MULTILINE)
    assert "azd env get-value" in text


@pytest.mark.skipif(shutil.which("sh") is None, reason="needs a POSIX shell")
def test_postprovision_sh_writes_local_settings_from_the_azd_environment(tmp_path, declared) -> None:
    (tmp_path / "scripts").mkdir()
    shutil.copy(HOOKS["sh"], tmp_path / "scripts" / "postprovision.sh")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    azd = bin_dir / "azd"
    azd.write_text(
        "#!/bin/sh\n"
        '[ "$1 $2" = "env get-value" ] || exit 2\n'
        'case "$3" in\n'
        "  AZURE_STORAGE_BLOB_ENDPOINT) echo https://stx.blob.core.windows.net ;;\n"
        "  AZURE_STORAGE_QUEUE_ENDPOINT) echo https://stx.queue.core.windows.net ;;\n"
        "  AZURE_STORAGE_TABLE_ENDPOINT) echo https://stx.table.core.windows.net ;;\n"
        "  AZURE_KEY_VAULT_URI) echo https://kv-x.vault.azure.net/ ;;\n"
        "  CTCS_OPS_QUEUE) echo 'ops \"quoted\"' ;;\n"
        "  *) echo \"ERROR: key '$3' not found in the environment values\" >&2; exit 1 ;;\n"
        "esac\n",
        encoding="utf-8",
    )
    azd.chmod(0o755)
    (tmp_path / "local.settings.json").write_text('{"previous": true}', encoding="utf-8")
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    subprocess.run(
        ["sh", str(tmp_path / "scripts" / "postprovision.sh")], check=True, env=env, capture_output=True, timeout=30
    )

    written = json.loads((tmp_path / "local.settings.json").read_text(encoding="utf-8"))
    assert json.loads((tmp_path / "local.settings.json.bak").read_text(encoding="utf-8")) == {"previous": True}
    assert written["IsEncrypted"] is False
    values = written["Values"]
    assert values["FUNCTIONS_WORKER_RUNTIME"] == "python"
    assert values["AzureWebJobsStorage__tableServiceUri"] == "https://stx.table.core.windows.net"
    assert values["CTCS_KEY_VAULT_URI"] == "https://kv-x.vault.azure.net/"
    assert values["CTCS_OPS_QUEUE"] == 'ops "quoted"'
    assert values["SYNC_SCHEDULE"] == declared["SYNC_SCHEDULE"]
    assert not set(values) & (AZURE_ONLY | {"AzureWebJobsStorage"})


@pytest.mark.skipif(shutil.which("sh") is None, reason="needs a POSIX shell")
def test_postprovision_sh_refuses_an_unprovisioned_environment(tmp_path) -> None:
    (tmp_path / "scripts").mkdir()
    shutil.copy(HOOKS["sh"], tmp_path / "scripts" / "postprovision.sh")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "azd").write_text('#!/bin/sh\necho "ERROR: no environment" >&2\nexit 1\n', encoding="utf-8")
    (bin_dir / "azd").chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    result = subprocess.run(
        ["sh", str(tmp_path / "scripts" / "postprovision.sh")], env=env, capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 1 and "azd provision" in result.stderr
    assert not (tmp_path / "local.settings.json").exists()
