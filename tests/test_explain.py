"""`explain`: the scope decision with its rule, the desired contact, the state row and a verdict an admin can act on."""

from __future__ import annotations

import json

import pytest

from sync.app.admin.drain import drain
from sync.app.admin.explain import explain
from sync.app.planner.run import run_pair
from sync.app.wiring.runtime import Runtime
from sync.cli.main import main
from sync.contract.vocabulary import RunTrigger
from tests.support.factories import make_pair, make_user
from tests.support.memory_source import MemorySource
from tests.support.memory_target import MemoryTarget

PAIR = make_pair(scope={"filters": [{"attribute": "department", "operator": "NOT EQUALS", "value": "Contractors"}]})


@pytest.fixture
def rt(memory_runtime: Runtime, source: MemorySource) -> Runtime:
    memory_runtime.stores.pairs.add(PAIR)
    source.add(make_user(1))
    source.add(make_user(2, accountEnabled=False))
    source.add(make_user(3, department="Contractors"))
    source.add(make_user(4, mail="adele@contoso.com"))
    run_pair(memory_runtime, PAIR.id, trigger=RunTrigger.CLI)
    drain(memory_runtime)
    return memory_runtime


def test_a_synced_user(rt: Runtime) -> None:
    result = explain(rt, PAIR.id, "user1@contoso.com")
    assert result.found and result.in_scope and result.state["status"] == "ok"
    assert result.desired["DisplayName"] == "User 1"
    assert result.verdict == "in the address list"


def test_a_disabled_user_by_object_id(rt: Runtime) -> None:
    result = explain(rt, PAIR.id, str(make_user(2)["id"]))
    assert (result.in_scope, result.reason) == (False, "disabled")
    assert result.verdict.startswith("not in the address list: the account is disabled")


def test_the_failing_filter_rule_is_named(rt: Runtime) -> None:
    result = explain(rt, PAIR.id, "user3@contoso.com")
    assert result.reason == "filtered_out" and "department NOT EQUALS 'Contractors'" in result.rule


def test_a_conflict_names_the_holder(rt: Runtime, source: MemorySource, target: MemoryTarget) -> None:
    target.add_recipient("UserMailbox", "Bob Mailbox", "bob@contoso.com")
    source.add(make_user(5, mail="bob@contoso.com"))
    run_pair(rt, PAIR.id, trigger=RunTrigger.CLI)
    drain(rt)
    result = explain(rt, PAIR.id, "bob@contoso.com")
    assert result.state["status"] == "conflict" and "Bob Mailbox" in result.verdict


def test_a_user_about_to_leave_and_one_gone(rt: Runtime, source: MemorySource) -> None:
    source.update(str(make_user(4)["id"]), accountEnabled=False)
    assert explain(rt, PAIR.id, "adele@contoso.com").verdict.endswith("the next run removes the contact")
    source.remove(str(make_user(1)["id"]))
    gone = explain(rt, PAIR.id, "user1@contoso.com")
    assert not gone.found and gone.state["status"] == "ok"
    assert "no longer exists in the source" in gone.verdict
    assert explain(rt, PAIR.id, "nobody@contoso.com").verdict == "no such user in the source tenant"


def test_cli_explain_text_and_json(rt: Runtime, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["explain", "--pair", PAIR.id, "user1@contoso.com"], runtime=lambda: rt) == 0
    text = capsys.readouterr().out
    assert "verdict     : in the address list" in text and "DisplayName" in text
    assert main(["explain", "--pair", PAIR.id, "user2@contoso.com", "--json"], runtime=lambda: rt) == 0
    assert json.loads(capsys.readouterr().out)["reason"] == "disabled"
