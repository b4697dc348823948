"""Scoping filters with the operators of Entra provisioning (pure).

A pair's `scope.filters` is a list of clauses (all must hold) or a list of such lists (any list may hold).
String comparisons are case-sensitive, as Entra's are. A multi-valued attribute (proxyAddresses, businessPhones)
matches when any of its values does; the negative operators hold when none does.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

OPERATORS = (
    "EQUALS", "NOT_EQUALS", "IS_TRUE", "IS_FALSE", "IS_NULL", "IS_NOT_NULL", "REGEX_MATCH", "NOT_REGEX_MATCH",
    "INCLUDES", "GREATER_THAN", "GREATER_THAN_OR_EQUALS", "ENDS_WITH",
)
VALUELESS = frozenset({"IS_TRUE", "IS_FALSE", "IS_NULL", "IS_NOT_NULL"})
NUMERIC = frozenset({"GREATER_THAN", "GREATER_THAN_OR_EQUALS"})
NEGATIVE = frozenset({"NOT_EQUALS", "NOT_REGEX_MATCH"})


def normalise_operator(operator: str) -> str:
    """`NOT EQUALS`, `Greater_Than`, `regex match` → the canonical upper-case, underscore form."""
    return "_".join(operator.replace("_", " ").split()).upper()


@dataclass(frozen=True)
class Clause:
    attribute: str
    operator: str  # canonical form
    value: str | None = None

    def describe(self) -> str:
        shown = "" if self.operator in VALUELESS else f" {self.value!r}"
        return f"{self.attribute} {self.operator.replace('_', ' ')}{shown}"


def clause_problem(attribute: str, operator: str, value: str | None) -> str | None:
    """Why a clause cannot be evaluated, or None when it is well-formed."""
    canonical = normalise_operator(operator)
    if canonical not in OPERATORS:
        return f"operator {operator!r} is not one of {', '.join(op.replace('_', ' ') for op in OPERATORS)}"
    if canonical in VALUELESS:
        return None if value in (None, "") else f"{operator} takes no value"
    if value is None:
        return f"{operator} needs a value"
    if canonical in NUMERIC and not re.fullmatch(r"-?\d+", value.strip()):
        return f"{operator} compares whole numbers; {value!r} is not one"
    if canonical in ("REGEX_MATCH", "NOT_REGEX_MATCH"):
        try:
            re.compile(value)
        except re.error as error:
            return f"{value!r} is not a valid regular expression ({error})"
    return None


def attribute_value(user: Mapping[str, Any], path: str) -> Any:
    value: Any = user
    for part in path.split("."):
        value = value.get(part) if isinstance(value, Mapping) else None
    return value


def _values(value: Any) -> list[Any]:
    if value is None:
        return []
    if isinstance(value, list | tuple):
        return [item for item in value if item not in (None, "")]
    return [] if value == "" else [value]


@lru_cache(maxsize=256)
def _regex(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


def _as_int(value: Any) -> int | None:
    try:
        return int(str(value).strip())
    except ValueError:
        return None


def _greater(expected: str, inclusive: bool) -> Callable[[Any], bool]:
    bound = int(expected)

    def test(item: Any) -> bool:
        number = _as_int(item)
        return number is not None and (number >= bound if inclusive else number > bound)

    return test


def clause_holds(clause: Clause, user: Mapping[str, Any]) -> bool:
    value = attribute_value(user, clause.attribute)
    values = _values(value)
    op, expected = clause.operator, clause.value or ""
    if op == "IS_NULL":
        return not values
    if op == "IS_NOT_NULL":
        return bool(values)
    if op in ("IS_TRUE", "IS_FALSE"):
        wanted = op == "IS_TRUE"
        return any(item is wanted or str(item).lower() == str(wanted).lower() for item in values)
    tests: dict[str, Callable[[Any], bool]] = {
        "EQUALS": lambda item: str(item) == expected,
        "NOT_EQUALS": lambda item: str(item) == expected,
        "INCLUDES": lambda item: expected in str(item),
        "ENDS_WITH": lambda item: str(item).endswith(expected),
        "REGEX_MATCH": lambda item: _regex(expected).search(str(item)) is not None,
        "NOT_REGEX_MATCH": lambda item: _regex(expected).search(str(item)) is not None,
    }
    test = _greater(expected, op == "GREATER_THAN_OR_EQUALS") if op in NUMERIC else tests[op]
    matched = any(test(item) for item in values)
    return not matched if op in NEGATIVE else matched


def failing_clause(groups: Sequence[Sequence[Clause]], user: Mapping[str, Any]) -> Clause | None:
    """None when the user passes the filters (some group's clauses all hold); else the first clause that failed."""
    first_failure: Clause | None = None
    for group in groups:
        failed = next((clause for clause in group if not clause_holds(clause, user)), None)
        if failed is None:
            return None
        first_failure = first_failure or failed
    return first_failure
