"""Every app setting ctcs reads, in one registry.

The README's settings table, `local.settings.sample.json` and the Bicep app settings are checked against
`SETTINGS` by tests, so a setting that is read anywhere must be declared here first.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass
from pathlib import Path

from sync.errors import ConfigError


@dataclass(frozen=True)
class Setting:
    name: str
    default: str | None
    description: str


SETTINGS: tuple[Setting, ...] = (
    Setting(
        "AzureWebJobsStorage",
        None,
        "Storage connection string for local runs (`UseDevelopmentStorage=true` for Azurite). "
        "In Azure leave it unset and use the identity-based `AzureWebJobsStorage__*` settings.",
    ),
    Setting(
        "AzureWebJobsStorage__tableServiceUri",
        None,
        "Table endpoint of the storage account, used with a managed identity (`https://<account>.table.core.windows.net`).",
    ),
    Setting(
        "AzureWebJobsStorage__queueServiceUri",
        None,
        "Queue endpoint of the storage account, used with a managed identity (`https://<account>.queue.core.windows.net`).",
    ),
    Setting(
        "AzureWebJobsStorage__blobServiceUri",
        None,
        "Blob endpoint of the storage account; the Functions host keeps its timer locks there.",
    ),
    Setting(
        "AzureWebJobsStorage__credential",
        None,
        "`managedidentity` in Azure, so the host and the app reach storage without keys.",
    ),
    Setting(
        "AzureWebJobsStorage__clientId",
        None,
        "Client id of the user-assigned managed identity that reaches storage.",
    ),
    Setting(
        "AZURE_CLIENT_ID",
        None,
        "Client id of the user-assigned managed identity that reads Key Vault and signs federated credentials.",
    ),
    Setting(
        "CTCS_KEY_VAULT_URI",
        None,
        "Key Vault that `kv:<name>` secret references in pair files are read from (`https://<vault>.vault.azure.net`).",
    ),
    Setting(
        "CTCS_HOSTING_CLOUD",
        "global",
        "The cloud the Function App runs in (`global`, `usgov`, `usgovdod` or `china`; set by the deployment): managed "
        "identity federation takes its token audience from it and refuses a pair side in another cloud.",
    ),
    Setting("SYNC_SCHEDULE", "0 */5 * * * *", "NCRONTAB schedule (UTC, six fields) of the timer that plans every pair."),
    Setting("CTCS_PAIRS_TABLE", "TenantPairs", "Table that holds the tenant pair definitions."),
    Setting("CTCS_PAIR_STATE_TABLE", "PairState", "Table that holds each pair's deltaLink, lease and quarantine."),
    Setting("CTCS_CONTACT_STATE_TABLE", "ContactState", "Table that holds one row per synced source user."),
    Setting("CTCS_RUNS_TABLE", "SyncRuns", "Table that holds one row per planning run."),
    Setting(
        "CTCS_GROUPS_TABLE",
        "GroupMembership",
        "Table that holds, per pair that scopes by group, its groups' membership graph and groups deltaLinks.",
    ),
    Setting(
        "CTCS_OPS_QUEUE",
        "contact-ops",
        "Queue of contact operations; the Functions host moves failures to `<name>-poison`.",
    ),
    Setting(
        "CTCS_WORKER_CONCURRENCY",
        "4",
        "Operations `python -m sync run` applies at once (the Functions host uses host.json instead).",
    ),
    Setting(
        "CTCS_LEASE_SECONDS",
        "600",
        "How long a planning run holds a pair's lease; a crashed run frees the pair after this.",
    ),
)

_BY_NAME = {setting.name: setting for setting in SETTINGS}


def setting(name: str, environ: Mapping[str, str] | None = None) -> str | None:
    """The value of a declared setting, its default when unset or empty."""
    if name not in _BY_NAME:
        raise KeyError(f"{name} is not a declared ctcs setting")
    value = (os.environ if environ is None else environ).get(name, "").strip()
    if value.startswith("@Microsoft.KeyVault("):
        raise ConfigError(
            f"app setting {name} still holds an unresolved Key Vault reference; "
            "check the app's keyVaultReferenceIdentity and its access to the vault"
        )
    return value or _BY_NAME[name].default


def required_setting(name: str, environ: Mapping[str, str] | None = None) -> str:
    value = setting(name, environ)
    if value is None:
        raise ConfigError(f"app setting {name} is not set: {_BY_NAME[name].description}")
    return value


def int_setting(name: str, environ: Mapping[str, str] | None = None, *, minimum: int | None = None) -> int:
    raw = required_setting(name, environ)
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"app setting {name} must be a whole number, not {raw!r}") from None
    if minimum is not None and value < minimum:
        raise ConfigError(f"app setting {name} must be at least {minimum}, not {value}: {_BY_NAME[name].description}")
    return value


def _default_int(name: str) -> int:
    return int(_BY_NAME[name].default or 0)


@dataclass(frozen=True)
class Tuning:
    """The numbers an operator tunes through app settings, read and checked once; code reads them from the
    `Runtime` (tests pass their own), never from the environment."""

    lease_seconds: int = _default_int("CTCS_LEASE_SECONDS")
    worker_concurrency: int = _default_int("CTCS_WORKER_CONCURRENCY")

    @classmethod
    def from_settings(cls, environ: Mapping[str, str] | None = None) -> Tuning:
        return cls(
            lease_seconds=int_setting("CTCS_LEASE_SECONDS", environ, minimum=1),
            worker_concurrency=int_setting("CTCS_WORKER_CONCURRENCY", environ, minimum=1),
        )


def load_local_settings(path: Path, environ: MutableMapping[str, str] | None = None) -> list[str]:
    """Copy `Values` of a Functions `local.settings.json` into the environment, as the Functions host does for
    local runs; variables already set win. Returns the names it set."""
    environ = os.environ if environ is None else environ
    if not path.is_file():
        return []
    try:
        values = json.loads(path.read_text(encoding="utf-8")).get("Values", {})
    except (OSError, ValueError, AttributeError) as error:
        raise ConfigError(f"{path} is not a valid local.settings.json: {error}") from None
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: 'Values' must be an object of setting names to strings")
    loaded = []
    for name, value in values.items():
        if isinstance(value, str) and name not in environ:
            environ[name] = value
            loaded.append(name)
    return loaded
