"""Every app setting ctcs reads, in one registry.

The settings table of docs/settings.md, `local.settings.sample.json` and the Bicep app settings are checked against
`SETTINGS` by tests, so a setting that is read anywhere must be declared here first.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass, field
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
    Setting(
        "CTCS_SECRET_ENV_PREFIX",
        "CTCS_SECRET_",
        "The prefix every `env:` secret reference of a pair must start with: a pair row cannot read any other "
        "setting of the app.",
    ),
    Setting(
        "CTCS_SECRET_FILE_DIR",
        "~/.ctcs/secrets",
        "The directory every `file:` secret reference of a pair must lie under (after symlinks and `..` are "
        "resolved).",
    ),
    Setting(
        "CTCS_ALLOWED_CLOUD_HOSTS",
        None,
        "In Azure, the hosts a pair's custom cloud may name (comma-separated: authority, Graph and Exchange hosts); "
        "empty refuses every custom cloud there. Outside Azure custom clouds are not checked.",
    ),
    Setting(
        "SYNC_SCHEDULE",
        "0 */5 * * * *",
        "NCRONTAB schedule (UTC, six fields) of the timer that asks for a planning run of every due pair.",
    ),
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
        "CTCS_TARGETS_TABLE",
        "TargetState",
        "Table that holds, per target organisation, the creation-quota pause and the pace every worker instance "
        "shares.",
    ),
    Setting(
        "CTCS_OPS_QUEUE",
        "contact-ops",
        "Queue of contact operations; the Functions host moves failures to `<name>-poison`.",
    ),
    Setting(
        "CTCS_PAIR_RUNS_QUEUE",
        "pair-runs",
        "Queue of requests to plan one pair (from the timer, the HTTP resync and planners handing a long round on); "
        "each message is one planner invocation.",
    ),
    Setting(
        "CTCS_PLANNER_BUDGET_SECONDS",
        "240",
        "How long one planner invocation reads and queues before it saves its checkpoint and hands the rest of the "
        "round to the next invocation; keep it well under host.json functionTimeout (10 minutes).",
    ),
    Setting(
        "CTCS_WORKER_CONCURRENCY",
        "16",
        "Operations `python -m sync run` applies at once (the Functions host uses host.json instead); Exchange calls "
        "are paced per target organisation whatever this is.",
    ),
    Setting(
        "CTCS_EXCHANGE_MAX_CONCURRENCY",
        "16",
        "Most Exchange cmdlets ctcs runs at once per target organisation, all worker instances together. ctcs finds "
        "the tenant's own limit below this and stays just under it; raise it only after Microsoft raised the "
        "tenant's limit. `0` turns pacing off (each instance calls as fast as its queue batch runs).",
    ),
    Setting(
        "CTCS_LOOKUP_BATCH",
        "16",
        "How many creates may share one `Get-Recipient` look-up of their anchors and addresses; `1` looks each up "
        "on its own.",
    ),
    Setting(
        "CTCS_QUOTA_BACKOFF_SECONDS",
        "900,3600,14400",
        "How long creates wait after Exchange's creation quota is reached before one is tried again, step by step "
        "(the last step repeats); later pauses start from what the earlier ones learned.",
    ),
    Setting(
        "CTCS_RUN_WAIT_SECONDS",
        "120",
        "How long `python -m sync run` waits for operations Exchange deferred before it stops with exit code 4.",
    ),
    Setting(
        "CTCS_CHANGE_NOTIFICATIONS",
        "auto",
        "Graph change notifications start a pair's run within seconds of a change in the source: `on`, `off`, or "
        "`auto` (on in Azure, where the platform sets WEBSITE_INSTANCE_ID; off locally, `func start` included, unless set). The timer keeps "
        "running as the safety net either way.",
    ),
    Setting(
        "CTCS_NOTIFICATION_URL",
        None,
        "Public HTTPS address of the notification route that Graph posts to. Unset in Azure: "
        "`https://<WEBSITE_HOSTNAME>/api/notifications`. Set it locally (a tunnel) or behind a custom domain.",
    ),
    Setting(
        "CTCS_NOTIFICATION_KEY",
        None,
        "Secret the notification URLs' path tokens are derived from (HMAC), so the anonymous route can refuse a "
        "stranger before it touches storage. In Azure a Key Vault reference to the secret `ctcs-notification-key`; "
        "at least 32 random characters. A new value gives every subscription a new URL at the next timer run.",
    ),
    Setting(
        "CTCS_KEY_READ",
        None,
        "Value of the function key `ctcs-read`: status and definitions (`GET /api/pairs...`). In Azure a Key Vault "
        "reference to the secret `ctcs-key-read`. Unset locally: the HTTP routes take any caller, as `func start` does.",
    ),
    Setting(
        "CTCS_KEY_OPERATE",
        None,
        "Value of the function key `ctcs-operate`: what `ctcs-read` may, plus resync, reconcile, test and provision. "
        "In Azure a Key Vault reference to the secret `ctcs-key-operate`.",
    ),
    Setting(
        "CTCS_KEY_DANGEROUS",
        None,
        "Value of the function key `ctcs-dangerous`: everything, including `allow_deletes=true` (releasing a "
        "quarantine, removals during one). In Azure a Key Vault reference to the secret `ctcs-key-dangerous`.",
    ),
    Setting(
        "CTCS_NOTIFICATION_DELAY_SECONDS",
        "5",
        "How long after the first change notification of a burst the pair's delta round starts; the notifications "
        "of the burst share that one run.",
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


def steps_setting(name: str, environ: Mapping[str, str] | None = None) -> tuple[int, ...]:
    """A rising list of positive whole seconds, comma-separated (`900,3600,14400`)."""
    raw = required_setting(name, environ)
    try:
        steps = tuple(int(part) for part in raw.replace(" ", "").split(",") if part)
    except ValueError:
        steps = ()
    if not steps or any(step <= 0 for step in steps) or list(steps) != sorted(steps):
        raise ConfigError(f"app setting {name} must be rising positive seconds like 900,3600,14400, not {raw!r}")
    return steps


def _default_int(name: str) -> int:
    return int(_BY_NAME[name].default or 0)


def _default_steps(name: str) -> tuple[int, ...]:
    return tuple(int(part) for part in (_BY_NAME[name].default or "").split(","))


@dataclass(frozen=True)
class Tuning:
    """The numbers an operator tunes through app settings, read and checked once; code reads them from the
    `Runtime` (tests pass their own), never from the environment."""

    lease_seconds: int = _default_int("CTCS_LEASE_SECONDS")
    worker_concurrency: int = _default_int("CTCS_WORKER_CONCURRENCY")
    exchange_max_concurrency: int = _default_int("CTCS_EXCHANGE_MAX_CONCURRENCY")  # 0: no pacing
    lookup_batch: int = _default_int("CTCS_LOOKUP_BATCH")
    quota_backoff: tuple[int, ...] = _default_steps("CTCS_QUOTA_BACKOFF_SECONDS")
    run_wait_seconds: int = _default_int("CTCS_RUN_WAIT_SECONDS")
    planner_budget_seconds: int = _default_int("CTCS_PLANNER_BUDGET_SECONDS")
    change_notifications: bool = False  # off unless the settings turn it on (tests and the CLI make their own)
    notification_url: str = ""  # where Graph posts change notifications (empty: nowhere, so none are asked for)
    notification_delay_seconds: int = _default_int("CTCS_NOTIFICATION_DELAY_SECONDS")
    notification_key: str = field(default="", repr=False)  # derives the notification URLs' path tokens; never shown

    @classmethod
    def from_settings(cls, environ: Mapping[str, str] | None = None) -> Tuning:
        return cls(
            lease_seconds=int_setting("CTCS_LEASE_SECONDS", environ, minimum=1),
            worker_concurrency=int_setting("CTCS_WORKER_CONCURRENCY", environ, minimum=1),
            exchange_max_concurrency=int_setting("CTCS_EXCHANGE_MAX_CONCURRENCY", environ, minimum=0),
            lookup_batch=int_setting("CTCS_LOOKUP_BATCH", environ, minimum=1),
            quota_backoff=steps_setting("CTCS_QUOTA_BACKOFF_SECONDS", environ),
            run_wait_seconds=int_setting("CTCS_RUN_WAIT_SECONDS", environ, minimum=0),
            planner_budget_seconds=int_setting("CTCS_PLANNER_BUDGET_SECONDS", environ, minimum=1),
            change_notifications=notifications_on(environ),
            notification_url=notification_url(environ),
            notification_delay_seconds=int_setting("CTCS_NOTIFICATION_DELAY_SECONDS", environ, minimum=0),
            notification_key=notification_key(environ),
        )


AZURE_HOST_MARKER = "WEBSITE_INSTANCE_ID"
"""A platform variable of App Service and Azure Functions, set on instances in Azure and never by Core Tools."""
LOCAL_HOSTNAMES = ("localhost", "127.0.0.1", "0.0.0.0", "[::1]")  # what `func start` puts in WEBSITE_HOSTNAME


def in_azure(environ: Mapping[str, str] | None = None) -> bool:
    """True under the Functions host in Azure: the one test of "in Azure" every rule of ctcs uses (role keys,
    custom clouds, change notifications' `auto`). WEBSITE_INSTANCE_ID is set, or WEBSITE_HOSTNAME names a host that
    is not the loopback one `func start` sets (localhost:7071): when in doubt, the stricter rules apply."""
    if (os.environ if environ is None else environ).get(AZURE_HOST_MARKER, "").strip():
        return True
    host = _platform_hostname(environ).lower()
    return bool(host) and host.rsplit(":", 1)[0] not in LOCAL_HOSTNAMES and not host.startswith("[::1]")


def _platform_hostname(environ: Mapping[str, str] | None) -> str:
    """WEBSITE_HOSTNAME: the app's public host name in Azure (not an app setting of ours)."""
    return (os.environ if environ is None else environ).get("WEBSITE_HOSTNAME", "").strip()


def notifications_on(environ: Mapping[str, str] | None = None) -> bool:
    raw = required_setting("CTCS_CHANGE_NOTIFICATIONS", environ).lower()
    if raw not in ("auto", "on", "off", "true", "false", "1", "0"):
        raise ConfigError(f"app setting CTCS_CHANGE_NOTIFICATIONS must be auto, on or off, not {raw!r}")
    if raw == "auto":
        return in_azure(environ)
    return raw in ("on", "true", "1")


def notification_url(environ: Mapping[str, str] | None = None) -> str:
    """The notification route's public address: the setting, else derived from the platform's host name."""
    explicit = setting("CTCS_NOTIFICATION_URL", environ) or ""
    if explicit:
        if not explicit.lower().startswith("https://"):
            raise ConfigError(f"app setting CTCS_NOTIFICATION_URL must be an https:// address (Graph posts only to HTTPS), "
                              f"not {explicit!r}")
        return explicit
    host = _platform_hostname(environ)
    return f"https://{host}/api/notifications" if host else ""


def notification_key(environ: Mapping[str, str] | None = None) -> str:
    """CTCS_NOTIFICATION_KEY, or "" while it is unset or its Key Vault reference does not resolve (the secret is not
    stored yet): then no subscription is made, each pair's row says why, and everything else runs."""
    try:
        return setting("CTCS_NOTIFICATION_KEY", environ) or ""
    except ConfigError:
        return ""


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
