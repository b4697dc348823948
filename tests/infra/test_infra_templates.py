"""The Bicep templates under infra/: they parse, reference pinned modules, keep keys off and grant the right roles."""

from __future__ import annotations

import re

import pytest
from infracheck import (
    BUILT_IN_ROLES,
    IDENTITY_ROLES,
    INFRA,
    MAIN_BICEP,
    UNRESOLVED,
    Scope,
    bicep_files,
    local_module_problems,
    parameters_file_problems,
    parse,
    registry_modules,
    registry_pin_problems,
    resolve,
    role_assignments,
    role_problems,
    secret_problems,
    site_params,
    storage_accounts_found,
    storage_problems,
    syntax_problems,
    text_of,
    vault_fed_parameters,
)

BICEP_FILES = bicep_files()
IDS = [str(path.relative_to(INFRA)) for path in BICEP_FILES]
MAIN = parse(MAIN_BICEP)


def module_params(path_suffix: str, module: str) -> tuple[dict, Scope]:
    """The evaluated params of `module` in infra/<path_suffix>, in that file's own scope."""
    doc = parse(INFRA / path_suffix)
    scope = Scope(doc)
    config = doc["modules"][module]["config"]
    return resolve(config.get("params") or {}, scope), scope


def test_infra_has_the_expected_layout() -> None:
    assert {"main.bicep", "app/function.bicep", "app/rbac.bicep", "app/storage.bicep"} <= set(IDS)
    assert (INFRA / "main.parameters.json").is_file() and (INFRA / "abbreviations.json").is_file()
    assert MAIN["globals"]["scope"]["value"] == "subscription"
    assert any(r["type"] == "Microsoft.Resources/resourceGroups" for r in MAIN["resources"].values())


@pytest.mark.parametrize("path", BICEP_FILES, ids=IDS)
def test_every_bicep_file_parses(path) -> None:
    assert syntax_problems(path) == []


@pytest.mark.parametrize("path", BICEP_FILES, ids=IDS)
def test_local_module_paths_exist(path) -> None:
    assert local_module_problems(path) == []


@pytest.mark.parametrize("path", BICEP_FILES, ids=IDS)
def test_registry_modules_are_pinned_to_an_exact_version(path) -> None:
    assert registry_pin_problems(path) == []


def test_the_azure_verified_modules_we_rely_on_are_used_in_one_version_each() -> None:
    used = registry_modules(BICEP_FILES)
    expected = {
        "avm/res/web/site",
        "avm/res/web/serverfarm",
        "avm/res/storage/storage-account",
        "avm/res/managed-identity/user-assigned-identity",
        "avm/res/key-vault/vault",
        "avm/res/insights/component",
        "avm/res/operational-insights/workspace",
    }
    assert expected <= set(used)
    assert {path: versions for path, versions in used.items() if len(versions) > 1} == {}


@pytest.mark.parametrize("path", BICEP_FILES, ids=IDS)
def test_storage_forbids_shared_keys_and_public_blob_access(path) -> None:
    assert storage_problems(path) == []


def test_the_storage_check_is_not_vacuous() -> None:
    assert storage_accounts_found(BICEP_FILES) >= 1


@pytest.mark.parametrize("path", BICEP_FILES, ids=IDS)
def test_no_secret_or_key_in_parameters_or_outputs(path) -> None:
    assert secret_problems(path) == []


def test_parameters_file_holds_only_azd_substitutions() -> None:
    path = INFRA / "main.parameters.json"
    assert parameters_file_problems(path) == []
    text = path.read_text(encoding="utf-8")
    for name in ("${AZURE_ENV_NAME}", "${AZURE_LOCATION}", "${AZURE_PRINCIPAL_ID}"):
        assert name in text


def test_parameters_file_names_only_parameters_main_declares() -> None:
    import json

    names = set(json.loads((INFRA / "main.parameters.json").read_text(encoding="utf-8"))["parameters"])
    assert names <= set(MAIN["parameters"])


@pytest.mark.parametrize("path", BICEP_FILES, ids=IDS)
def test_role_definition_ids_are_documented_built_in_roles(path) -> None:
    assert role_problems(path) == []


def test_the_app_identity_holds_every_role_it_needs() -> None:
    assignments = role_assignments(INFRA / "app" / "rbac.bicep")
    granted = {role for _, role, principal in assignments if principal == "identityPrincipalId"}
    assert {BUILT_IN_ROLES[name] for name in IDENTITY_ROLES} <= granted


def test_the_deploying_admin_gets_only_optional_data_roles() -> None:
    doc = parse(INFRA / "app" / "rbac.bicep")
    user = [
        symbol
        for symbol, _, principal in role_assignments(INFRA / "app" / "rbac.bicep")
        if principal == "userPrincipalId"
    ]
    roles = {
        role for _, role, principal in role_assignments(INFRA / "app" / "rbac.bicep") if principal == "userPrincipalId"
    }
    assert roles == {
        BUILT_IN_ROLES["Storage Queue Data Contributor"],
        BUILT_IN_ROLES["Storage Table Data Contributor"],
        BUILT_IN_ROLES["Key Vault Secrets Officer"],
        BUILT_IN_ROLES["Key Vault Certificates Officer"],
    }
    for symbol in user:
        assert "condition" in doc["resources"][symbol]["config"], f"{symbol} must be conditional on a principal id"
    assert MAIN["parameters"]["principalId"]["default"] == ""


def test_flex_consumption_plan_and_site() -> None:
    plan, _ = module_params("app/function.bicep", "plan")
    assert plan["sku"] == {"name": "FC1", "tier": "FlexConsumption"} and plan["reserved"] is True

    [(params, scope)] = site_params()
    site = resolve(params, scope)
    config = site["functionAppConfig"]
    assert site["kind"] == "functionapp,linux"
    assert config["runtime"] == {"name": "python", "version": "3.11"}
    assert config["deployment"]["storage"]["type"] == "blobContainer"
    assert config["deployment"]["storage"]["authentication"]["type"] == "UserAssignedIdentity"
    # Exchange throttles per tenant: the scale-out cap stays small and is a parameter.
    cap = config["scaleAndConcurrency"]["maximumInstanceCount"]
    assert isinstance(cap, int) and 1 <= cap <= 4
    max_values = [
        d["argument"] for d in MAIN["parameters"]["maximumInstanceCount"]["decorators"] if d["type"] == "max_value"
    ]
    assert max_values and max_values[0] <= 10
    # Key Vault references resolve with the user-assigned identity, which is the only identity of the site.
    identity = text_of(site["keyVaultAccessIdentityResourceId"])
    assert "identity" in identity and "resourceId" in identity
    assert site["managedIdentities"]["systemAssigned"] is False
    assert text_of(site["managedIdentities"]["userAssignedResourceIds"]) == text_of(
        [site["keyVaultAccessIdentityResourceId"]]
    )
    assert site["httpsOnly"] is True and site["siteConfig"]["alwaysOn"] is False


def test_queues_and_tables_are_created_under_the_setting_names() -> None:
    params = resolve(MAIN["modules"]["storage"]["config"]["params"], Scope(MAIN))
    assert params["queueNames"] == ["contact-ops", "contact-ops-poison", "contact-ops-failed", "contact-ops-parked",
                                    "pair-runs"]
    assert params["tableNames"] == ["TenantPairs", "PairState", "ContactState", "SyncRuns", "GroupMembership",
                                    "TargetState"]
    account, _ = module_params("app/storage.bicep", "account")
    assert "queues" in text_of(account["queueServices"]) and "tables" in text_of(account["tableServices"])
    assert account["blobServices"]["containers"][0]["publicAccess"] == "None"


def test_application_insights_accepts_only_entra_authentication() -> None:
    component, _ = module_params("app/monitoring.bicep", "applicationInsights")
    assert component["disableLocalAuth"] is True


def test_key_vault_is_in_rbac_mode() -> None:
    vault, _ = module_params("app/keyvault.bicep", "vault")
    assert vault["enableRbacAuthorization"] is True
    assert vault["sku"] == "standard"


def test_key_vault_has_purge_protection_always_on() -> None:
    vault, _ = module_params("app/keyvault.bicep", "vault")
    assert vault["enablePurgeProtection"] is True and vault["enableSoftDelete"] is True
    assert "purgeProtection" not in (parse(INFRA / "app" / "keyvault.bicep").get("parameters") or {}), "not a choice"
    assert "keyVaultPurgeProtection" not in MAIN["parameters"]


ROLE_KEYS = {"ctcs-read": "CTCS_KEY_READ", "ctcs-operate": "CTCS_KEY_OPERATE", "ctcs-dangerous": "CTCS_KEY_DANGEROUS"}


def test_the_function_keys_by_role_are_host_keys_made_from_key_vault_secrets() -> None:
    doc = parse(INFRA / "app" / "hostkeys.bicep")
    keys = {r["config"]["properties"]["name"]: r for r in doc["resources"].values()}
    assert set(keys) == set(ROLE_KEYS)
    for name, resource in keys.items():
        assert resource["type"] == "Microsoft.Web/sites/host/functionKeys"
        assert resource["config"]["name"] == f"${{functionAppName}}/default/{name}"
    config = MAIN["modules"]["hostKeys"]["config"]
    assert config["condition"] == "roleKeysFromVault", "waits until the admin has stored the secrets"
    params = config["config"]["params"]
    secrets = {name: params[value]["operator"]["operands"]["operand_2"]
               for name, value in (("ctcs-read", "readKeyValue"), ("ctcs-operate", "operateKeyValue"),
                                   ("ctcs-dangerous", "dangerousKeyValue"))}
    assert secrets == {"ctcs-read": "ctcs-key-read", "ctcs-operate": "ctcs-key-operate",
                       "ctcs-dangerous": "ctcs-key-dangerous"}
    assert vault_fed_parameters()["hostkeys.bicep"] == {"readKeyValue", "operateKeyValue", "dangerousKeyValue"}
    vault, _ = module_params("app/keyvault.bicep", "vault")
    assert vault["enableVaultForTemplateDeployment"] is True, "getSecret() needs it"


def test_the_app_reads_its_own_secrets_through_key_vault_references() -> None:
    [(params, scope)] = list(site_params(MAIN_BICEP))
    settings = resolve(params["appSettingsKeyValuePairs"], scope)
    wanted = {setting: f"ctcs-key-{key.removeprefix('ctcs-')}" for key, setting in ROLE_KEYS.items()}
    wanted["CTCS_NOTIFICATION_KEY"] = "ctcs-notification-key"
    for setting, secret in wanted.items():
        value = text_of(settings[setting]).strip('"')
        assert "${abbrs.keyVaultVaults}${resourceToken}" in value, "the vault main.bicep makes"
        assert value.startswith("@Microsoft.KeyVault(VaultName=") and value.endswith(f";SecretName={secret})"), setting


def test_outputs_give_azd_and_the_hooks_what_they_need() -> None:
    outputs = set(MAIN["outputs"])
    assert {
        "AZURE_LOCATION",
        "AZURE_TENANT_ID",
        "AZURE_RESOURCE_GROUP",
        "AZURE_FUNCTION_APP_NAME",
        "AZURE_STORAGE_BLOB_ENDPOINT",
        "AZURE_STORAGE_QUEUE_ENDPOINT",
        "AZURE_STORAGE_TABLE_ENDPOINT",
        "AZURE_KEY_VAULT_URI",
        "AZURE_UAMI_CLIENT_ID",
        "AZURE_UAMI_PRINCIPAL_ID",
    } <= outputs
    # AZURE_CLIENT_ID would leak into every hook's environment and steer azure-identity there: never an output.
    assert "AZURE_CLIENT_ID" not in outputs


def test_parameter_defaults_resolve() -> None:
    for name, parameter in MAIN["parameters"].items():
        if name not in ("environmentName", "location"):
            assert parameter.get("default", UNRESOLVED) is not UNRESOLVED, f"{name} has no default"
    assert re.fullmatch(r"(\S+ ){5}\S+", MAIN["parameters"]["syncSchedule"]["default"])
