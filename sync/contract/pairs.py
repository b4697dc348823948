"""The tenant pair definition: the JSON contract of docs/design.md, validated.

`parse_pair(data)` returns a `TenantPair` or raises `PairValidationError` listing every problem with its field
path. Secret values never pass through here: credential fields hold references (`kv:`, `env:`, `file:`), and
error messages never echo what was given for them (invariant 6).
"""

from __future__ import annotations

import json
import re
import string
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from sync.contract.clouds import NAMED_CLOUDS, CloudEndpoints
from sync.contract.filters import Clause, clause_problem, normalise_operator
from sync.contract.groupattrs import GROUP_ATTRIBUTES, GROUP_TYPES, GroupType
from sync.contract.userattrs import CONTACT_PARAMETERS, SOURCE_ATTRIBUTES
from sync.errors import PairValidationError

GUID_PATTERN = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
SECRET_REF_PATTERN = re.compile(r"^(kv:[A-Za-z0-9-]{1,127}|env:[A-Za-z_][A-Za-z0-9_]{0,127}|file:\S.{0,1023})$")
ANCHOR_ATTRIBUTES = tuple(f"CustomAttribute{n}" for n in range(1, 16))
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "[::1]")

Guid = Annotated[str, Field(pattern=GUID_PATTERN, description="a GUID")]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)


def _check_secret_ref(value: str) -> str:
    if not SECRET_REF_PATTERN.match(value):
        # Never echo the value: it may be the secret itself.
        raise ValueError("must be a secret reference (kv:<name>, env:<NAME> or file:<path>), never the secret itself")
    return value


class ClientSecretCredential(_Strict):
    type: Literal["client_secret"]
    secret: str

    _ref = field_validator("secret")(_check_secret_ref)


class CertificateCredential(_Strict):
    type: Literal["certificate"]
    certificate: str
    password: str | None = None

    _ref = field_validator("certificate", "password")(lambda value: value if value is None else _check_secret_ref(value))


class FederatedCredential(_Strict):
    type: Literal["managed_identity_federation"]
    managed_identity_client_id: Guid | None = None


Credential = Annotated[
    ClientSecretCredential | CertificateCredential | FederatedCredential, Field(discriminator="type")
]


class CustomCloud(_Strict):
    authority: str
    graph: str
    exchange: str

    @field_validator("authority", "graph", "exchange")
    @classmethod
    def _https(cls, value: str) -> str:
        value = value.rstrip("/")
        host = re.sub(r"^[a-z]+://", "", value).split("/")[0].rsplit(":", 1)[0]
        if not value.startswith("https://") and not (value.startswith("http://") and host in LOOPBACK_HOSTS):
            raise ValueError("must be an https:// URL (plain http only for loopback)")
        return value


CloudName = Literal["global", "usgov", "usgovdod", "china"]


class SourceExchange(_Strict):
    """Read access to the source's own Exchange (a read-only recipient role), for `HiddenFromAddressListsEnabled`."""

    organization: str = Field(pattern=r"^[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+$", description="the source's onmicrosoft.com domain")
    credential: Credential


class SourceTenant(_Strict):
    tenant_id: Guid
    client_id: Guid
    name: str = Field(min_length=1, max_length=64)
    credential: Credential
    cloud: CloudName | CustomCloud = "global"
    exchange: SourceExchange | None = None

    @property
    def endpoints(self) -> CloudEndpoints:
        return cloud_endpoints(self.cloud)


class TargetTenant(_Strict):
    tenant_id: Guid
    organization: str = Field(pattern=r"^[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+$", description="a domain like fabrikam.onmicrosoft.com")
    client_id: Guid
    credential: Credential
    cloud: CloudName | CustomCloud = "global"

    @property
    def endpoints(self) -> CloudEndpoints:
        return cloud_endpoints(self.cloud)


class FilterClause(_Strict):
    attribute: str
    operator: str
    value: str | None = None

    @model_validator(mode="after")
    def _well_formed(self) -> FilterClause:
        if self.attribute.split(".", 1)[0] not in SOURCE_ATTRIBUTES:
            raise ValueError(f"attribute {self.attribute!r} is not a source user attribute ctcs can read")
        problem = clause_problem(self.attribute, self.operator, self.value)
        if problem:
            raise ValueError(problem)
        return self

    def clause(self) -> Clause:
        return Clause(self.attribute, normalise_operator(self.operator), self.value)


Domain = Annotated[str, Field(pattern=r"^[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+$")]


def or_of_ands(filters: Sequence[FilterClause | GroupFilterClause] | Sequence[list[Any]]) -> list[list[Clause]]:
    """Scoping filters as OR-of-ANDs (users' and groups' alike): one flat list is a single AND group."""
    if not filters:
        return []
    if not isinstance(filters[0], list):
        return [[item.clause() for item in filters if not isinstance(item, list)]]
    return [[item.clause() for item in group] for group in filters if isinstance(group, list)]


class Scope(_Strict):
    include_groups: list[Guid] = []
    exclude_groups: list[Guid] = []
    include_domains: list[Domain] = []
    exclude_domains: list[Domain] = []
    include_disabled: bool = False
    include_guests: bool = False
    honor_hidden_from_gal: bool = True
    filters: list[FilterClause] | list[list[FilterClause]] = []

    @property
    def filter_groups(self) -> list[list[Clause]]:
        """The filters as OR-of-ANDs: one flat list is a single AND group."""
        return or_of_ands(self.filters)

    @field_validator("include_domains", "exclude_domains")
    @classmethod
    def _lower(cls, domains: list[str]) -> list[str]:
        return [domain.lower() for domain in domains]


class ContactSettings(_Strict):
    display_name: str = Field("{displayName}", min_length=1, max_length=1024)
    hidden_from_gal: bool = False
    anchor_attribute: Literal[ANCHOR_ATTRIBUTES] = "CustomAttribute15"  # type: ignore[valid-type]
    attributes: dict[str, Annotated[str, Field(max_length=1024)]] = {}

    @field_validator("display_name")
    @classmethod
    def _display_template(cls, template: str) -> str:
        _check_template(template)
        return template

    @field_validator("attributes")
    @classmethod
    def _attribute_templates(cls, attributes: dict[str, str]) -> dict[str, str]:
        problems = []
        for parameter, template in attributes.items():
            if parameter not in CONTACT_PARAMETERS:
                problems.append(f"{parameter!r} is not a contact parameter ctcs can set")
                continue
            try:
                _check_template(template)
            except ValueError as error:
                problems.append(f"{parameter}: {error}")
        if problems:
            raise ValueError("; ".join(problems))
        return attributes

    @model_validator(mode="after")
    def _anchor_not_mapped(self) -> ContactSettings:
        if self.anchor_attribute in self.attributes:
            raise ValueError(f"attributes must not map {self.anchor_attribute}: it holds the ctcs anchor")
        return self


class Deletion(_Strict):
    mode: Literal["delete", "hide", "hide_then_delete"] = "delete"
    grace_days: int = Field(30, ge=0, le=3650)
    max_deletes: int = Field(50, ge=0)
    max_delete_percent: float = Field(10, ge=0, le=100)
    # The limits hold per plan and over this many hours of the pair's queued removals (0: per plan only).
    window_hours: int = Field(24, ge=0, le=24 * 30)
    # A leaver's contact that `python -m sync adopt` took over: hidden ("hide") or as `mode` says ("follow_mode").
    adopted: Literal["hide", "follow_mode"] = "hide"


class GroupFilterClause(_Strict):
    attribute: str
    operator: str
    value: str | None = None

    @model_validator(mode="after")
    def _well_formed(self) -> GroupFilterClause:
        if self.attribute not in GROUP_ATTRIBUTES:
            raise ValueError(f"attribute {self.attribute!r} is not a source group attribute ctcs can read "
                             f"({', '.join(sorted(GROUP_ATTRIBUTES))})")
        problem = clause_problem(self.attribute, self.operator, self.value)
        if problem:
            raise ValueError(problem)
        return self

    def clause(self) -> Clause:
        return Clause(self.attribute, normalise_operator(self.operator), self.value)


class GroupScope(_Strict):
    """Which source groups become contacts (pairs whose `objects` include "groups"), and their display name."""

    include_types: list[GroupType] = list(GROUP_TYPES)
    include_groups: list[Guid] = []
    exclude_groups: list[Guid] = []
    include_domains: list[Domain] = []
    exclude_domains: list[Domain] = []
    honor_hidden_from_gal: bool = True
    filters: list[GroupFilterClause] | list[list[GroupFilterClause]] = []
    display_name: str = Field("{displayName}", min_length=1, max_length=1024)

    @property
    def filter_groups(self) -> list[list[Clause]]:
        return or_of_ands(self.filters)

    @field_validator("include_domains", "exclude_domains")
    @classmethod
    def _lower(cls, domains: list[str]) -> list[str]:
        return [domain.lower() for domain in domains]

    @field_validator("include_groups", "exclude_groups")
    @classmethod
    def _lower_ids(cls, ids: list[str]) -> list[str]:
        return [group_id.lower() for group_id in ids]

    @field_validator("include_types")
    @classmethod
    def _some_type(cls, types: list[str]) -> list[str]:
        if not types:
            raise ValueError(f"must name at least one of {', '.join(GROUP_TYPES)}")
        return list(dict.fromkeys(types))

    @field_validator("display_name")
    @classmethod
    def _display_template(cls, template: str) -> str:
        _check_template(template, GROUP_ATTRIBUTES, "source group attribute")
        return template


ObjectName = Literal["users", "groups"]


class TenantPair(_Strict):
    id: str = Field(pattern=r"^[a-z0-9-]{3,40}$", description="3 to 40 lower-case letters, digits and -")
    enabled: bool = True
    source: SourceTenant
    target: TargetTenant
    scope: Scope = Scope()
    contact: ContactSettings = ContactSettings()
    deletion: Deletion = Deletion()
    # "adopt_contacts" is retired: a new pair file with it is refused (`load_pair_file`); a stored pair that has it
    # is read as "skip" (the worker never takes a contact over) and its status says so.
    conflicts: Literal["skip", "adopt_contacts"] = "skip"
    # How often a reconcile round compares the target's owned contacts with ContactState and the source (hours).
    reconcile_hours: int = Field(24, ge=1, le=24 * 90)
    objects: list[ObjectName] = ["users"]
    groups: GroupScope = GroupScope()
    # Set by the store (sync.state.pairs), never read from a pair file nor written into its JSON: which stored life of
    # this pair id the object is. "" is a pair stored before generations existed (see docs/pair-file.md).
    generation: str = Field("", exclude=True)

    @field_validator("objects")
    @classmethod
    def _objects(cls, objects: list[str]) -> list[str]:
        if not objects:
            raise ValueError('must name "users", "groups" or both')
        if len(set(objects)) != len(objects):
            raise ValueError("names an object kind twice")
        return objects

    @property
    def syncs_users(self) -> bool:
        return "users" in self.objects

    @property
    def syncs_groups(self) -> bool:
        return "groups" in self.objects

    @property
    def anchor_prefix(self) -> str:
        return f"ctcs|{self.source.tenant_id.lower()}|"

    def anchor(self, source_object_id: str) -> str:
        return f"{self.anchor_prefix}{source_object_id.lower()}"

    def to_json(self) -> str:
        return self.model_dump_json(exclude_none=True)


def cloud_endpoints(cloud: str | CustomCloud) -> CloudEndpoints:
    if isinstance(cloud, CustomCloud):
        return CloudEndpoints(cloud.authority, cloud.graph, cloud.exchange)
    return NAMED_CLOUDS[cloud]


def template_fields(template: str) -> list[str]:
    """The source attributes a template names: `"{displayName} ({companyName})"` → displayName, companyName."""
    return [name for _, name, _, _ in string.Formatter().parse(template) if name is not None]


def _check_template(template: str, attributes: frozenset[str] = SOURCE_ATTRIBUTES,
                    what: str = "source user attribute") -> None:
    try:
        names = template_fields(template)
    except ValueError as error:
        raise ValueError(f"is not a valid template ({error}); write literal braces as {{{{ and }}}}") from None
    for name in names:
        top = name.split(".", 1)[0]
        if name == "source.name":
            continue
        if not name or top not in attributes:
            raise ValueError(f"names {{{name}}}, which is not a {what} ctcs can read")


# Fields whose schema is final but whose behaviour a later release brings; refusing them beats ignoring them.
def _unsupported(pair: TenantPair) -> list[str]:
    problems = []
    if pair.contact.attributes.get("Manager", "") != "":
        # Not a template: Manager always names the manager's own contact in the target (see sync.core.managers).
        problems.append('contact.attributes.Manager: may only be "" (turns manager links off); by default it links '
                        "each contact to its manager's contact")
    return problems


def _error_path(loc: tuple[int | str, ...]) -> str:
    # Drop pydantic's union-branch markers (the credential type tag, "list[...]") so paths read as JSON paths.
    parts = [str(part) for part in loc if not (isinstance(part, str) and ("[" in part or part in _UNION_TAGS))]
    return ".".join(parts) or "(top level)"


_UNION_TAGS = {"client_secret", "certificate", "managed_identity_federation", "CustomCloud", "function-after"}


def _error_text(error: Any) -> str:
    message = str(error["msg"]).removeprefix("Value error, ")
    kind = error["type"]
    if kind == "extra_forbidden":
        message = "unknown key (check the spelling; unknown keys are refused)"
    elif kind == "missing":
        message = "is required"
    elif kind == "string_pattern_mismatch":
        pattern = error.get("ctx", {}).get("pattern", "")
        message = {GUID_PATTERN: "must be a GUID like 00000000-0000-0000-0000-000000000000"}.get(
            pattern, f"does not match the expected form {pattern}"
        )
    elif kind == "union_tag_invalid":
        message = f"type must be one of {error.get('ctx', {}).get('expected_tags', '')}"
    elif kind == "literal_error":
        message = f"must be one of {error.get('ctx', {}).get('expected', '')}"
    return message


def parse_pair(data: Any, *, where: str = "pair definition") -> TenantPair:
    """Validate a decoded pair definition; every problem is reported, each with its field path."""
    if not isinstance(data, dict):
        raise PairValidationError(["(top level): must be a JSON object"], where=where)
    if "generation" in data:
        raise PairValidationError(["generation: set by ctcs when the pair is stored; remove it from the pair file"],
                                  where=where)
    try:
        pair = TenantPair.model_validate(data)
    except ValidationError as error:
        items = error.errors(include_input=False, include_url=False)
        paths = [_error_path(item["loc"]) for item in items]
        problems: list[str] = []
        for path, item in zip(paths, items, strict=True):
            # A union reports each branch: drop "should be a list/object" when the other branch said more.
            if item["type"] in ("list_type", "model_type", "dict_type") and paths.count(path) > 1:
                continue
            if path.endswith("cloud") and item["type"] == "literal_error":
                text = "must be one of 'global', 'usgov', 'usgovdod', 'china' or an object {authority, graph, exchange}"
            else:
                text = _error_text(item)
            line = f"{path}: {text}"
            if line not in problems:
                problems.append(line)
        raise PairValidationError(problems, where=where) from None
    unsupported = _unsupported(pair)
    if unsupported:
        raise PairValidationError(unsupported, where=where)
    return pair


RETIRED_ADOPT_NOTE = ('conflicts "adopt_contacts" is no longer applied (read as "skip"): take existing contacts over '
                      "with python -m sync adopt --pair ID --dry-run, then without --dry-run")


def load_pair_file(path: str | Path) -> TenantPair:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise PairValidationError([f"(file): cannot read {path}: {error.strerror}"], where=str(path)) from None
    except UnicodeDecodeError as error:
        raise PairValidationError([f"(file): not UTF-8 text (byte {error.start})"], where=str(path)) from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise PairValidationError(
            [f"(file): not valid JSON at line {error.lineno}, column {error.colno}: {error.msg}"], where=str(path)
        ) from None
    except RecursionError:  # json gives up on deep nesting with RecursionError, not JSONDecodeError
        raise PairValidationError(["(file): JSON nested too deeply to be a pair definition"], where=str(path)) from None
    pair = parse_pair(data, where=str(path))
    if pair.conflicts == "adopt_contacts":  # a new definition: refused; a stored one is read as "skip"
        raise PairValidationError(['conflicts: "adopt_contacts" is retired; use "skip" and take existing contacts '
                                   "over once with python -m sync adopt --pair ID (--dry-run lists them first)"],
                                  where=str(path))
    return pair
