"""The checks can fail: broken fixtures and mutated copies of the real templates are reported, with the reason."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from infracheck import (
    FIXTURES,
    INFRA,
    all_problems,
    app_settings,
    parameters_file_problems,
    registry_pin_problems,
    settings_problems,
    storage_problems,
    syntax_problems,
)

BROKEN = FIXTURES / "broken"


def reported(problems: list[str], *fragments: str) -> None:
    for fragment in fragments:
        assert any(fragment in problem for problem in problems), f"{fragment!r} not reported in {problems}"


def test_a_syntax_error_in_a_copy_of_main_is_reported_with_its_line() -> None:
    problems = all_problems(BROKEN / "main_syntax_error.bicep")
    reported(problems, "main_syntax_error.bicep: does not parse", "line ")


def test_storage_with_shared_keys_or_public_blobs_is_rejected() -> None:
    problems = all_problems(BROKEN / "storage_shared_keys.bicep")
    reported(
        problems,
        "storage account must set allowSharedKeyAccess: false",
        "storage account must set allowBlobPublicAccess: false",
        "storage legacy must set allowSharedKeyAccess: false",  # a parameter that defaults to true
        "storage legacy must set allowBlobPublicAccess: false",  # left unset
    )


def test_unpinned_modules_missing_paths_leaked_keys_and_unknown_roles_are_rejected() -> None:
    problems = all_problems(BROKEN / "unpinned_and_leaky.bicep")
    reported(
        problems,
        "avm/res/web/site:latest is not pinned",
        "avm/res/web/serverfarm:0.1 is not pinned",
        "does-not-exist.bicep, which does not exist",
        "list*() key function (listKeys)",
        "connection string with AccountKey",
        "parameter clientSecret is @secure()",
        "output storageKey is @secure()",
        "output storageConnectionString looks like a secret",
        "b7e6dc6d-f1e8-4753-8033-0f276bb0955c, which is not one of the documented built-in roles",
    )


def test_a_module_reference_without_any_tag_is_unpinned(tmp_path: Path) -> None:
    path = tmp_path / "tagless.bicep"
    path.write_text("module a 'br/public:avm/res/web/site' = {\n  name: 'a'\n}\n", encoding="utf-8")
    reported(registry_pin_problems(path), "br/public:avm/res/web/site is not pinned")


def test_settings_that_drift_from_the_registry_are_rejected(declared) -> None:
    problems = settings_problems(app_settings(BROKEN / "settings_main.bicep"), declared)
    reported(
        problems,
        "AzureWebJobsStorage is set in Azure but must not be",
        "CTCS_WORKER_CONCURRENCY is set in Azure but must not be",
        "SYNC_SCHEDULE defaults to '0 0 * * * *' in Bicep but to '0 */5 * * * *'",
        "CTCS_DEBUG is set on the Function App but not declared",
        "AZURE_CLIENT_ID is declared in sync/settings.py but not set",
        "FUNCTIONS_WORKER_RUNTIME must not be an app setting on Flex Consumption",
        "AzureWebJobsStorage__credential must be 'managedidentity'",
    )


def test_a_parameters_file_with_literals_is_rejected() -> None:
    reported(
        parameters_file_problems(BROKEN / "main.parameters.json"),
        "parameter clientSecret looks like a secret",
        "parameter location must be an azd substitution",
    )


# --- mutations of the real templates: the same checks catch a change that would break them -------------------------


@pytest.fixture
def infra_copy(tmp_path: Path) -> Path:
    copy = tmp_path / "infra"
    shutil.copytree(INFRA, copy)
    return copy


def mutate(path: Path, old: str, new: str) -> None:
    text = path.read_text(encoding="utf-8")
    assert old in text, f"{old!r} is no longer in {path.name}: update this test"
    path.write_text(text.replace(old, new, 1), encoding="utf-8")


def test_breaking_main_is_reported(infra_copy: Path) -> None:
    mutate(infra_copy / "main.bicep", "targetScope = 'subscription'", "targetScope = 'subscription\n")
    assert syntax_problems(infra_copy / "main.bicep")


def test_turning_shared_keys_on_is_reported(infra_copy: Path) -> None:
    mutate(infra_copy / "app" / "storage.bicep", "allowSharedKeyAccess: false", "allowSharedKeyAccess: true")
    reported(storage_problems(infra_copy / "app" / "storage.bicep"), "allowSharedKeyAccess: false")


def test_floating_a_module_version_is_reported(infra_copy: Path) -> None:
    mutate(infra_copy / "app" / "function.bicep", "avm/res/web/site:0.15.1", "avm/res/web/site:0.15")
    reported(registry_pin_problems(infra_copy / "app" / "function.bicep"), "avm/res/web/site:0.15 is not pinned")


def test_dropping_or_adding_an_app_setting_is_reported(infra_copy: Path, declared) -> None:
    main = infra_copy / "main.bicep"
    mutate(main, "  CTCS_RUNS_TABLE: runsTableName\n", "  CTCS_RUNS_TABLES: runsTableName\n")
    reported(
        settings_problems(app_settings(main), declared),
        "CTCS_RUNS_TABLE is declared in sync/settings.py but not set",
        "CTCS_RUNS_TABLES is set on the Function App but not declared",
    )


def test_changing_a_setting_default_is_reported(infra_copy: Path, declared) -> None:
    mutate(infra_copy / "main.bicep", "param opsQueueName string = 'contact-ops'", "param opsQueueName string = 'ops'")
    reported(settings_problems(app_settings(infra_copy / "main.bicep"), declared), "CTCS_OPS_QUEUE defaults to 'ops'")
