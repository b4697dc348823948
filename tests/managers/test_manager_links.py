"""Manager links end to end: simulated Graph reports `manager@delta`, the real clients carry it through planning,
the queue and the worker, and the simulated Exchange (which refuses a Manager it cannot resolve) ends up with each
contact's Manager naming its manager's contact. Request counts are the cost of a manager change."""

from __future__ import annotations

import pytest

from sync.app.planner.run import RunResult, run_pair
from sync.app.worker.delivery import handle_message
from sync.contract.ops import ContactOp, decode_message
from sync.contract.vocabulary import RunTrigger
from sync.core.mapping import contact_name
from sync.errors import ManagerNotFound

from .conftest import Linked


def ops_of(result: RunResult) -> list[ContactOp]:
    assert result.plan is not None
    return result.plan.ops


def exchange_calls(linked: Linked) -> dict[str, int]:
    counts = linked.cloud.counts.snapshot()
    return {str(key[1]): n for key, n in counts.items() if isinstance(key, tuple) and key[0] == "exchange"}


def test_manager_is_linked_changed_and_cleared(linked: Linked) -> None:
    boss = linked.add_user("boss")
    other = linked.add_user("other")
    report = linked.add_user("report")
    linked.source.directory.update_user(report, manager=boss)

    # Run 1 (full round): everyone is created; the boss's contact does not exist yet when the report is planned.
    result, drained = linked.run()
    assert result.run.full and result.run.counts["create"] == 3 and drained.failed == 0
    assert linked.contact(report)["Manager"] is None

    # Run 2 (incremental, no source change): the link fix-up sets only Manager.
    linked.cloud.reset_counts()
    result, drained = linked.run()
    assert [(op.kind.value, op.reason, op.partial) for op in ops_of(result)] == [("update", "manager_linked", True)]
    assert linked.contact(report)["Manager"] == contact_name(boss)
    assert linked.cloud.counts["graph"] == 1 and exchange_calls(linked) == {"Get-Recipient": 1, "Set-Contact": 1}
    row = linked.rt.stores.contacts.get(linked.pair.id, report)
    assert (row.manager_id, row.manager_set) == (boss, True)

    # Run 3: nothing changed, nothing is sent.
    linked.cloud.reset_counts()
    result, _ = linked.run()
    assert result.outcome == "no_changes" and exchange_calls(linked) == {}

    # The manager changes (manager@delta on the report): one full update, one Set-Contact.
    linked.source.directory.update_user(report, manager=other)
    linked.cloud.reset_counts()
    result, drained = linked.run()
    [op] = ops_of(result)
    assert (op.kind.value, op.source_id, op.partial, op.manager_id) == ("update", report, False, other)
    assert linked.contact(report)["Manager"] == contact_name(other)
    assert linked.cloud.counts["graph"] == 1 and exchange_calls(linked) == {"Get-Recipient": 1, "Set-Contact": 1}

    # The manager leaves scope (disabled): its contact goes and the report's link is cleared in the same run.
    linked.source.directory.update_user(other, accountEnabled=False)
    result, drained = linked.run()
    assert sorted((op.kind.value, op.reason) for op in ops_of(result)) == [
        ("delete", "left_scope:disabled"), ("update", "manager_unlinked"),
    ]
    assert drained.failed == 0 and linked.contact(report)["Manager"] is None
    row = linked.rt.stores.contacts.get(linked.pair.id, report)
    assert (row.manager_id, row.manager_set) == (other, False)

    # Back to a manager who is in scope, then that manager is deleted.
    linked.source.directory.update_user(report, manager=boss)
    linked.run()
    assert linked.contact(report)["Manager"] == contact_name(boss)
    linked.source.directory.delete_user(boss)
    _, drained = linked.run()
    assert drained.failed == 0 and linked.contact(report)["Manager"] is None
    assert {c["CustomAttribute15"] for c in linked.target.exchange.contacts()} == {linked.pair.anchor(report)}


def test_a_removed_manager_relationship_clears_the_link(linked: Linked) -> None:
    boss = linked.add_user("boss")
    report = linked.add_user("report", manager=boss)
    linked.run()
    linked.run()
    assert linked.contact(report)["Manager"] == contact_name(boss)
    linked.source.directory.update_user(report, manager=None)  # manager@delta with @removed
    result, _ = linked.run()
    [op] = ops_of(result)
    assert op.contact is not None and op.contact["Manager"] == "" and op.manager_id == ""
    assert linked.contact(report)["Manager"] is None


def test_a_manager_exchange_cannot_resolve_is_retried_not_failed(linked: Linked) -> None:
    boss = linked.add_user("boss")
    report = linked.add_user("report", manager=boss)
    linked.run()
    # The boss's contact vanishes from Exchange (as a just-made object does while it replicates).
    boss_contact = linked.contact(boss)
    linked.target.exchange.run("Remove-MailContact", {"Identity": boss_contact["Guid"]})
    run_pair(linked.rt, linked.pair.id, trigger=RunTrigger.CLI)
    [message] = linked.rt.stores.ops.receive(max_messages=1, visibility_timeout=60)
    with pytest.raises(ManagerNotFound) as missing:  # transient: the queue delivers it again
        handle_message(linked.rt, decode_message(message.content))
    assert missing.value.manager == contact_name(boss)
    row = linked.rt.stores.contacts.get(linked.pair.id, report)
    assert row.status == "ok" and not row.manager_set and row.guid == linked.contact(report)["Guid"]
    # It is back: the next delivery of the same op links the report.
    linked.target.exchange.add_recipient("MailContact", boss_contact["Name"], boss_contact["PrimarySmtpAddress"])
    handle_message(linked.rt, decode_message(message.content))
    assert linked.contact(report)["Manager"] == contact_name(boss)
    assert linked.rt.stores.contacts.get(linked.pair.id, report).manager_set
