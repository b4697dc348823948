"""azure.yaml, .funcignore, the workflows, the helper scripts and the deployment guide agree with the templates."""

from __future__ import annotations

import fnmatch
import re

import pytest
import yaml
from infracheck import REPO

FUNCIGNORE = REPO / ".funcignore"
DEPLOY_DOC = REPO / "docs" / "deploy.md"
REGISTER = REPO / "scripts" / "register-apps.sh"

WELL_KNOWN_IDS = {
    "Microsoft Graph": "00000003-0000-0000-c000-000000000000",
    "User.Read.All": "df021288-bdef-4463-88db-98f22de89214",
    "GroupMember.Read.All": "98830695-27a2-44f7-8c18-0c3ebc9698f6",
    "Group.Read.All": "5b567255-7703-4780-807c-7be8301ae99b",
    "Office 365 Exchange Online": "00000002-0000-0ff1-ce00-000000000000",
    "Exchange.ManageAsApp": "dc50a0fb-09a3-484d-be87-e023b12c6440",
    "Exchange Recipient Administrator": "31392ffb-586c-42d1-9346-e59415a2cc4e",
}


def test_azure_yaml_names_the_function_service_and_existing_hooks() -> None:
    config = yaml.safe_load((REPO / "azure.yaml").read_text(encoding="utf-8"))
    assert config["services"]["api"] == {"project": ".", "language": "python", "host": "function"}
    hook = config["hooks"]["postprovision"]
    assert hook["posix"]["shell"] == "sh" and hook["windows"]["shell"] == "pwsh"
    for platform in ("posix", "windows"):
        assert (REPO / hook[platform]["run"]).is_file(), hook[platform]["run"]


def _ignored(path: str, patterns: list[str]) -> bool:
    """gitignore-style match, enough for the patterns .funcignore uses."""
    parts = path.split("/")
    for pattern in patterns:
        directory = pattern.endswith("/")
        pattern = pattern.rstrip("/")
        candidates = ["/".join(parts[: i + 1]) for i in range(len(parts) - (1 if directory else 0))] + parts
        if any(fnmatch.fnmatch(candidate, pattern) for candidate in candidates):
            return True
    return False


FUNCIGNORE_PATTERNS = [
    line.strip()
    for line in FUNCIGNORE.read_text(encoding="utf-8").splitlines()
    if line.strip() and not line.startswith("#")
]


@pytest.mark.parametrize(
    "path",
    [
        "tests/infra/test_x.py",
        "sim/tenant.py",
        "infra/main.bicep",
        "docs/deploy.md",
        "scripts/postprovision.sh",
        ".github/workflows/tests.yml",
        ".ci/run",
        "local.settings.json",
        ".venv/bin/python",
        "sync/__pycache__/x.pyc",
        ".pytest_cache/v",
        "requirements-dev.txt",
        "azure.yaml",
    ],
)
def test_funcignore_keeps_out_what_does_not_run(path) -> None:
    assert _ignored(path, FUNCIGNORE_PATTERNS)


@pytest.mark.parametrize(
    "path", ["function_app.py", "host.json", "requirements.txt", "sync/settings.py", "sync/state/pairs.py"]
)
def test_funcignore_keeps_what_runs(path) -> None:
    assert not _ignored(path, FUNCIGNORE_PATTERNS)


def test_tests_workflow_runs_the_ci_script() -> None:
    workflow = yaml.safe_load((REPO / ".github" / "workflows" / "tests.yml").read_text(encoding="utf-8"))
    steps = workflow["jobs"]["tests"]["steps"]
    uses = {step.get("uses", "").split("@")[0]: step for step in steps}
    assert "actions/checkout" in uses
    assert str(uses["actions/setup-python"]["with"]["python-version"]) == "3.11"
    assert str(uses["actions/setup-node"]["with"]["node-version"]) == "20"
    assert any(step.get("run") == "bash .ci/run" for step in steps)


def test_bicep_workflow_builds_and_lints_main() -> None:
    text = (REPO / ".github" / "workflows" / "bicep.yml").read_text(encoding="utf-8")
    yaml.safe_load(text)
    assert "az bicep build --file infra/main.bicep" in text
    assert "az bicep lint --file infra/main.bicep" in text


@pytest.mark.parametrize("name", sorted(WELL_KNOWN_IDS))
def test_register_script_and_guide_use_the_well_known_ids(name) -> None:
    assert WELL_KNOWN_IDS[name] in REGISTER.read_text(encoding="utf-8")
    assert WELL_KNOWN_IDS[name] in DEPLOY_DOC.read_text(encoding="utf-8")


def test_no_other_guid_in_the_register_script() -> None:
    guids = set(
        re.findall(
            r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", REGISTER.read_text(encoding="utf-8")
        )
    )
    assert guids == set(WELL_KNOWN_IDS.values())


@pytest.mark.parametrize(
    "step",
    [
        "azd up",
        "azd env set AZURE_PRINCIPAL_ID",
        "python -m sync pairs add pair.json",
        "python -m sync plan --pair",
        "python -m sync run --pair",
        "python -m sync status",
        "/api/pairs/contoso-to-fabrikam/resync",
        "x-functions-key",
        "azd down",  # not --purge: the vault is under purge protection
        "https://login.microsoftonline.com/<home tenant id>/v2.0",
        "api://AzureADTokenExchange",
        "AZURE_UAMI_PRINCIPAL_ID",
        "kv:fabrikam-exo-cert",
        "az keyvault certificate create",
        "--append",
        "scripts/register-apps.sh create",
        "scripts/register-apps.sh grant",
        "adminconsent?client_id=",
    ],
)
def test_deployment_guide_gives_every_step(step) -> None:
    assert step in DEPLOY_DOC.read_text(encoding="utf-8")


def test_deployment_guide_knobs_exist_in_the_parameters_file() -> None:
    parameters = (REPO / "infra" / "main.parameters.json").read_text(encoding="utf-8")
    for knob in re.findall(r"^\| `([A-Z_]+)` \|", DEPLOY_DOC.read_text(encoding="utf-8"), re.MULTILINE):
        assert "${" + knob in parameters, knob


@pytest.mark.parametrize(
    "fact",
    [
        "`GroupMembership`",  # every table the app uses is listed
        "`contact-ops-parked`",
        "per scale group",  # maximumInstanceCount caps each Flex scale group, not the app
        "Get-ManagementRole -Cmdlet New-MailContact",  # the least-privilege role group, verified by the admin
        '"Mail Recipient Creation", "Mail Recipients"',
        "Add-RoleGroupMember",
        "the ExchangeOnlineManagement PowerShell module (v3) itself uses",  # the endpoint is undocumented for direct use
        "not a supported API for direct use",
        "`CTCS_HOSTING_CLOUD`",
        "api://AzureADTokenExchangeUSGov",
        "Federation cannot cross clouds",
        "az cloud set --name AzureUSGovernment",
        "`CTCS_APPINSIGHTS_ENTRA_AUTH=auto`",
        "python -m sync pairs test",
        "/api/pairs/contoso-to-fabrikam/test",
    ],
)
def test_deployment_guide_states_the_deployment_facts(fact) -> None:
    assert fact in DEPLOY_DOC.read_text(encoding="utf-8")


def test_deployment_guide_lists_every_table_the_templates_create() -> None:
    from infracheck import MAIN_BICEP, Scope, parse, resolve

    main = parse(MAIN_BICEP)
    tables = resolve(main["modules"]["storage"]["config"]["params"]["tableNames"], Scope(main))
    text = DEPLOY_DOC.read_text(encoding="utf-8")
    assert all(f"`{table}`" in text for table in tables), tables
