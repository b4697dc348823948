"""What a pair row may reach: secrets and clouds stay in the room the app's settings allow (issue 22).

A pair definition is data: anyone who can write the TenantPairs table can change it. So it may not name what only
code or app settings should decide:

- `env:` references read only variables whose names start with `CTCS_SECRET_ENV_PREFIX` (default `CTCS_SECRET_`),
  never the app's own settings (`AzureWebJobsStorage`, `AZURE_CLIENT_ID`, ...);
- `file:` references read only files under `CTCS_SECRET_FILE_DIR` (default `~/.ctcs/secrets`), checked after
  symlinks and `..` are resolved;
- under the Functions host in Azure (the platform sets `WEBSITE_INSTANCE_ID`), a custom cloud is used only when
  every host it names is listed in `CTCS_ALLOWED_CLOUD_HOSTS`;
- managed identity federation sends the managed identity's assertion only to the token authorities of the Microsoft
  clouds (`sync.contract.clouds.NAMED_CLOUDS`), wherever ctcs runs.

`pairs add` refuses a definition that breaks a rule (`pair_problems`, field paths first); the resolver and the
credential cache refuse the same at use time, for a row stored before the rule.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlparse

from sync.contract import pairs
from sync.contract.clouds import NAMED_CLOUDS
from sync.settings import in_azure, setting

FEDERATION_AUTHORITY_HOSTS: frozenset[str] = frozenset(
    urlparse(endpoints.authority).netloc.lower() for endpoints in NAMED_CLOUDS.values()
)
"""The only token authorities (host[:port]) a managed identity's assertion is ever posted to."""


def _environ(environ: Mapping[str, str] | None) -> Mapping[str, str]:
    return os.environ if environ is None else environ


def env_prefix(environ: Mapping[str, str] | None = None) -> str:
    return setting("CTCS_SECRET_ENV_PREFIX", _environ(environ)) or "CTCS_SECRET_"


def file_dir(environ: Mapping[str, str] | None = None) -> Path:
    return Path(setting("CTCS_SECRET_FILE_DIR", _environ(environ)) or "~/.ctcs/secrets").expanduser().resolve()


def secret_file(name: str, *, base_dir: Path | None = None) -> Path:
    """Where a `file:` reference points, relative paths from `base_dir` (default: the current directory)."""
    path = Path(name).expanduser()
    if not path.is_absolute() and base_dir is not None:
        path = base_dir / path
    return path


def reference_problem(reference: str, *, environ: Mapping[str, str] | None = None,
                      base_dir: Path | None = None) -> str:
    """Why the reference may not be read ("" when it may); the text names the setting that decides."""
    kind, _, name = reference.partition(":")
    name = name.strip()
    if kind == "env":
        prefix = env_prefix(environ)
        if not name.startswith(prefix) or name == prefix:
            return (f"{reference} is not allowed: env: references must start with {prefix} "
                    "(setting CTCS_SECRET_ENV_PREFIX)")
    elif kind == "file" and name:
        allowed = file_dir(environ)
        if not secret_file(name, base_dir=base_dir).resolve().is_relative_to(allowed):
            return (f"{reference} is not allowed: file: references must lie under {allowed} "
                    "(setting CTCS_SECRET_FILE_DIR; symlinks and .. are followed first)")
    return ""


def cloud_problem(field: str, cloud: str | pairs.CustomCloud, *, environ: Mapping[str, str] | None = None) -> str:
    """Why a pair side's custom cloud may not be used here ("" when it may): in Azure each of its hosts must be
    listed in CTCS_ALLOWED_CLOUD_HOSTS. `field` is the side's cloud, e.g. `target.cloud`."""
    if isinstance(cloud, str) or not in_azure(environ):
        return ""
    listed = setting("CTCS_ALLOWED_CLOUD_HOSTS", _environ(environ)) or ""
    allowed = {host.strip().lower() for host in listed.split(",") if host.strip()}
    for name in ("authority", "graph", "exchange"):
        host = str(urlparse(getattr(cloud, name)).hostname or "").lower()
        if host not in allowed:
            return (f"{field}.{name}: {host} is not allowed: a custom cloud in Azure must list each of its hosts in "
                    "the app setting CTCS_ALLOWED_CLOUD_HOSTS")
    return ""


def federation_problem(field: str, cloud: str | pairs.CustomCloud) -> str:
    """Why managed identity federation may not sign in to this cloud ("" when it may): the assertion goes only to
    a Microsoft cloud's token authority. `field` is the credential, e.g. `target.credential`."""
    authority = pairs.cloud_endpoints(cloud).authority
    host = urlparse(authority).netloc.lower()
    if host in FEDERATION_AUTHORITY_HOSTS:
        return ""
    return (f"{field}: managed_identity_federation is not allowed with the token authority {host}: the managed "
            f"identity's assertion is sent only to {', '.join(sorted(FEDERATION_AUTHORITY_HOSTS))}")


def credential_references(pair: pairs.TenantPair) -> list[tuple[str, str]]:
    """Every secret reference of the pair, with its field path (`target.credential.certificate`, ...)."""
    found: list[tuple[str, str]] = []
    sides: list[tuple[str, pairs.Credential]] = [("source.credential", pair.source.credential),
                                                 ("target.credential", pair.target.credential)]
    if pair.source.exchange is not None:
        sides.append(("source.exchange.credential", pair.source.exchange.credential))
    for field, credential in sides:
        if isinstance(credential, pairs.ClientSecretCredential):
            found.append((f"{field}.secret", credential.secret))
        elif isinstance(credential, pairs.CertificateCredential):
            found.append((f"{field}.certificate", credential.certificate))
            if credential.password:
                found.append((f"{field}.password", credential.password))
    return found


def pair_problems(pair: pairs.TenantPair, *, environ: Mapping[str, str] | None = None) -> list[str]:
    """Every rule of this module the pair breaks, as "field.path: what is wrong" (what `pairs add` refuses)."""
    problems = [f"{field}: {problem}" for field, reference in credential_references(pair)
                if (problem := reference_problem(reference, environ=environ))]
    for side, tenant in (("source", pair.source), ("target", pair.target)):
        if problem := cloud_problem(f"{side}.cloud", tenant.cloud, environ=environ):
            problems.append(problem)
    credentials: list[tuple[str, pairs.Credential, str | pairs.CustomCloud]] = [
        ("source.credential", pair.source.credential, pair.source.cloud),
        ("target.credential", pair.target.credential, pair.target.cloud)]
    if pair.source.exchange is not None:
        credentials.append(("source.exchange.credential", pair.source.exchange.credential, pair.source.cloud))
    for field, credential, cloud in credentials:
        if isinstance(credential, pairs.FederatedCredential) and (problem := federation_problem(field, cloud)):
            problems.append(problem)
    return problems
