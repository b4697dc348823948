"""OPATH filter text for Exchange `-Filter` parameters, built so that source data can never widen a filter.

Every value goes inside single quotes with each quote character doubled (the only escape OPATH knows inside
quotes), so a value such as `x' -or Name -like '*` stays one literal. Exchange reads filters with PowerShell's
rules, which take the typographic quotes U+2018, U+2019, U+201A and U+201B as single quotes too: each of them
would end the literal as `'` does, so each is doubled the same way (a name written O\u2019Brien stays one value).
Property names are never taken from data: they are checked against a strict pattern. `-like` patterns take a
literal prefix only; a `*` inside it would be a wildcard that no escape can neutralise, so it is refused. A
widened filter would find recipients that are not ours (invariant 1).
"""

from __future__ import annotations

import re

_PROPERTY = re.compile(r"^[A-Za-z][A-Za-z0-9]{0,63}$")
SINGLE_QUOTES = "'\u2018\u2019\u201a\u201b"  # ' and the typographic single quotes PowerShell treats alike
_ANY_SINGLE_QUOTE = re.compile(f"([{SINGLE_QUOTES}])")


def quote(value: str) -> str:
    """A single-quoted OPATH string literal holding exactly `value`."""
    if not isinstance(value, str):
        raise TypeError(f"OPATH values must be strings, not {type(value).__name__}")
    return "'" + _ANY_SINGLE_QUOTE.sub(r"\1\1", value) + "'"


def property_name(name: str) -> str:
    if not _PROPERTY.match(name):
        raise ValueError(f"{name!r} is not a recipient property name")
    return name


def eq(prop: str, value: str) -> str:
    """`Prop -eq 'value'`."""
    return f"{property_name(prop)} -eq {quote(value)}"


def starts_with(prop: str, prefix: str) -> str:
    """`Prop -like 'prefix*'`; the prefix is literal, so it must not hold a wildcard itself."""
    if not prefix:
        raise ValueError("an empty prefix would match every object")
    if "*" in prefix:
        raise ValueError("a -like prefix must not contain '*'")
    return f"{property_name(prop)} -like {quote(prefix + '*')}"


def is_set(prop: str) -> str:
    """`Prop -ne $null`: the property holds a value."""
    return f"{property_name(prop)} -ne $null"


def not_starts_with(prop: str, prefix: str) -> str:
    """`Prop -notlike 'prefix*'`, with the same literal-prefix rule as `starts_with`."""
    return starts_with(prop, prefix).replace(" -like ", " -notlike ", 1)


def all_of(*clauses: str) -> str:
    """Clauses joined by `-and`, each in parentheses."""
    parts = [clause for clause in clauses if clause]
    if not parts:
        raise ValueError("an empty filter would match every object")
    return parts[0] if len(parts) == 1 else " -and ".join(f"({part})" for part in parts)


def any_of(*clauses: str) -> str:
    """Clauses joined by `-or`, each in parentheses so their own operators stay inside."""
    parts = [clause for clause in clauses if clause]
    if not parts:
        raise ValueError("an empty filter would match every object")
    if len(parts) == 1:
        return parts[0]
    return " -or ".join(f"({part})" for part in parts)
