"""Groups as contacts, the pure parts: the pair options, a group's kind and scope, its mapping, its ops, and the
planner keeping users' and groups' rows apart (users-only pairs unchanged)."""

from __future__ import annotations

from typing import Any

import pytest

from sync.app.planner.group_contacts import needs_groups_round, split_rows
from sync.contract.ops import ContactOp, OpKind, decode_op
from sync.contract.summaries import StateSummary
from sync.contract.vocabulary import ContactStatus, ObjectKind
from sync.core.group_mapping import GroupMapper
from sync.core.group_scope import decide_group_scope, group_kind
from sync.core.plan import Baseline, PlanOptions, plan_pair, unsafe_reason
from sync.core.source import DeltaRound
from sync.errors import PairValidationError
from tests.support.factories import make_pair

TEAM = "aaaaaaaa-0000-0000-0000-000000000001"
LIST = "aaaaaaaa-0000-0000-0000-000000000002"


def group(group_id: str = TEAM, **fields: Any) -> dict[str, Any]:
    base = {"id": group_id, "displayName": "Falcon", "mail": "falcon@contoso.com", "mailEnabled": True,
            "securityEnabled": False, "groupTypes": ["Unified"], "description": "The Falcon team"}
    return {**base, **fields}


def test_objects_default_to_users_and_are_validated_with_their_field_path() -> None:
    assert make_pair().objects == ["users"] and make_pair().syncs_users and not make_pair().syncs_groups
    assert make_pair(objects=["users", "groups"]).syncs_groups
    for bad, problem in (([], "objects: must name"), (["users", "users"], "objects: names an object kind twice"),
                         (["contacts"], "objects.0: must be one of")):
        with pytest.raises(PairValidationError) as error:
            make_pair(objects=bad)
        assert any(line.startswith(problem) for line in error.value.problems), error.value.problems


def test_the_groups_section_is_validated_like_every_field() -> None:
    with pytest.raises(PairValidationError) as error:
        make_pair(objects=["groups"], groups={
            "include_types": ["unified", "dynamic"], "include_groups": ["not-a-guid"],
            "filters": [{"attribute": "department", "operator": "EQUALS", "value": "x"}],
            "display_name": "{displayName} {jobTitle}", "exclude_domains": ["not a domain"], "members": True})
    problems = "\n".join(error.value.problems)
    for path in ("groups.include_types.1", "groups.include_groups.0", "groups.filters.0", "groups.display_name",
                 "groups.exclude_domains.0", "groups.members"):
        assert path in problems, problems
    assert "not a source group attribute" in problems


def test_kind_of_each_group() -> None:
    assert group_kind(group()) == "unified"
    assert group_kind(group(groupTypes=[])) == "distribution"
    assert group_kind(group(groupTypes=[], securityEnabled=True)) == "mail_enabled_security"
    assert group_kind(group(groupTypes=[], mailEnabled=False, securityEnabled=True)) == "security"


def test_group_scope_reasons() -> None:
    pair = make_pair(objects=["groups"], groups={"include_types": ["unified", "distribution"],
                                                 "exclude_domains": ["old.contoso.com"], "exclude_groups": [LIST]})
    assert decide_group_scope(pair, group()).in_scope
    assert decide_group_scope(pair, group(mail=None)).reason == "no_mail"
    assert decide_group_scope(pair, group(mail=None, proxyAddresses=["SMTP:a@contoso.com"])).address == "a@contoso.com"
    assert decide_group_scope(pair, group(groupTypes=[], mailEnabled=False)).reason == "no_mail"
    assert decide_group_scope(pair, group(groupTypes=[], securityEnabled=True)).reason == "type_excluded"
    assert decide_group_scope(pair, group(hideFromAddressLists=True)).reason == "hidden_from_gal"
    assert decide_group_scope(pair, group(), hidden_in_source=True).reason == "hidden_from_gal"
    assert decide_group_scope(pair, group(mail="x@old.contoso.com")).reason == "domain_excluded"
    assert decide_group_scope(pair, group(LIST)).reason == "excluded"
    included = make_pair(objects=["groups"], groups={"include_groups": [LIST.upper()]})
    assert decide_group_scope(included, group()).reason == "not_included"
    assert decide_group_scope(included, group(LIST)).in_scope
    filtered = make_pair(objects=["groups"], groups={"filters": [{"attribute": "kind", "operator": "EQUALS",
                                                                  "value": "distribution"}]})
    decision = decide_group_scope(filtered, group())
    assert decision.reason == "filtered_out" and "kind EQUALS 'distribution'" in decision.detail


def test_group_mapping() -> None:
    pair = make_pair(objects=["groups"], groups={"display_name": "{displayName} ({source.name} group)"},
                     contact={"anchor_attribute": "CustomAttribute9"})
    mapped = GroupMapper(pair).map(group(description="x" * 2000), "falcon@contoso.com")
    contact = mapped.contact
    assert contact["DisplayName"] == "Falcon (Contoso group)"
    assert contact["Notes"] == "x" * 1024 and mapped.warnings == ["truncated: Notes cut from 2000 to 1024 characters"]
    assert contact["Name"] == contact["Alias"] == f"ctcs-{TEAM}"
    assert contact["CustomAttribute9"] == f"ctcs|{pair.source.tenant_id}|{TEAM}"
    assert contact["ExternalEmailAddress"] == "falcon@contoso.com"
    assert "Manager" not in contact and "FirstName" not in contact
    assert GroupMapper(pair).map(group(description=None), "a@b.com").contact["Notes"] == ""


def test_a_group_op_says_so_and_a_users_op_is_unchanged() -> None:
    user_op = ContactOp("p-1", "r", OpKind.DELETE, "u1", 5, "removed:deleted")
    assert "object" not in user_op.to_json() and decode_op(user_op.to_json()).object_kind is ObjectKind.USER
    group_op = ContactOp("p-1", "r", OpKind.DELETE, TEAM, 5, "removed:deleted", object_kind=ObjectKind.GROUP)
    assert '"object":"group"' in group_op.to_json() and decode_op(group_op.to_json()) == group_op


def test_a_users_round_never_sweeps_group_rows_and_groups_plan_apart() -> None:
    pair = make_pair(objects=["users", "groups"], deletion={"max_deletes": 1})
    rows = {"u1": StateSummary(ContactStatus.OK, "h", 1),
            TEAM: StateSummary(ContactStatus.OK, "h", 1, kind=ObjectKind.GROUP)}
    users, groups = split_rows(rows)
    assert set(users) == {"u1"} and set(groups) == {TEAM} and needs_groups_round(make_pair(), groups)
    assert not needs_groups_round(make_pair(), {})
    users_plan = plan_pair(pair, DeltaRound(full=True), Baseline(users), PlanOptions(2, "r"))
    assert [op.source_id for op in users_plan.ops] == ["u1"]
    groups_plan = plan_pair(pair, DeltaRound(users={LIST: group(LIST)}, full=True), Baseline(groups, managed=2),
                            PlanOptions(2, "r", kind=ObjectKind.GROUP))
    assert {(op.kind, op.source_id, op.object_kind) for op in groups_plan.ops} == {
        (OpKind.DELETE, TEAM, ObjectKind.GROUP), (OpKind.CREATE, LIST, ObjectKind.GROUP)}
    counts = groups_plan.counts()
    assert counts["groups_create"] == 1 and counts["groups_delete"] == 1 and "create" not in counts
    # one limit per pair: the users round's delete and the groups round's together exceed max_deletes 1
    assert unsafe_reason(groups_plan, pair) is None
    assert "more than deletion.max_deletes (1)" in (unsafe_reason(groups_plan, pair, earlier_removals=1) or "")
