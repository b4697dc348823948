"""OPATH escaping: values stay literals whatever they hold, so source data can never widen a filter."""

from __future__ import annotations

import re
import uuid

import pytest

from sync.exchange import opath

HOSTILE = [
    "O'Brien",
    "x' -or Name -like '*",
    "'",
    "''",
    "a'') -or (Name -like '*",
    "* -or CustomAttribute15 -like '*'",
    '" -or "1" -eq "1',
    "$(Get-Mailbox)",
    "`'",
    "line\nbreak",
    "",
]

# A literal is a quote, then any run of non-quotes or doubled quotes, then a quote.
_LITERAL = re.compile(r"'(?:[^']|'')*'")


def unquote(literal: str) -> str:
    assert literal.startswith("'") and literal.endswith("'")
    return literal[1:-1].replace("''", "'")


@pytest.mark.parametrize("value", HOSTILE)
def test_quote_is_one_literal_that_round_trips(value: str) -> None:
    quoted = opath.quote(value)
    assert _LITERAL.fullmatch(quoted), quoted
    assert unquote(quoted) == value


@pytest.mark.parametrize("value", HOSTILE)
def test_filter_keeps_exactly_its_operators(value: str) -> None:
    text = opath.any_of(opath.eq("CustomAttribute15", value), opath.eq("Name", value))
    outside_literals = _LITERAL.sub("L", text)
    assert outside_literals == "(CustomAttribute15 -eq L) -or (Name -eq L)"


def test_known_escapes() -> None:
    assert opath.eq("Name", "O'Brien") == "Name -eq 'O''Brien'"
    assert opath.eq("EmailAddresses", "smtp:a@b.c") == "EmailAddresses -eq 'smtp:a@b.c'"
    assert opath.starts_with("CustomAttribute15", "ctcs|t1|") == "CustomAttribute15 -like 'ctcs|t1|*'"
    assert opath.any_of("A -eq 'x'") == "A -eq 'x'"


@pytest.mark.parametrize("prop", ["Name -or 1", "", "Custom'Attribute", "1abc", "a b"])
def test_property_names_are_checked(prop: str) -> None:
    with pytest.raises(ValueError):
        opath.eq(prop, "x")


def test_like_prefix_must_be_literal_and_non_empty() -> None:
    with pytest.raises(ValueError):
        opath.starts_with("CustomAttribute15", "ctcs*")
    with pytest.raises(ValueError):
        opath.starts_with("CustomAttribute15", "")


def test_empty_filter_is_refused() -> None:
    with pytest.raises(ValueError):
        opath.any_of()
    with pytest.raises(ValueError):
        opath.any_of("", "")


def test_non_string_values_are_refused() -> None:
    with pytest.raises(TypeError):
        opath.quote(5)  # type: ignore[arg-type]


@pytest.mark.parametrize("quote", ["\u2018", "\u2019", "\u201a", "\u201b"])
def test_typographic_single_quotes_are_doubled_like_the_ascii_one(quote: str) -> None:
    from sim.opath import compile_filter

    assert opath.eq("Name", f"O{quote}Brien") == f"Name -eq 'O{quote}{quote}Brien'"
    hostile = f"x{quote} -or Name -like {quote}*"
    matches = compile_filter(opath.eq("Name", hostile))
    assert matches({"Name": hostile}) and not matches({"Name": "victim"})


@pytest.mark.parametrize("anchor_attribute", [f"CustomAttribute{n}" for n in range(1, 16)])
def test_every_filter_ctcs_sends_is_one_the_cmdlet_it_goes_to_accepts(anchor_attribute: str) -> None:
    """Exchange filters per cmdlet on its own properties and takes '*' only as a suffix; the simulator holds the
    documented sets (sim.opath.FILTERABLE_BY). Each filter form ctcs builds must pass for the cmdlet it is sent to."""
    from sim.opath import compile_filter
    from sync.exchange.lookup import LookupKey
    from sync.exchange.visibility import HIDDEN_FILTER

    key = LookupKey(anchor="ctcs|pair|1", address="a@contoso.com", name="ctcs-1", guid=str(uuid.uuid4()))
    prefix = "ctcs|pair|"
    sent = [
        ("Get-Recipient", opath.any_of(*key.clauses(anchor_attribute))),  # look-ups by anchor, address, name, Guid
        ("Get-Recipient", opath.starts_with(anchor_attribute, prefix)),  # the listing and the "any ours?" probe
        ("Get-Recipient", opath.all_of(opath.is_set(anchor_attribute), opath.not_starts_with(anchor_attribute, prefix))),
        ("Get-Recipient", HIDDEN_FILTER),  # the source's hidden recipients
    ]
    for cmdlet, text in sent:
        compile_filter(text, cmdlet)  # raises FilterError on a property or wildcard Exchange refuses
