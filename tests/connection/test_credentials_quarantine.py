"""A broken credential stops the pair, not every op: the pair is quarantined (kind `credentials`) with the fix in
words, its ops wait untried in `-parked`, nothing more is planned, no delivery attempt is spent, the timer tests the
connection again on a back-off and lifts the quarantine itself once the fix is in. Other pairs carry on.

The measured scenario of issue 16: before, one `run` with a target certificate not registered on the app made 161
token requests, retried 32 ops five times each and poisoned all of them, and every timer run queued them again."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from sim.tenant import RegisteredCertificate
from sync.app.admin.retest import retest_quarantined
from sync.app.planner.run import run_pair
from sync.cli import main as cli
from sync.contract.vocabulary import QuarantineKind, RunOutcome, RunTrigger
from tests.support.sim_pairs import SimPair

from .conftest import Setup


def target_app(made: SimPair) -> Any:
    return made.target.apps[made.pair.target.client_id.lower()]


def ours(made: SimPair) -> list[dict[str, Any]]:
    return [c for c in made.target.exchange.contacts()
            if str(c.get("CustomAttribute15") or "").startswith(made.pair.anchor_prefix)]


def make_due(setup: Setup, pair_id: str) -> None:
    """As if the back-off had passed: the next timer run tests the connection again."""
    state = setup.rt.stores.pair_state.get(pair_id)
    setup.rt.stores.pair_state.schedule_retest(pair_id, reason=state.quarantine_reason, failed_tests=state.failed_tests,
                                               retest_at=datetime.now(UTC) - timedelta(seconds=1))


def test_a_wrong_target_certificate_next_to_a_healthy_pair(setup: Setup, capsys: pytest.CaptureFixture[str]) -> None:
    bad, good = setup.pair("bad-certificate"), setup.pair("healthy")
    target_app(bad).certificates = []  # the certificate ctcs signs with is not registered on the target app
    setup.add_users(bad, 32)
    setup.add_users(good, 5)
    cloud, host, rt = setup.cloud, setup.host, setup.rt
    cloud.reset_counts()

    host.fire_timer()
    first = host.drain_queue(deadline_seconds=60)
    assert first.poisoned == 0 and first.failed_attempts == 0, first.as_dict()
    assert first.left_in_queue == 0
    state = rt.stores.pair_state.get(bad.pair.id)
    assert state.kind is QuarantineKind.CREDENTIALS
    assert state.quarantine_reason.startswith("target: certificate not registered on the app: ")
    assert "az ad app credential reset" in state.quarantine_reason and "AADSTS700027" in state.quarantine_reason
    assert rt.stores.parked.approximate_count() == 32, "every op of the pair kept, untried"
    assert rt.stores.poison.approximate_count() == 0 and rt.stores.failed.approximate_count() == 0
    assert len(ours(good)) == 5 and ours(bad) == []
    tokens, rejected = cloud.counts["token"], cloud.counts[("token", "rejected")]
    assert rejected == 1, "one refused sign-in, shared by the worker's concurrent ops"
    assert tokens <= 4, f"{tokens} token requests"  # two source reads, two targets (one refused)

    for _ in range(2):  # timer runs while quarantined: nothing planned or queued, no sign-in tried
        host.fire_timer()
        assert rt.stores.ops.approximate_count() == 0
        host.drain_queue(deadline_seconds=30)
    assert rt.stores.parked.approximate_count() == 32
    assert cloud.counts[("token", "rejected")] == 1
    assert cloud.counts["token"] == tokens
    assert [run.outcome for run in rt.stores.runs.recent(bad.pair.id)] == [RunOutcome.PLANNED]
    assert rt.stores.pair_state.get(bad.pair.id).retest_at  # tested again in five minutes
    with capsys.disabled():  # the numbers of the measured scenario, for the record
        print(f"\nmeasured: {tokens} token requests ({rejected} refused), {first.failed_attempts} failed deliveries, "
              f"{first.poisoned} poisoned, {rt.stores.parked.approximate_count()} parked, 0 queued by 2 later timer runs")

    # The admin registers the certificate; the next due test lifts the quarantine and the ops are applied.
    target_app(bad).certificates.append(RegisteredCertificate.from_pem(setup.certificate.cert_pem))
    make_due(setup, bad.pair.id)
    host.fire_timer()
    assert not rt.stores.pair_state.get(bad.pair.id).quarantined
    assert rt.stores.parked.approximate_count() == 0
    report = host.drain_queue(deadline_seconds=60)
    assert report.poisoned == 0 and report.left_in_queue == 0
    assert len(ours(bad)) == 32 and len(ours(good)) == 5
    assert {row.status for row in rt.stores.contacts.rows(bad.pair.id)} == {"ok"}

    assert cli.main(["status", "--json"], runtime=lambda: rt) == 0
    assert '"parked": 0' in capsys.readouterr().out


def test_a_source_sign_in_failure_quarantines_at_planning_and_backs_off(setup: Setup,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    made, other = setup.pair(), setup.pair("other-pair")
    setup.add_users(made, 3)
    setup.add_users(other, 2)
    monkeypatch.setenv("CTCS_SECRET_CONNECTION_TEST", "a-rotated-away-secret")
    rt = setup.rt
    rt.forget_connections(made.pair.id)
    result = run_pair(rt, made.pair.id, trigger=RunTrigger.TIMER)
    assert result.outcome is RunOutcome.QUARANTINED
    state = rt.stores.pair_state.get(made.pair.id)
    assert state.credentials_quarantined and state.quarantine_reason.startswith("source: wrong or expired client secret")
    assert rt.stores.ops.approximate_count() == 0 and state.delta_link == ""

    # The gate's release does not release a credentials quarantine.
    assert run_pair(rt, made.pair.id, trigger=RunTrigger.CLI, allow_deletes=True).outcome is RunOutcome.QUARANTINED
    assert cli.main(["run", "--pair", made.pair.id], runtime=lambda: rt) == cli.EXIT_USAGE
    assert setup.host.call_http("POST", f"/api/pairs/{made.pair.id}/resync").status == 409

    # Back-off: 5 minutes after the failure, then 15, then every 60; a test that is not due costs nothing.
    now = datetime.now(UTC)
    setup.cloud.reset_counts()
    assert retest_quarantined(rt, now=now + timedelta(minutes=4)) == []
    assert setup.cloud.counts["token"] == 0
    [again] = retest_quarantined(rt, now=now + timedelta(minutes=6))
    assert not again.lifted and rt.stores.pair_state.get(made.pair.id).failed_tests == 2
    waits = []
    moment = now + timedelta(minutes=6)
    for _ in range(3):
        due = datetime.fromisoformat(rt.stores.pair_state.get(made.pair.id).retest_at)
        waits.append(round((due - moment).total_seconds() / 60))
        moment = due
        retest_quarantined(rt, now=moment)
    assert waits == [15, 60, 60]

    # The other pair (same source tenant app? no: its own tenants) was never held back.
    monkeypatch.setenv("CTCS_SECRET_CONNECTION_TEST", "connection-test-secret-value")
    [lifted] = retest_quarantined(rt, now=moment + timedelta(hours=2))
    assert lifted.lifted and not rt.stores.pair_state.get(made.pair.id).quarantined
    assert run_pair(rt, made.pair.id, trigger=RunTrigger.TIMER).outcome is RunOutcome.PLANNED


def test_cli_run_parks_and_pairs_test_lifts(setup: Setup, capsys: pytest.CaptureFixture[str]) -> None:
    made = setup.pair()
    setup.add_users(made, 6)
    target_app(made).directory_roles = ()  # the Exchange role was dropped
    rt = setup.rt
    assert cli.main(["run", "--pair", made.pair.id], runtime=lambda: rt) == cli.EXIT_USAGE
    err = capsys.readouterr().err
    assert "quarantined for its credentials: target: missing Exchange role" in err and "pairs test" in err
    assert rt.stores.parked.approximate_count() == 6 and rt.stores.poison.approximate_count() == 0
    assert rt.stores.pairs.get(made.pair.id) and rt.stores.runs.recent(made.pair.id)[0].counts.get("applied_parked") == 6

    assert cli.main(["pairs", "test", made.pair.id], runtime=lambda: rt) == cli.EXIT_USAGE  # not fixed yet
    assert rt.stores.pair_state.get(made.pair.id).credentials_quarantined
    target_app(made).directory_roles = ("Exchange Recipient Administrator",)
    assert cli.main(["pairs", "test", made.pair.id], runtime=lambda: rt) == cli.EXIT_OK
    assert "credentials quarantine lifted; 6 waiting operation(s) back on the queue" in capsys.readouterr().out
    setup.host.drain_queue(deadline_seconds=60)
    assert len(ours(made)) == 6
