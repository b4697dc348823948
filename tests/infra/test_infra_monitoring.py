"""Alerts, the action group and the workbook: they parse, deploy only with an alert address, and every query they run
is well formed and names only fields the code logs (collected from the code, not from a list kept by hand).
Sovereign clouds: Application Insights' Entra authentication follows a parameter, and the hosting cloud is derived."""

from __future__ import annotations

import json
import re

import pytest
from infracheck import INFRA, MAIN_BICEP, REPO, Scope, conditional_on, parse, resolve, text_of
from kqlcheck import custom_fields, kql_problems, logged_fields

ALERTS = INFRA / "app" / "alerts.bicep"
WORKBOOK = INFRA / "app" / "workbook.bicep"
WORKBOOK_JSON = INFRA / "app" / "workbook.json"
QUERY_FILES = sorted((INFRA / "app" / "queries").glob("*.kql"))
CODE = [*sorted((REPO / "sync").rglob("*.py")), REPO / "function_app.py"]
LOGGED = logged_fields(CODE)


def workbook_queries() -> dict[str, str]:
    data = json.loads(WORKBOOK_JSON.read_text(encoding="utf-8"))
    return {item["name"]: item["content"]["query"] for item in data["items"] if item["type"] == 3}


ALL_QUERIES = {**{path.name: path.read_text(encoding="utf-8") for path in QUERY_FILES},
               **{f"workbook:{name}": query for name, query in workbook_queries().items()}}


def test_the_logged_fields_are_collected_from_the_code() -> None:
    assert {"pair_id", "run_id", "outcome", "op_kind", "error_class", "quarantine_kind", "plan_to_apply_ms"} <= LOGGED


@pytest.mark.parametrize("name", sorted(ALL_QUERIES))
def test_every_query_is_well_formed_and_names_only_logged_fields(name: str) -> None:
    query = ALL_QUERIES[name]
    assert kql_problems(query, name) == []
    named = custom_fields(query)
    assert named, f"{name} names no logged field"
    assert named <= LOGGED, f"{name} names fields the code never logs: {sorted(named - LOGGED)}"


def test_the_checks_catch_a_broken_query_and_an_unlogged_field() -> None:
    assert kql_problems("traces | where (x == 1", "q") == ["q: 1 bracket(s) left open"]
    assert kql_problems("trace | wher x", "q") == ["q: the query must start from an Application Insights table, not 'trace'",
                                                  "q: unknown tabular operator 'wher'"]
    assert kql_problems('let a = 1;\ntraces // a comment with "quotes\n| take 1') == []
    assert custom_fields('traces | where customDimensions.pair_id == "x" and customDimensions["op_kind"] == "y"') == {
        "pair_id", "op_kind"}
    assert "tenant_secret" not in LOGGED


def test_alerts_deploy_only_with_an_address() -> None:
    main = parse(MAIN_BICEP)
    assert main["parameters"]["alertEmail"]["default"] == ""
    module = main["modules"]["alerts"]
    assert text_of(module["config"]["condition"]) == text_of({"operator": {"type": "not", "operands": {
        "bool_value": {"function": {"type": "empty", "parameters": {"item_to_test": "alertEmail"}}}}}})
    parameters = json.loads((INFRA / "main.parameters.json").read_text(encoding="utf-8"))["parameters"]
    assert parameters["alertEmail"]["value"] == "${CTCS_ALERT_EMAIL=}"


def test_the_action_group_emails_the_address_and_every_rule_uses_it() -> None:
    doc = parse(ALERTS)
    scope = Scope(doc)
    group = doc["resources"]["actionGroup"]
    assert group["type"] == "Microsoft.Insights/actionGroups"
    [receiver] = group["config"]["properties"]["emailReceivers"]
    assert receiver["emailAddress"] == "alertEmail" and doc["parameters"]["alertEmail"]["default"] is None
    rules = resolve(doc["variables"]["rules"]["value"], scope)
    assert {rule["name"] for rule in rules} == {"pair-quarantined", "ops-poisoned", "pair-stale", "auth-failures"}
    for rule in rules:
        path = rule["query"]["function"]["parameters"]["file_path"]
        assert (ALERTS.parent / path).is_file(), path
    resource = doc["resources"]["alertRules"]
    assert resource["type"] == "Microsoft.Insights/scheduledQueryRules"
    body = text_of(resource["config"]["config"])
    assert "actionGroup" in body and "applicationInsightsId" in body and '"pair"' in body


def test_the_rules_name_their_query_files() -> None:
    named = set(re.findall(r"queries/([\w-]+\.kql)", ALERTS.read_text(encoding="utf-8")))
    assert named == {path.name for path in QUERY_FILES}


def test_the_workbook_is_a_workbook_of_well_formed_json() -> None:
    doc = parse(WORKBOOK)
    workbook = doc["resources"]["workbook"]
    assert workbook["type"] == "Microsoft.Insights/workbooks"
    assert text_of(workbook["config"]["properties"]["serializedData"]) == text_of(
        {"function": {"type": "load_text_content", "parameters": {"file_path": "./workbook.json", "encoding": None}}})
    data = json.loads(WORKBOOK_JSON.read_text(encoding="utf-8"))
    assert data["version"] == "Notebook/1.0"
    assert set(workbook_queries()) == {"runs", "ops", "exchange", "latency", "problems", "quarantines"}
    assert "workbook" in parse(MAIN_BICEP)["modules"]


def test_app_insights_entra_authentication_follows_the_cloud() -> None:
    main = parse(MAIN_BICEP)
    parameter = main["parameters"]["applicationInsightsEntraAuth"]
    assert parameter["default"] == "auto"
    allowed = [d["argument"] for d in parameter["decorators"] if d["type"] == "allowed"]
    assert allowed == [["auto", "on", "off"]]
    derived = text_of(main["variables"]["entraTelemetry"]["value"])
    assert "AzureCloud" in derived and '"type": "environment"' in derived
    assert text_of(main["modules"]["monitoring"]["config"]["params"]["entraAuth"]) == '"entraTelemetry"'
    assert text_of(main["modules"]["functionApp"]["config"]["params"]["applicationInsightsEntraAuth"]) == '"entraTelemetry"'
    monitoring = parse(INFRA / "app" / "monitoring.bicep")
    assert monitoring["modules"]["applicationInsights"]["config"]["params"]["disableLocalAuth"] == "entraAuth"
    function = parse(INFRA / "app" / "function.bicep")
    assert conditional_on(function["variables"]["telemetryAuthentication"]["value"], "applicationInsightsEntraAuth")
