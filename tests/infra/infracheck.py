"""Offline checks of the Bicep templates, shared by the infra tests and their broken fixtures.

Every check is a function that takes file paths and returns a list of problems (empty = fine), so the same code
can be shown to pass on `infra/` and to fail on `tests/infra/fixtures/`. Templates are parsed with pycep-parser
(no Bicep compiler is available offline); `resolve()` is a deliberately small evaluator for the expressions these
templates use (parameter defaults, variables, object literals, `union()`, `string()`, property access).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path
from typing import Any

from pycep import BicepParser

REPO = Path(__file__).resolve().parents[2]
INFRA = REPO / "infra"
MAIN_BICEP = INFRA / "main.bicep"
FIXTURES = Path(__file__).resolve().parent / "fixtures"

# Built-in Azure role definition ids (learn.microsoft.com "Azure built-in roles"; identical in every tenant and cloud).
BUILT_IN_ROLES = {
    "Storage Blob Data Owner": "b7e6dc6d-f1e8-4753-8033-0f276bb0955b",
    "Storage Queue Data Contributor": "974c5e8b-45b9-4653-ba55-5f855dd0fb88",
    "Storage Table Data Contributor": "0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3",
    "Monitoring Metrics Publisher": "3913510d-42f4-4e42-8a64-420c390055eb",
    "Key Vault Secrets User": "4633458b-17de-408a-b874-0445c86b69e6",
    "Key Vault Secrets Officer": "b86a8fe4-44ce-4948-aee5-eccb2c155cd7",
    "Key Vault Certificates Officer": "a4417e6f-fecd-4de8-b567-7b0420556985",
}
# What the app's identity must hold for the host and ctcs to work without keys.
IDENTITY_ROLES = (
    "Storage Blob Data Owner",
    "Storage Queue Data Contributor",
    "Storage Table Data Contributor",
    "Monitoring Metrics Publisher",
    "Key Vault Secrets User",
)

SEMVER = re.compile(r"^\d+\.\d+\.\d+$")
SECRETISH_NAME = re.compile(
    r"secret|password|passwd|connection_?string|accountkey|access_?key|sas_?token|instrumentationkey", re.IGNORECASE
)
KEY_FUNCTIONS = re.compile(r"\blist(Keys|AccountSas|ServiceSas|Secrets|ConnectionStrings|Credentials?)\b")

_parser: BicepParser | None = None


def _bicep_parser() -> BicepParser:
    global _parser
    if _parser is None:
        _parser = BicepParser()
    return _parser


@lru_cache(maxsize=64)
def _parse_cached(path: str, mtime: float) -> dict[str, Any]:
    return _bicep_parser().parse(text=Path(path).read_text(encoding="utf-8"))


def parse(path: Path) -> dict[str, Any]:
    """The pycep document of a .bicep file; raises on a syntax error."""
    return _parse_cached(str(path), path.stat().st_mtime)


def bicep_files(root: Path = INFRA) -> list[Path]:
    return sorted(root.rglob("*.bicep"))


# --- syntax and module references ---------------------------------------------------------------------------------


def syntax_problems(path: Path) -> list[str]:
    try:
        parse(path)
    except Exception as error:  # lark raises several error types; all mean "not valid Bicep"
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        return [f"{path.name}: does not parse: {first_line}"]
    return []


def _modules(doc: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    yield from (doc.get("modules") or {}).items()


def _module_config(module: dict[str, Any]) -> dict[str, Any]:
    """The `{ name, params, ... }` body of a module, unwrapping `if (...)` conditions and loops."""
    config = module.get("config") or {}
    while "condition" in config and "config" in config:
        config = config["config"]
    if "loop" in config and "config" in config:
        config = config["config"]
    return config


def local_module_problems(path: Path) -> list[str]:
    problems = []
    for symbol, module in _modules(parse(path)):
        if module["type"] == "local":
            target = (path.parent / module["detail"]["path"]).resolve()
            if not target.is_file():
                problems.append(
                    f"{path.name}: module {symbol} points at {module['detail']['path']}, which does not exist"
                )
    return problems


_REGISTRY_REF = re.compile(r"""['"](br[:/][^'"]+)['"]""")


def registry_pin_problems(path: Path) -> list[str]:
    """Every registry module must carry an exact version (x.y.z) or a digest: `latest`, `0.15` or no tag drift."""
    problems = []
    # Read the raw text too: a reference without any tag is not even valid Bicep, but it is an unpinned module first.
    for ref in _REGISTRY_REF.findall(path.read_text(encoding="utf-8")):
        body = ref.split(":", 1)[1] if ref.startswith("br:") else ref.split(":", 1)[-1]
        if "@sha256:" in ref:
            continue
        tag = body.rsplit(":", 1)[1] if ":" in body else None
        if tag is None or not SEMVER.match(tag):
            problems.append(f"{path.name}: registry module {ref} is not pinned to an exact version (x.y.z)")
    return problems


def registry_modules(paths: list[Path]) -> dict[str, set[str]]:
    """Registry module path → the versions used, over the given files."""
    found: dict[str, set[str]] = {}
    for path in paths:
        for _, module in _modules(parse(path)):
            if module["type"] in ("bicep_registry_alias", "bicep_registry"):
                found.setdefault(module["detail"]["path"].removeprefix("bicep/"), set()).add(module["detail"]["tag"])
    return found


# --- a small evaluator -----------------------------------------------------------------------------------------------


class Scope:
    """Where a name is looked up: a document, and for a module, the params its caller passed."""

    def __init__(self, doc: dict[str, Any], passed: dict[str, Any] | None = None, caller: Scope | None = None):
        self.doc = doc
        self.passed = passed or {}
        self.caller = caller


UNRESOLVED = object()


def _key(name: str) -> str:
    return name[1:-1] if len(name) >= 2 and name[0] == name[-1] == "'" else name


def resolve(expr: Any, scope: Scope) -> Any:
    """Best-effort value of an expression; runtime values (module outputs, resource properties) stay as expressions."""
    if isinstance(expr, str):
        variables = scope.doc.get("variables") or {}
        parameters = scope.doc.get("parameters") or {}
        if expr in variables:
            return resolve(variables[expr]["value"], scope)
        if expr in parameters:
            if expr in scope.passed and scope.caller is not None:
                return resolve(scope.passed[expr], scope.caller)
            return parameters[expr].get("default", UNRESOLVED)
        if "${" in expr:
            return _INTERPOLATION.sub(lambda match: _interpolate(match, scope), expr)
        return expr
    if isinstance(expr, dict):
        if "function" in expr:
            function = expr["function"]
            args = list((function.get("parameters") or {}).values())
            if function["type"] == "union":
                merged: dict[str, Any] = {}
                for arg in args:
                    for item in arg if isinstance(arg, list) else [arg]:
                        value = resolve(item, scope)
                        if isinstance(value, dict):
                            # A conditional object (`flag ? {...} : {}`) may contribute either branch's keys.
                            branches = _conditional_branches(value)
                            for branch in branches if branches is not None else [value]:
                                if isinstance(branch, dict):
                                    merged.update(branch)
                return merged
            if function["type"] == "string" and args:
                value = resolve(args[0], scope)
                return str(value).lower() if isinstance(value, bool) else str(value)
            return expr
        if "operator" in expr:
            operator = expr["operator"]
            if operator["type"] == "property_accessor":
                base = resolve(operator["operands"]["operand_1"], scope)
                member = operator["operands"]["operand_2"]
                if isinstance(base, dict) and isinstance(member, str) and member in base:
                    return resolve(base[member], scope)
            return expr
        return {_key(key): resolve(value, scope) for key, value in expr.items()}
    if isinstance(expr, list):
        return [resolve(item, scope) for item in expr]
    return expr


def _conditional_branches(value: dict[str, Any]) -> list[Any] | None:
    """The (false, true) values of a resolved `condition ? a : b`, or None when `value` is not one."""
    operator = value.get("operator")
    if not isinstance(operator, dict) or operator.get("type") != "conditional":
        return None
    operands = operator["operands"]
    return [operands.get("false_value"), operands.get("true_value")]


def conditional_on(expr: Any, parameter: str) -> bool:
    """The expression is `parameter ? ... : ...`."""
    branches = _conditional_branches(expr) if isinstance(expr, dict) else None
    return branches is not None and expr["operator"]["operands"].get("condition") == parameter


_INTERPOLATION = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def _interpolate(match: re.Match[str], scope: Scope) -> str:
    value = resolve(match.group(1), scope)
    return value if isinstance(value, str) and value != match.group(1) else match.group(0)


def text_of(expr: Any) -> str:
    return json.dumps(expr, sort_keys=True)


# --- the Function App's settings ---------------------------------------------------------------------------------------


def _site_modules(path: Path, scope: Scope) -> Iterator[tuple[dict[str, Any], Scope]]:
    """Every `avm/res/web/site` module reachable from `path`, with the scope its params are evaluated in."""
    for _, module in _modules(scope.doc):
        config = _module_config(module)
        if module["type"] == "local":
            child_path = (path.parent / module["detail"]["path"]).resolve()
            if child_path.is_file():
                child = Scope(parse(child_path), config.get("params") or {}, scope)
                yield from _site_modules(child_path, child)
        elif module["detail"].get("path", "").removeprefix("bicep/") == "avm/res/web/site":
            yield config.get("params") or {}, scope


def site_params(main: Path = MAIN_BICEP) -> list[tuple[dict[str, Any], Scope]]:
    return list(_site_modules(main, Scope(parse(main))))


def app_settings(main: Path = MAIN_BICEP) -> dict[str, Any]:
    """Setting name → resolved value (or expression) as deployed to the Function App."""
    settings: dict[str, Any] = {}
    for params, scope in site_params(main):
        value = resolve(params.get("appSettingsKeyValuePairs", {}), scope)
        if isinstance(value, dict):
            settings.update(value)
    return settings


# Settings the platform owns: allowed in Bicep although sync/settings.py does not declare them.
PLATFORM_SETTINGS = re.compile(r"^(FUNCTIONS_EXTENSION_VERSION|APPLICATIONINSIGHTS_[A-Z_]+|AzureWebJobsStorage__\w+)$")
# Declared settings that must NOT be set in Azure, and why.
NOT_IN_AZURE = {
    "AzureWebJobsStorage": "a connection string; in Azure the identity-based AzureWebJobsStorage__* settings replace it",
    "CTCS_WORKER_CONCURRENCY": "read only by `python -m sync run`; in Azure host.json sets the queue batch size",
    "CTCS_RUN_WAIT_SECONDS": "read only by `python -m sync run`; the Functions worker defers ops, it never waits",
}
# Declared settings whose Azure value is derived at deployment (not the code's default), and from what.
DERIVED_IN_AZURE = {"CTCS_HOSTING_CLOUD": "environment"}
# Flex Consumption configures the runtime in functionAppConfig and refuses these as app settings.
FLEX_REFUSED = (
    "FUNCTIONS_WORKER_RUNTIME",
    "FUNCTIONS_EXTENSION_VERSION",
    "WEBSITE_RUN_FROM_PACKAGE",
    "WEBSITE_CONTENTAZUREFILECONNECTIONSTRING",
    "WEBSITE_CONTENTSHARE",
    "SCM_DO_BUILD_DURING_DEPLOYMENT",
)


def settings_problems(deployed: dict[str, Any], declared: dict[str, str | None]) -> list[str]:
    """Compare the deployed app settings with the registry (`name → default`) of sync/settings.py."""
    problems = []
    for name, default in declared.items():
        if name in NOT_IN_AZURE:
            if name in deployed:
                problems.append(f"{name} is set in Azure but must not be: {NOT_IN_AZURE[name]}")
            continue
        if name not in deployed:
            problems.append(f"{name} is declared in sync/settings.py but not set on the Function App")
        elif name in DERIVED_IN_AZURE:
            if f'"type": "{DERIVED_IN_AZURE[name]}"' not in text_of(deployed[name]):
                problems.append(f"{name} must be derived from {DERIVED_IN_AZURE[name]}() in Bicep")
        elif default is not None and deployed[name] != default:
            problems.append(f"{name} defaults to {deployed[name]!r} in Bicep but to {default!r} in sync/settings.py")
    for name in deployed:
        if name not in declared and not PLATFORM_SETTINGS.match(name):
            problems.append(f"{name} is set on the Function App but not declared in sync/settings.py")
    for name in FLEX_REFUSED:
        if name in deployed:
            problems.append(f"{name} must not be an app setting on Flex Consumption (use functionAppConfig)")
    if deployed.get("AzureWebJobsStorage__credential", "managedidentity") != "managedidentity":
        problems.append("AzureWebJobsStorage__credential must be 'managedidentity'")
    return problems


# --- storage, secrets, roles ---------------------------------------------------------------------------------------------


def _storage_accounts(path: Path) -> Iterator[tuple[str, dict[str, Any], Scope]]:
    """(symbol, properties or params, scope) of every storage account a file creates."""
    doc = parse(path)
    scope = Scope(doc)
    for symbol, module in _modules(doc):
        if (
            module["type"] != "local"
            and module["detail"]["path"].removeprefix("bicep/") == "avm/res/storage/storage-account"
        ):
            yield symbol, _module_config(module).get("params") or {}, scope
    for symbol, resource in (doc.get("resources") or {}).items():
        if resource["type"] == "Microsoft.Storage/storageAccounts" and not resource.get("existing"):
            config = resource["config"]
            while "condition" in config and "config" in config:
                config = config["config"]
            yield symbol, config.get("properties") or {}, scope


def storage_problems(path: Path) -> list[str]:
    problems = []
    for symbol, props, scope in _storage_accounts(path):
        if resolve(props.get("allowSharedKeyAccess", UNRESOLVED), scope) is not False:
            problems.append(f"{path.name}: storage {symbol} must set allowSharedKeyAccess: false (keys stay off)")
        if resolve(props.get("allowBlobPublicAccess", UNRESOLVED), scope) is not False:
            problems.append(f"{path.name}: storage {symbol} must set allowBlobPublicAccess: false")
    return problems


def storage_accounts_found(paths: list[Path]) -> int:
    return sum(1 for path in paths for _ in _storage_accounts(path))


def vault_fed_parameters(main: Path = MAIN_BICEP) -> dict[str, set[str]]:
    """Module file name → its parameters that main.bicep fills with `<vault>.getSecret(...)` and nothing else: the one
    way a secret may reach a @secure() parameter (Key Vault hands it to the deployment, nothing records it)."""
    fed: dict[str, set[str]] = {}
    for _, module in _modules(parse(main)):
        if module["type"] != "local":
            continue
        for name, value in (_module_config(module).get("params") or {}).items():
            operator = value.get("operator") if isinstance(value, dict) else None
            if isinstance(operator, dict) and operator.get("type") == "function_accessor" and (
                operator.get("operands", {}).get("func_name") == "getSecret"
            ):
                fed.setdefault(Path(module["detail"]["path"]).name, set()).add(name)
    return fed


def secret_problems(path: Path) -> list[str]:
    """No key-listing functions, no account keys in strings, no secure or secret-looking parameters or outputs
    (a @secure() parameter main.bicep fills from Key Vault with getSecret() excepted)."""
    doc = parse(path)
    problems = []
    from_vault = vault_fed_parameters().get(path.name, set()) if path.parent != INFRA else set()
    body = text_of({k: v for k, v in doc.items() if k != "globals"})
    if KEY_FUNCTIONS.search(body):
        problems.append(f"{path.name}: calls a list*() key function ({KEY_FUNCTIONS.search(body).group(0)})")  # type: ignore[union-attr]
    if re.search(r"AccountKey=", body, re.IGNORECASE):
        problems.append(f"{path.name}: builds a connection string with AccountKey")
    for kind in ("parameters", "outputs"):
        for name, item in (doc.get(kind) or {}).items():
            secure = any(decorator.get("type") == "secure" for decorator in item.get("decorators") or [])
            if secure and not (kind == "parameters" and name in from_vault):
                problems.append(
                    f"{path.name}: {kind[:-1]} {name} is @secure(): no secret may pass through parameters or outputs"
                )
            if SECRETISH_NAME.search(name):
                problems.append(f"{path.name}: {kind[:-1]} {name} looks like a secret")
            if kind == "outputs" and re.search(
                r"connectionstring|instrumentationkey|primarykey|secret", text_of(item.get("value")), re.IGNORECASE
            ):
                problems.append(f"{path.name}: output {name} exposes a connection string, key or secret")
    return problems


def parameters_file_problems(path: Path) -> list[str]:
    """main.parameters.json may only hold azd substitutions (`${NAME}` or `${NAME=default}`), never literal secrets."""
    problems = []
    data = json.loads(path.read_text(encoding="utf-8"))
    for name, item in data.get("parameters", {}).items():
        value = item.get("value")
        if SECRETISH_NAME.search(name):
            problems.append(f"{path.name}: parameter {name} looks like a secret")
        if "reference" in item:
            problems.append(f"{path.name}: parameter {name} pulls a Key Vault secret into the deployment")
        if not (isinstance(value, str) and re.fullmatch(r"\$\{[A-Z_][A-Z0-9_]*(=[^}]*)?\}", value)):
            problems.append(f"{path.name}: parameter {name} must be an azd substitution, not a literal value")
    return problems


def role_assignments(path: Path) -> list[tuple[str, str, str]]:
    """(symbol, role definition id, principal expression) of every role assignment resource in a file."""
    doc = parse(path)
    scope = Scope(doc)
    found = []
    for symbol, resource in (doc.get("resources") or {}).items():
        if resource["type"] != "Microsoft.Authorization/roleAssignments":
            continue
        config = resource["config"]
        while "condition" in config and "config" in config:
            config = config["config"]
        props = config.get("properties") or {}
        role = props.get("roleDefinitionId")
        if isinstance(role, dict) and "function" in role:
            args = role["function"].get("parameters") or {}
            role = args.get("resource_name_1", args.get("resource_name"))
        found.append((symbol, str(resolve(role, scope)), str(props.get("principalId"))))
    return found


def role_problems(path: Path) -> list[str]:
    documented = set(BUILT_IN_ROLES.values())
    return [
        f"{path.name}: role assignment {symbol} uses {role}, which is not one of the documented built-in roles"
        for symbol, role, _ in role_assignments(path)
        if role not in documented
    ]


def all_problems(path: Path) -> list[str]:
    """Every per-file check at once (used on the broken fixtures); a file that does not parse gets only the text checks."""
    problems = syntax_problems(path) + registry_pin_problems(path)
    if syntax_problems(path):
        return problems
    return problems + local_module_problems(path) + storage_problems(path) + secret_problems(path) + role_problems(path)
