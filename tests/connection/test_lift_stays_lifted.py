"""A lifted credentials quarantine stays lifted (issue 22): the admin replaces a bad target certificate, `pairs test`
(the CLI, a runtime of its own) passes and lifts the quarantine, and the Functions worker that was running all along,
with the client it built on the bad certificate cached, applies every parked op instead of quarantining the pair
again. A failure whose attempt began before the lift quarantines nothing: its op goes back to the queue.

Before: 0 of 35 contacts, every op parked again and the pair quarantined again."""

from __future__ import annotations

from typing import Any

import pytest

from sim import make_client_certificate
from sync.app.wiring.quarantine import attempted_under, keep_parked, quarantine_for_credentials
from sync.app.wiring.runtime import Runtime
from sync.cli import main as cli
from sync.errors import TargetAuthError
from tests.support.sim_pairs import SimPair

from .conftest import Setup

USERS = 35


def ours(made: SimPair) -> list[dict[str, Any]]:
    return [c for c in made.target.exchange.contacts()
            if str(c.get("CustomAttribute15") or "").startswith(made.pair.anchor_prefix)]


def test_a_fixed_certificate_reaches_the_worker_that_was_running(setup: Setup,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    made = setup.pair()
    setup.key_file.write_bytes(make_client_certificate(None, common_name="not registered").pem_bytes)
    setup.add_users(made, USERS)
    worker, host = setup.rt, setup.host

    host.fire_timer()
    host.drain_queue(deadline_seconds=60)
    assert worker.stores.pair_state.get(made.pair.id).credentials_quarantined
    assert worker.stores.parked.approximate_count() == USERS and ours(made) == []

    # The admin puts the registered certificate where the pair's reference points; the CLI tests and lifts.
    setup.key_file.write_bytes(setup.certificate.pem_bytes)
    assert cli.main(["pairs", "test", made.pair.id], runtime=Runtime.from_settings) == cli.EXIT_OK
    assert f"credentials quarantine lifted; {USERS} waiting operation(s)" in capsys.readouterr().out

    host.drain_queue(deadline_seconds=120)  # the same worker runtime, its client of the bad certificate cached
    state = worker.stores.pair_state.get(made.pair.id)
    parked = worker.stores.parked.approximate_count()
    with capsys.disabled():
        print(f"\nmeasured: {len(ours(made))} of {USERS} contacts, {parked} op(s) parked, "
              f"quarantined again: {state.credentials_quarantined}")
    assert not state.credentials_quarantined, state.quarantine_reason
    assert len(ours(made)) == USERS
    assert parked == 0 and worker.stores.ops.approximate_count() == 0
    assert worker.stores.poison.approximate_count() == 0


def test_a_failure_from_before_the_lift_quarantines_nothing(setup: Setup) -> None:
    made = setup.pair()
    rt = setup.rt
    stale = TargetAuthError("AADSTS700027: certificate not registered on the app")
    attempted_under(stale, rt.credentials_epoch(made.pair.id))
    assert quarantine_for_credentials(rt, made.pair, TargetAuthError("AADSTS700027: first failure"))
    rt.stores.pair_state.lift_credentials_quarantine(made.pair.id)

    assert not quarantine_for_credentials(rt, made.pair, stale)
    assert not rt.stores.pair_state.get(made.pair.id).credentials_quarantined
    assert not keep_parked(rt, made.pair.id, stale, new_failure=True), "its op goes back to the queue"

    fresh = TargetAuthError("AADSTS700027: still not registered")
    attempted_under(fresh, rt.credentials_epoch(made.pair.id))
    assert quarantine_for_credentials(rt, made.pair, fresh), "a failure after the lift quarantines as before"
