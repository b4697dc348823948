"""Provision on demand, end to end (real Graph and Exchange edges, Azurite): one user read, scoped, planned and
applied now with each step shown; out of scope with the reason; a conflict naming the holder; the pair's deltaLink,
and every other user's pending change, left for the next timer run."""

from __future__ import annotations

import json
from typing import Any

import pytest

from sync.app.admin.provision import Result, provision_user
from sync.cli import main as cli
from tests.support.sim_pairs import SimPair

from .conftest import Setup


def ours(made: SimPair) -> list[dict[str, Any]]:
    return [c for c in made.target.exchange.contacts()
            if str(c.get("CustomAttribute15") or "").startswith(made.pair.anchor_prefix)]


@pytest.fixture
def synced(setup: Setup) -> SimPair:
    """A pair after its first timer run: two users synced, a deltaLink stored."""
    made = setup.pair()
    setup.add_users(made, 2)
    setup.host.fire_timer()
    setup.host.drain_queue(deadline_seconds=60)
    assert len(ours(made)) == 2 and setup.rt.stores.pair_state.get(made.pair.id).delta_link
    return made


def test_a_new_user_in_scope_is_created_now_with_each_step(setup: Setup, synced: SimPair,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    rt, directory = setup.rt, synced.source.directory
    link = rt.stores.pair_state.get(synced.pair.id).delta_link
    [other] = setup.add_users(synced, 1, start=10)  # a change waiting for the next timer run
    [new] = setup.add_users(synced, 1, start=20)
    setup.cloud.reset_counts()
    assert cli.main(["run", "--pair", synced.pair.id, "--user", f"user20@{synced.source.domain}"],
                    runtime=lambda: rt) == cli.EXIT_OK
    out = capsys.readouterr().out
    for line in ("source   : found User 20", "scope    : in scope", "contact  : desired contact", "plan     : create (new)",
                 "Exchange : Get-Recipient x1, New-MailContact x1, Set-Contact x1, Set-MailContact x1", "result: created"):
        assert line in out, out
    assert [c["DisplayName"] for c in ours(synced) if c["CustomAttribute15"].endswith(new)] == ["User 20"]
    assert not [c for c in ours(synced) if c["CustomAttribute15"].endswith(other)], "only the user asked for"
    assert rt.stores.contacts.get(synced.pair.id, new).status == "ok"
    assert rt.stores.pair_state.get(synced.pair.id).delta_link == link, "the deltaLink is untouched"
    assert [run.trigger for run in rt.stores.runs.recent(synced.pair.id, limit=1)] == ["on_demand"]

    setup.host.fire_timer()  # the next run still sees the other user's change, and nothing new for this one
    setup.host.drain_queue(deadline_seconds=60)
    assert len(ours(synced)) == 4
    assert rt.stores.runs.recent(synced.pair.id, limit=1)[0].counts["create"] == 1

    directory.update_user(new, jobTitle="Lead")
    done = provision_user(rt, synced.pair.id, new)  # by object id; an update sends only what changed
    assert done.result == "updated" and done.exchange_calls == {"Get-Recipient": 1, "Set-Contact": 1}, "the owner check, then the write"
    again = provision_user(rt, synced.pair.id, new)
    assert again.result == Result.UNCHANGED and again.exchange_calls == {}


def test_out_of_scope_with_the_reason(setup: Setup, synced: SimPair, capsys: pytest.CaptureFixture[str]) -> None:
    rt, directory = setup.rt, synced.source.directory
    [disabled] = setup.add_users(synced, 1, start=30)
    directory.update_user(disabled, accountEnabled=False)
    assert cli.main(["run", "--pair", synced.pair.id, "--user", disabled, "--json"], runtime=lambda: rt) == cli.EXIT_OK
    done = json.loads(capsys.readouterr().out)
    assert done["result"] == "out_of_scope" and done["exchange_calls"] == {}
    [scope] = [step for step in done["steps"] if step["name"] == "scope"]
    assert scope["data"]["reason"] == "disabled" and "the account is disabled" in scope["detail"]

    synced_user = directory.users[0]["id"]
    directory.update_user(synced_user, accountEnabled=False)  # has a contact: provisioning removes it
    removed = provision_user(rt, synced.pair.id, synced_user)
    assert removed.result == "deleted" and removed.exchange_calls == {"Get-Recipient": 1, "Remove-MailContact": 1}
    assert len(ours(synced)) == 1


def test_a_conflict_names_the_holder(setup: Setup, synced: SimPair, capsys: pytest.CaptureFixture[str]) -> None:
    [user] = setup.add_users(synced, 1, start=40)
    synced.target.exchange.add_recipient("UserMailbox", "Adele Mailbox", f"user40@{synced.source.domain}")
    assert cli.main(["run", "--pair", synced.pair.id, "--user", user], runtime=lambda: setup.rt) == cli.EXIT_FAILED
    out = capsys.readouterr().out
    assert "result   : conflict: UserMailbox 'Adele Mailbox'" in out and "result: conflict" in out
    assert setup.rt.stores.contacts.get(synced.pair.id, user).status == "conflict"


def test_an_unknown_user_and_the_http_route(setup: Setup, synced: SimPair) -> None:
    assert cli.main(["run", "--pair", synced.pair.id, "--user", "nobody@nowhere.example"],
                    runtime=lambda: setup.rt) == cli.EXIT_USAGE
    [new] = setup.add_users(synced, 1, start=50)
    reply = setup.host.call_http("POST", f"/api/pairs/{synced.pair.id}/users/{new}/sync")
    assert reply.status == 200 and reply.json["result"] == "created"
    assert [step["name"] for step in reply.json["steps"]] == ["source", "scope", "contact", "plan", "Exchange", "result"]
    assert setup.host.call_http("POST", f"/api/pairs/{synced.pair.id}/users/nobody@x.example/sync").status == 404
    synced.target.exchange.add_recipient("MailUser", "Guest", f"user51@{synced.source.domain}")
    [clash] = setup.add_users(synced, 1, start=51)
    assert setup.host.call_http("POST", f"/api/pairs/{synced.pair.id}/users/{clash}/sync").status == 409
