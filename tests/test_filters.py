"""Scoping filters: every Entra operator (table-driven), AND within a list, OR across lists, validation."""

from __future__ import annotations

from typing import Any

import pytest

from sync.core.scope import decide_scope
from sync.core.source import source_select
from sync.errors import PairValidationError
from tests.support.factories import make_pair, make_user

USER = make_user(
    1,
    department="Sales",
    jobTitle="Account Manager",
    employeeId="1042",
    accountEnabled=True,
    mobilePhone=None,
    proxyAddresses=["SMTP:user1@contoso.com", "smtp:u1@contoso-eu.com"],
    onPremisesExtensionAttributes={"extensionAttribute1": "NoGALsync", "extensionAttribute2": None},
)


def in_scope(filters: Any, user: dict[str, Any] = USER) -> bool:
    return decide_scope(make_pair(scope={"filters": filters}), user).in_scope


@pytest.mark.parametrize(
    ("attribute", "operator", "value", "expected"),
    [
        ("department", "EQUALS", "Sales", True),
        ("department", "EQUALS", "sales", False),  # case-sensitive, as in Entra
        ("department", "NOT EQUALS", "Sales", False),
        ("department", "NOT_EQUALS", "Marketing", True),
        ("accountEnabled", "IS TRUE", None, True),
        ("accountEnabled", "IS FALSE", None, False),
        ("mobilePhone", "IS NULL", None, True),
        ("department", "IS NULL", None, False),
        ("department", "IS NOT NULL", None, True),
        ("mobilePhone", "IS NOT NULL", None, False),
        ("jobTitle", "REGEX MATCH", "^Account", True),
        ("jobTitle", "REGEX MATCH", "^Manager", False),
        ("jobTitle", "NOT REGEX MATCH", "Intern", True),
        ("jobTitle", "NOT REGEX MATCH", "Manager$", False),
        ("jobTitle", "Includes", "Manager", True),
        ("jobTitle", "Includes", "manager", False),
        ("employeeId", "Greater_Than", "1000", True),
        ("employeeId", "Greater_Than", "1042", False),
        ("employeeId", "Greater_Than_OR_EQUALS", "1042", True),
        ("employeeId", "Greater_Than_OR_EQUALS", "1043", False),
        ("mail", "ENDS_WITH", "@contoso.com", True),
        ("mail", "ENDS_WITH", "@fabrikam.com", False),
        ("proxyAddresses", "Includes", "contoso-eu", True),  # multi-valued: any value
        ("proxyAddresses", "NOT EQUALS", "smtp:u1@contoso-eu.com", False),  # negative: none may match
        ("onPremisesExtensionAttributes.extensionAttribute1", "NOT EQUALS", "NoGALsync", False),
        ("onPremisesExtensionAttributes.extensionAttribute2", "IS NULL", None, True),
        ("onPremisesExtensionAttributes.extensionAttribute9", "IS NULL", None, True),
    ],
)
def test_every_operator(attribute: str, operator: str, value: str | None, expected: bool) -> None:
    clause = {"attribute": attribute, "operator": operator}
    if value is not None:
        clause["value"] = value
    assert in_scope([clause]) is expected


def test_the_classic_no_gal_sync_opt_out() -> None:
    opt_out = [{"attribute": "onPremisesExtensionAttributes.extensionAttribute1", "operator": "NOT EQUALS",
                "value": "NoGALsync"}]
    assert not in_scope(opt_out)
    assert in_scope(opt_out, make_user(2))  # no extension attributes at all: in scope
    decision = decide_scope(make_pair(scope={"filters": opt_out}), USER)
    assert decision.reason == "filtered_out" and "extensionAttribute1 NOT EQUALS 'NoGALsync'" in decision.detail


def test_and_within_a_list_or_across_lists() -> None:
    sales = {"attribute": "department", "operator": "EQUALS", "value": "Sales"}
    intern = {"attribute": "jobTitle", "operator": "Includes", "value": "Intern"}
    manager = {"attribute": "jobTitle", "operator": "Includes", "value": "Manager"}
    assert not in_scope([sales, intern])
    assert in_scope([sales, manager])
    assert in_scope([[intern], [sales]])
    assert not in_scope([[intern], [{"attribute": "department", "operator": "EQUALS", "value": "HR"}]])


@pytest.mark.parametrize(
    ("clause", "complaint"),
    [
        ({"attribute": "department", "operator": "LIKE", "value": "S*"}, "operator 'LIKE' is not one of"),
        ({"attribute": "department", "operator": "EQUALS"}, "EQUALS needs a value"),
        ({"attribute": "accountEnabled", "operator": "IS TRUE", "value": "x"}, "IS TRUE takes no value"),
        ({"attribute": "employeeId", "operator": "Greater_Than", "value": "ten"}, "whole numbers"),
        ({"attribute": "jobTitle", "operator": "REGEX MATCH", "value": "(unclosed"}, "not a valid regular expression"),
        ({"attribute": "favouriteColour", "operator": "IS NULL"}, "not a source user attribute"),
    ],
)
def test_bad_clauses_are_refused_with_their_path(clause: dict[str, str], complaint: str) -> None:
    with pytest.raises(PairValidationError) as caught:
        make_pair(scope={"filters": [clause]})
    [problem] = caught.value.problems
    assert problem.startswith("scope.filters.0") and complaint in problem


def test_filter_attributes_join_the_select() -> None:
    pair = make_pair(scope={"filters": [[{"attribute": "employeeType", "operator": "IS NOT NULL"}],
                                        [{"attribute": "onPremisesExtensionAttributes.extensionAttribute1",
                                          "operator": "IS NULL"}]]})
    select = source_select(pair)
    assert "employeeType" in select and "onPremisesExtensionAttributes" in select
