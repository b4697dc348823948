"""scripts/register-apps.sh against a stand-in `az` (offline): the federated credential is checked by its subject,
issuer and audience, not only its name, and replaced when the managed identity was recreated (azd down + azd up,
which otherwise ends in AADSTS700213); issuer, audience and the Graph host follow the active cloud."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from infracheck import REPO

REGISTER = REPO / "scripts" / "register-apps.sh"
HOME_TENANT = "11111111-2222-3333-4444-555555555555"
APP_ID = "66666666-7777-8888-9999-000000000000"
OLD, NEW = "aaaaaaaa-0000-0000-0000-000000000001", "bbbbbbbb-0000-0000-0000-000000000002"

CLOUDS = {
    "AzureCloud": ("https://login.microsoftonline.com", "https://graph.microsoft.com/", "api://AzureADTokenExchange"),
    "AzureUSGovernment": ("https://login.microsoftonline.us", "https://graph.microsoft.us/", "api://AzureADTokenExchangeUSGov"),
    "AzureChinaCloud": ("https://login.chinacloudapi.cn", "https://microsoftgraph.chinacloudapi.cn",
                        "api://AzureADTokenExchangeChina"),
}

# The stand-in answers the calls the script makes and logs every call, one per line.
FAKE_AZ = r"""#!/bin/sh
echo "$*" >> "$AZ_LOG"
case "$*" in
  "account show --query tenantId -o tsv") echo "$HOME_TENANT" ;;
  "cloud show --query name -o tsv") echo "$CLOUD_NAME" ;;
  "cloud show --query endpoints.activeDirectory -o tsv") echo "$CLOUD_AUTHORITY" ;;
  "cloud show --query endpoints.microsoftGraphResourceId -o tsv") echo "$CLOUD_GRAPH" ;;
  "ad app list "*) echo "$APP_ID" ;;
  "ad app permission add "*) ;;
  "ad app federated-credential list "*) if [ -n "$EXISTING" ]; then printf '%s\n' "$EXISTING"; fi ;;
  "ad app federated-credential delete "*) ;;
  "ad app federated-credential create "*)
    shift 4; while [ $# -gt 0 ]; do [ "$1" = "--parameters" ] && printf '%s' "$2" > "$CREATED"; shift; done ;;
  "rest --method GET "*) echo 0 ;;
  "rest --method POST "*) ;;
  "ad sp list "*) echo sp-object-id ;;
  *) echo "unexpected az $*" >&2; exit 9 ;;
esac
"""


def run_create(tmp_path: Path, cloud: str, existing: str = "") -> tuple[subprocess.CompletedProcess[str], list[str], Path]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    az = bin_dir / "az"
    az.write_text(FAKE_AZ, encoding="utf-8")
    az.chmod(0o755)
    authority, graph, _ = CLOUDS[cloud]
    log, created = tmp_path / "az.log", tmp_path / "created.json"
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "AZ_LOG": str(log),
           "CREATED": str(created), "HOME_TENANT": HOME_TENANT, "APP_ID": APP_ID, "CLOUD_NAME": cloud,
           "CLOUD_AUTHORITY": authority, "CLOUD_GRAPH": graph, "EXISTING": existing}
    result = subprocess.run(["bash", str(REGISTER), "create", "target", "ctcs target writer", NEW], env=env,
                            capture_output=True, text=True, timeout=30, check=False)
    return result, log.read_text(encoding="utf-8").splitlines() if log.exists() else [], created


pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")


@pytest.mark.parametrize("cloud", sorted(CLOUDS))
def test_a_new_credential_follows_the_active_cloud(tmp_path: Path, cloud: str) -> None:
    result, calls, created = run_create(tmp_path, cloud)
    assert result.returncode == 0, result.stderr
    authority, _, audience = CLOUDS[cloud]
    made = json.loads(created.read_text(encoding="utf-8"))
    assert made["issuer"] == f"{authority}/{HOME_TENANT}/v2.0"
    assert made["subject"] == NEW and made["audiences"] == [audience]
    assert not [call for call in calls if "federated-credential delete" in call]


def test_a_recreated_identity_replaces_the_credential(tmp_path: Path) -> None:
    stale = f"{OLD}\thttps://login.microsoftonline.com/{HOME_TENANT}/v2.0\tapi://AzureADTokenExchange"
    result, calls, created = run_create(tmp_path, "AzureCloud", existing=stale)
    assert result.returncode == 0, result.stderr
    assert "trusts another identity or cloud" in result.stdout and OLD in result.stdout
    deletes = [call for call in calls if call.startswith("ad app federated-credential delete")]
    assert deletes == [f"ad app federated-credential delete --id {APP_ID} --federated-credential-id ctcs-function-identity "
                       "--only-show-errors"]
    assert json.loads(created.read_text(encoding="utf-8"))["subject"] == NEW


def test_a_credential_made_for_another_cloud_is_replaced(tmp_path: Path) -> None:
    global_one = f"{NEW}\thttps://login.microsoftonline.com/{HOME_TENANT}/v2.0\tapi://AzureADTokenExchange"
    result, _, created = run_create(tmp_path, "AzureUSGovernment", existing=global_one)
    assert result.returncode == 0, result.stderr
    assert json.loads(created.read_text(encoding="utf-8"))["audiences"] == ["api://AzureADTokenExchangeUSGov"]


def test_a_matching_credential_is_left_alone(tmp_path: Path) -> None:
    current = f"{NEW}\thttps://login.microsoftonline.com/{HOME_TENANT}/v2.0\tapi://AzureADTokenExchange"
    result, calls, created = run_create(tmp_path, "AzureCloud", existing=current)
    assert result.returncode == 0, result.stderr
    assert "already trusts" in result.stdout and not created.exists()
    assert not [call for call in calls if "federated-credential delete" in call or "federated-credential create" in call]
