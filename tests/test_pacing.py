"""Pacing Exchange calls per target organisation: the shared arithmetic (sync.core.pacing), the slots of one worker
instance (sync.exchange.pacing.OrgPacer), and the state the instances share through TargetState on Azurite."""

from __future__ import annotations

import threading
import time

import pytest

from sync.core.pacing import LocalPaceBoard, PaceReport, PaceRules, PaceState, advance, share
from sync.exchange.pacing import OrgPacer
from sync.state.stores import Stores

RULES = PaceRules(maximum=12)


def test_the_limit_grows_while_work_waits_and_nothing_is_refused() -> None:
    state = RULES.initial()
    assert state.limit == 3
    state = advance(state, PaceReport(calls=5, saturated=True), RULES)
    assert state.limit == 3 and state.calls == 5, "one step per grow_calls(limit) successful calls"
    state = advance(state, PaceReport(calls=1, saturated=True), RULES)
    assert state.limit == 4 and state.calls == 0
    idle = advance(state, PaceReport(calls=100, saturated=False), RULES)
    assert idle.limit == 4, "no more slots without work waiting for them"
    capped = advance(PaceState(limit=12), PaceReport(calls=1000, saturated=True), RULES)
    assert capped.limit == 12, "never above the maximum"


def test_a_refusal_lowers_the_limit_and_remembers_where() -> None:
    state = advance(PaceState(limit=11, calls=30), PaceReport(calls=99, refused=1, saturated=True), RULES)
    assert (state.limit, state.ceiling, state.calls) == (10, 11, 0)
    heavy = advance(PaceState(limit=10), PaceReport(calls=30, refused=70), RULES)
    assert heavy.limit == 3 and heavy.ceiling == 10, "far over the cap: down to the part that got through"
    early = advance(PaceState(limit=10), PaceReport(calls=3, refused=1), RULES)
    assert early.limit == 9, "too few calls to tell how far over: one step"
    tail = advance(early, PaceReport(calls=2, refused=1), RULES)
    assert (tail.limit, tail.ceiling) == (9, 10), "the same burst's late refusals do not lower it again"
    again = advance(PaceState(limit=9, ceiling=10, calls=20), PaceReport(calls=2, refused=1), RULES)
    assert again.limit == 8, "a refusal after a round of calls at the lower limit does"
    assert advance(PaceState(limit=1), PaceReport(refused=5), RULES).limit == 1


def test_the_ceiling_is_probed_rarely() -> None:
    state = PaceState(limit=10, ceiling=11)
    grown = advance(state, PaceReport(calls=RULES.grow_calls(10), saturated=True), RULES)
    assert grown.limit == 10, "one below the ceiling: growing onto it is a probe"
    probed = advance(state, PaceReport(calls=RULES.probe_calls(10), saturated=True), RULES)
    assert (probed.limit, probed.ceiling) == (11, 12), "the probe held: the next step is a probe again"
    below = advance(PaceState(limit=5, ceiling=11), PaceReport(calls=RULES.grow_calls(5), saturated=True), RULES)
    assert below.limit == 6, "far below the ceiling: ordinary growth"


def test_throttled_until_only_moves_forward() -> None:
    state = advance(PaceState(limit=4, throttled_until=200.0), PaceReport(throttled_until=100.0), RULES)
    assert state.throttled_until == 200.0
    assert advance(state, PaceReport(throttled_until=300.0), RULES).throttled_until == 300.0


def test_instances_split_the_limit_the_same_way() -> None:
    members = ["b", "a", "c"]
    assert [share(10, members, me) for me in ("a", "b", "c")] == [4, 3, 3]
    assert share(10, [], "a") == 10
    assert share(1, members, "c") == 1, "every instance keeps at least one slot"
    assert share(5, ["a"], "z") == 2, "one not yet seen by the others counts itself in"


def test_a_pacer_runs_its_share_at_once_and_no_more() -> None:
    pacer = OrgPacer("org", board=LocalPaceBoard(), instance="me", rules=PaceRules(maximum=8, start=2),
                     report_seconds=60)
    running, peak = [0], [0]
    lock = threading.Lock()

    def call() -> None:
        with pacer.slot():
            with lock:
                running[0] += 1
                peak[0] = max(peak[0], running[0])
            time.sleep(0.05)
            with lock:
                running[0] -= 1
        pacer.observe(status=200)

    threads = [threading.Thread(target=call) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert peak[0] == 2


def test_a_refusal_gives_up_a_slot_at_once_and_retry_after_holds_every_call() -> None:
    pacer = OrgPacer("org", board=LocalPaceBoard(), instance="me", rules=PaceRules(maximum=8, start=4),
                     report_seconds=60)
    assert pacer.share == 1, "one slot until the first report tells how many instances share the limit"
    with pacer.slot():
        pass
    assert pacer.share == 4
    pacer.observe(status=429, concurrency_refused=True)
    assert pacer.share == 3 and pacer.refusals == 1
    pacer.observe(status=429, retry_after=0.3)
    started = time.monotonic()
    with pacer.slot():
        pass
    assert time.monotonic() - started >= 0.25


def test_a_spent_budget_holds_calls_until_the_reset() -> None:
    pacer = OrgPacer("org", board=LocalPaceBoard(), instance="me", report_seconds=60)
    pacer.observe(status=200, headers={"Rate-Limit-Remaining": "500", "Rate-Limit-Reset": "5"})
    started = time.monotonic()
    with pacer.slot():
        pass
    assert time.monotonic() - started < 0.1, "plenty left: no wait"
    pacer.observe(status=200, headers={"Rate-Limit-Remaining": "2", "Rate-Limit-Reset": "0.3"})
    started = time.monotonic()
    with pacer.slot():
        pass
    assert time.monotonic() - started >= 0.25


def test_instances_share_the_pace_through_the_table(stores: Stores) -> None:
    board = stores.targets.board()
    rules = PaceRules(maximum=16)
    state, members = board.exchange("Fabrikam.onmicrosoft.com", "one", PaceReport(calls=10, saturated=True), rules)
    assert state.limit == 4 and members == ["one"]
    state, members = board.exchange("fabrikam.onmicrosoft.com", "two", PaceReport(calls=2, refused=1), rules)
    assert (state.limit, state.ceiling) == (3, 4) and members == ["one", "two"]
    shared, seen = stores.targets.pace("fabrikam.onmicrosoft.com")
    assert shared == state and set(seen) == {"one", "two"}
    gone = stores.targets.board(member_seconds=0.0)
    _, members = gone.exchange("fabrikam.onmicrosoft.com", "three", PaceReport(), rules)
    assert members == ["three"], "instances that stopped reporting no longer take a share"


def test_pacers_of_two_instances_follow_the_shared_limit(stores: Stores) -> None:
    rules = PaceRules(maximum=16, start=6)
    first = OrgPacer("org.example", board=stores.targets.board(), instance="a", rules=rules, report_seconds=0.0)
    second = OrgPacer("org.example", board=stores.targets.board(), instance="b", rules=rules, report_seconds=0.0)
    for pacer in (first, second, first):
        with pacer.slot():
            pass
    assert (first.limit, first.share) == (6, 3) and (second.limit, second.share) == (6, 3)


CAPTURED_DATE = "Wed, 22 May 2024 16:52:10 GMT"  # a live answer: Date, and Rate-Limit-Reset 16.365 s later
CAPTURED_RESET = "2024-05-22T16:52:26.365Z"
CAPTURED_AT = 1716396730.0  # CAPTURED_DATE as epoch seconds


def pacer_at(wall: float) -> OrgPacer:
    return OrgPacer("org", board=LocalPaceBoard(), instance="me", report_seconds=60, clock=lambda: 100.0,
                    wall=lambda: wall)


def test_the_budget_reset_is_read_as_the_absolute_time_exchange_sends() -> None:
    pacer = pacer_at(CAPTURED_AT + 0.5)
    pacer.observe(status=200, headers={"Rate-Limit-Limit": "30000", "Rate-Limit-Remaining": "2",
                                       "Rate-Limit-Reset": CAPTURED_RESET, "Date": CAPTURED_DATE})
    assert pacer.throttled_until == pytest.approx(CAPTURED_AT + 16.365), "held until the reset time the answer names"


def test_an_absolute_reset_is_measured_from_the_answers_date_when_our_clock_is_off() -> None:
    ahead = pacer_at(CAPTURED_AT + 3600)  # this machine's clock is an hour ahead of Exchange's
    ahead.observe(status=200, headers={"Rate-Limit-Remaining": "0", "Rate-Limit-Reset": CAPTURED_RESET,
                                       "Date": CAPTURED_DATE})
    assert ahead.throttled_until == pytest.approx(CAPTURED_AT + 3600 + 16.365), "the hold is 16.365 s, not skipped"
    behind = pacer_at(CAPTURED_AT - 3600)
    behind.observe(status=200, headers={"Rate-Limit-Remaining": "0", "Rate-Limit-Reset": CAPTURED_RESET,
                                        "Date": CAPTURED_DATE})
    assert behind.throttled_until == pytest.approx(CAPTURED_AT - 3600 + 16.365), "nor stretched to an hour"


def test_the_budget_reset_in_seconds_and_unreadable_resets() -> None:
    seconds = pacer_at(1000.0)
    seconds.observe(status=200, headers={"rate-limit-remaining": "1", "rate-limit-reset": "37.5"})
    assert seconds.throttled_until == 1037.5
    for unreadable in ("soon", "", "2024-13-45T00:00:00Z"):
        pacer = pacer_at(1000.0)
        pacer.observe(status=200, headers={"Rate-Limit-Remaining": "1", "Rate-Limit-Reset": unreadable})
        assert pacer.throttled_until == 0.0, unreadable
    plenty = pacer_at(CAPTURED_AT)
    plenty.observe(status=200, headers={"Rate-Limit-Remaining": "29997", "Rate-Limit-Reset": CAPTURED_RESET})
    assert plenty.throttled_until == 0.0, "plenty left: no hold"
