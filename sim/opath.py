"""A small OPATH filter parser/evaluator for Get-MailContact / Get-Recipient `-Filter`.

Grammar:  expr := term ("-or" term)* ; term := factor ("-and" factor)* ;
          factor := "(" expr ")" | "-not" factor | Property op value ;  op := -eq -ne -like -notlike
Values: 'single quoted' ('' is a quote; U+2018, U+2019, U+201A and U+201B are single quotes too), "double
quoted", or a bare word ($true, $false, $null, numbers).
Comparison is case-insensitive; a list property (EmailAddresses) matches when any element does; EmailAddresses
compares whole proxy addresses ("smtp:x@y" matches "SMTP:x@y"; a value without prefix means smtp: for -eq).

Strict where Exchange Online is (each rule refused with a Binding error, as Exchange refuses it):
- each cmdlet filters only on its own documented properties (`FILTERABLE_BY`): Get-Contact cannot filter on a custom
  attribute or an address, Get-MailContact not on FirstName or Department;
- `*` in `-like`/`-notlike` is a wildcard only as the last character ('ctcs|t|*'); a leading or inner `*` is refused;
- `EmailAddresses -like` matches the whole proxy address, prefix included: 'smtp:lila*' finds lila@..., 'lila*' does
  not (as the filterable-properties documentation shows).
`FILTERABLE_BY` is a module-level mapping so a recorded tenant profile can replace it.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

_CUSTOM = frozenset(f"CustomAttribute{n}" for n in range(1, 16))
_EXTENSION = frozenset(f"ExtensionCustomAttribute{n}" for n in range(1, 6))
# Every recipient cmdlet filters on these (identity and type).
_ANY_RECIPIENT = frozenset({"Name", "DisplayName", "DistinguishedName", "Guid", "RecipientType",
                            "RecipientTypeDetails", "WhenChanged", "WhenCreated"})
# The mail side of a recipient: addresses, alias, visibility, custom attributes.
_MAIL = _CUSTOM | _EXTENSION | {"Alias", "EmailAddresses", "PrimarySmtpAddress", "ExternalEmailAddress",
                                "ExternalDirectoryObjectId", "HiddenFromAddressListsEnabled"}
# The contact (person) side that Get-Recipient shares with Get-Contact.
_PERSON = frozenset({"FirstName", "LastName", "Company", "Department", "Title", "Office", "Phone", "City",
                     "StateOrProvince", "PostalCode", "CountryOrRegion", "Notes", "Manager"})
# Which properties each cmdlet's -Filter accepts, after Microsoft's "Filterable properties for the Filter parameter"
# (https://learn.microsoft.com/powershell/exchange/filter-properties). A profile may replace an entry.
FILTERABLE_BY: dict[str, frozenset[str]] = {
    "Get-Recipient": _ANY_RECIPIENT | _MAIL | _PERSON,
    "Get-MailContact": _ANY_RECIPIENT | _MAIL | {"WindowsEmailAddress"},
    "Get-Contact": _ANY_RECIPIENT | _PERSON | {"Initials", "MobilePhone", "HomePhone", "Fax", "StreetAddress",
                                               "WindowsEmailAddress"},
}


def filterable(cmdlet: str | None = None) -> frozenset[str]:
    """What `cmdlet`'s -Filter may name; without a cmdlet (or for one not in FILTERABLE_BY), what any of them may."""
    if cmdlet in FILTERABLE_BY:
        return FILTERABLE_BY[cmdlet]
    return frozenset[str]().union(*FILTERABLE_BY.values())


# Exchange (through PowerShell's tokenizer) takes five characters as a single quote: the ASCII ' and the
# typographic U+2018, U+2019, U+201A and U+201B. Any of them opens or closes a literal, and inside a literal two
# quote characters in a row stand for the first of them, so an undoubled U+2019 ends the literal as ' does.
SINGLE_QUOTES = "'\u2018\u2019\u201a\u201b"
_Q = f"[{SINGLE_QUOTES}]"
_NOT_Q = f"[^{SINGLE_QUOTES}]"
_TOKEN = re.compile(
    rf"\s*(?:(?P<lp>\()|(?P<rp>\))|(?P<op>-(?:eq|ne|like|notlike|and|or|not)\b)|{_Q}(?P<sq>(?:{_NOT_Q}|{_Q}{_Q})*){_Q}"
    rf"|\"(?P<dq>[^\"]*)\"|(?P<word>[^\s()\"{SINGLE_QUOTES}]+))",
    re.IGNORECASE,
)
_DOUBLED_QUOTE = re.compile(f"({_Q}){_Q}")

Predicate = Callable[[dict[str, Any]], bool]


class FilterError(ValueError):
    """The filter text cannot be parsed or names a property that cannot be filtered."""


def _tokens(text: str) -> list[tuple[str, str]]:
    tokens, position = [], 0
    text = text.strip()
    while position < len(text):
        match = _TOKEN.match(text, position)
        if not match or match.end() == position:
            raise FilterError(f"Invalid filter syntax near position {position}: {text[position:position + 20]!r}")
        position = match.end()
        kind = match.lastgroup or ""
        value = match.group(kind)
        if kind == "sq":
            value = _DOUBLED_QUOTE.sub(r"\1", value)
        elif kind == "op":
            value = value.lower()
        tokens.append((kind, value))
    return tokens


def _normalise_address(value: str) -> str:
    return value.lower() if ":" in value else f"smtp:{value.lower()}"


def _suffix_pattern(value: str) -> re.Pattern[str]:
    """`value` of a -like as a pattern: literal, with one `*` allowed at its end only, as Exchange Online allows."""
    literal = value[:-1] if value.endswith("*") else value
    if "*" in literal:
        raise FilterError(f"Invalid filter syntax. The wildcard '*' is supported only at the end of a value, as in "
                          f"'text*': '{value}'.")
    return re.compile("^" + re.escape(literal) + (".*" if value.endswith("*") else "") + "$",
                      re.IGNORECASE | re.DOTALL)


def _compare(prop: str, op: str, expected: str | None) -> Predicate:
    pattern = _suffix_pattern(expected or "") if op in ("-like", "-notlike") else None

    def one(actual: Any) -> bool:
        if actual is None or actual == "":
            return expected is None or expected == "" if pattern is None else pattern.match("") is not None
        text = str(actual).lower()  # booleans compare as "true"/"false", as OPATH writes them
        if pattern is not None:  # EmailAddresses: the whole proxy address, its prefix included
            return pattern.match(str(actual)) is not None
        if expected is None:
            return False
        if prop == "EmailAddresses":
            return text == _normalise_address(expected)
        return text == expected.lower()

    def predicate(recipient: dict[str, Any]) -> bool:
        value = recipient.get(prop)
        values = value if isinstance(value, list) else [value]
        hit = any(one(v) for v in values) if values else one(None)
        return not hit if op in ("-ne", "-notlike") else hit

    return predicate


class _Parser:
    def __init__(self, tokens: list[tuple[str, str]], filterable: frozenset[str]) -> None:
        self.tokens, self.index, self.filterable = tokens, 0, filterable

    def peek(self) -> tuple[str, str] | None:
        return self.tokens[self.index] if self.index < len(self.tokens) else None

    def take(self) -> tuple[str, str]:
        token = self.peek()
        if token is None:
            raise FilterError("Invalid filter syntax: the filter ends too early.")
        self.index += 1
        return token

    def expr(self) -> Predicate:
        parts = [self.term()]
        while self.peek() == ("op", "-or"):
            self.take()
            parts.append(self.term())
        return parts[0] if len(parts) == 1 else (lambda r: any(p(r) for p in parts))

    def term(self) -> Predicate:
        parts = [self.factor()]
        while self.peek() == ("op", "-and"):
            self.take()
            parts.append(self.factor())
        return parts[0] if len(parts) == 1 else (lambda r: all(p(r) for p in parts))

    def factor(self) -> Predicate:
        kind, value = self.take()
        if kind == "lp":
            inner = self.expr()
            if self.take()[0] != "rp":
                raise FilterError("Invalid filter syntax: missing ')'.")
            return inner
        if (kind, value) == ("op", "-not"):
            negated = self.factor()
            return lambda r: not negated(r)
        if kind != "word":
            raise FilterError(f"Invalid filter syntax: unexpected {value!r}.")
        prop = next((p for p in self.filterable if p.lower() == value.lower()), None)
        if prop is None:
            raise FilterError(f"'{value}' is not a recognized filterable property. For a list of filterable "
                              "properties see the command help.")
        op_kind, op = self.take()
        if op_kind != "op" or op not in ("-eq", "-ne", "-like", "-notlike"):
            raise FilterError(f"Invalid filter syntax: expected a comparison operator after {prop}.")
        value_kind, raw = self.take()
        if value_kind not in ("sq", "dq", "word"):
            raise FilterError("Invalid filter syntax: expected a value.")
        expected: str | None = raw
        if value_kind == "word" and raw.lower() == "$null":
            expected = None
        elif value_kind == "word" and raw.lower() in ("$true", "$false"):
            expected = raw[1:]
        return _compare(prop, op, expected)


def compile_filter(text: str, cmdlet: str | None = None) -> Predicate:
    """Parse an OPATH filter into a predicate over a recipient property bag; raise FilterError when invalid.

    With `cmdlet`, only that cmdlet's filterable properties (`FILTERABLE_BY`) may be named; without, any of them."""
    tokens = _tokens(text)
    if not tokens:
        raise FilterError("The filter is empty.")
    parser = _Parser(tokens, filterable(cmdlet))
    predicate = parser.expr()
    if parser.peek() is not None:
        raise FilterError(f"Invalid filter syntax: unexpected {parser.peek()[1]!r}.")  # type: ignore[index]
    return predicate


def equality_terms(text: str) -> list[tuple[str, str]] | None:
    """The (property, value) pairs when the filter is only `Prop -eq 'value'` comparisons joined by `-or` (each
    maybe in parentheses), the shape ctcs sends to look many recipients up at once; None for any other filter.
    The organisation answers such a filter from its indexes instead of testing every recipient."""
    try:
        tokens = _tokens(text)
    except FilterError:
        return None
    terms: list[tuple[str, str]] = []
    index = 0
    while index < len(tokens):
        depth = 0
        while index < len(tokens) and tokens[index] == ("lp", "("):
            depth, index = depth + 1, index + 1
        if index + 3 > len(tokens):
            return None
        (word_kind, word), operator, (value_kind, value) = tokens[index : index + 3]
        prop = next((p for p in filterable() if p.lower() == word.lower()), None)
        if word_kind != "word" or prop is None or operator != ("op", "-eq") or value_kind not in ("sq", "dq"):
            return None
        index += 3
        for _ in range(depth):
            if index >= len(tokens) or tokens[index] != ("rp", ")"):
                return None
            index += 1
        terms.append((prop, value))
        if index < len(tokens):
            if tokens[index] != ("op", "-or") or index + 1 == len(tokens):
                return None
            index += 1
    return terms or None
