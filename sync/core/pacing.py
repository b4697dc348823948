"""How many Exchange cmdlets one target organisation gets at once, across every worker instance (pure arithmetic).

Exchange Online refuses calls beyond a small, unpublished number in flight per tenant (HTTP 429, "You have reached
the maximum number of concurrent requests per tenant"), and every worker instance applies ops at the same time.
So the instances share one `PaceState` per organisation (kept in Table Storage by `sync.state.targets`) and each
runs its `share()` of the state's `limit`. Every instance reports about once a second (`PaceReport`) and the state
moves by these rules (`advance`):

- Refused (concurrency 429s since the last report): the limit the refusals happened at becomes the `ceiling`, and
  the limit drops to the part of the calls that got through (one step when the report holds too few calls to
  tell), at least one below it.
- Saturated (calls waited for a slot) and nothing refused: the limit grows by one every `grow_calls(limit)`
  successful calls up to one below the ceiling. Reaching the ceiling itself is a probe, allowed only after
  `probe_calls(limit)` calls without a refusal (each probe may cost a 429 or two); a probe that holds lifts the
  ceiling. So the limit finds the tenant's capacity and stays just under it, and the share of refused calls stays
  near one probe's refusals per `probe_calls` calls.
- A spent budget (429 with Retry-After) or a low `Rate-Limit-Remaining`: `throttled_until`, which every instance
  honours before it starts another call.

The limit never exceeds `PaceRules.maximum` (the setting `CTCS_EXCHANGE_MAX_CONCURRENCY`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Protocol

START_LIMIT = 3  # the ~3 concurrent calls per credential community reports call safe
GROW_CALLS_PER_SLOT = 2  # grow one step per two rounds of calls at the current limit
PROBE_CALLS_PER_SLOT = 200  # probe the ceiling after two hundred rounds without a refusal


@dataclass(frozen=True)
class PaceRules:
    maximum: int = 10  # the limit never grows above this
    start: int = START_LIMIT

    def grow_calls(self, limit: int) -> int:
        return max(1, GROW_CALLS_PER_SLOT * limit)

    def probe_calls(self, limit: int) -> int:
        return max(1, PROBE_CALLS_PER_SLOT * limit)

    def initial(self) -> PaceState:
        return PaceState(limit=max(1, min(self.start, self.maximum)))


@dataclass(frozen=True)
class PaceState:
    """One organisation's shared pace."""

    limit: int  # concurrent calls all instances together may run now
    ceiling: int = 0  # the total at which the tenant last refused (0: never seen)
    calls: int = 0  # successful calls since the limit last changed
    throttled_until: float = 0.0  # epoch seconds: no call starts before (a spent budget, Retry-After)


@dataclass(frozen=True)
class PaceReport:
    """What one instance saw since its last report."""

    calls: int = 0  # calls answered without a concurrency refusal
    refused: int = 0  # concurrency 429s
    saturated: bool = False  # some call waited for a slot: more work than the limit let through
    throttled_until: float = 0.0  # epoch seconds: the latest "wait until" the tenant asked for (0: none)


def advance(state: PaceState, report: PaceReport, rules: PaceRules) -> PaceState:
    """The shared state after one instance's report."""
    throttled_until = max(state.throttled_until, report.throttled_until)
    limit = min(state.limit, rules.maximum)
    if report.refused and state.ceiling == limit + 1 and state.calls + report.calls < limit:
        # The tail of the refusal that just lowered the limit (calls already on their way): the limit has come
        # down for it once; lowering again for each report of the same burst would undershoot.
        return replace(state, limit=limit, calls=state.calls + report.calls, throttled_until=throttled_until)
    if report.refused:
        samples = report.calls + report.refused
        # Enough calls to tell how far over the cap the limit is: down to the part that got through. A report
        # sent right after a refusal holds few calls: one step down, and the next report goes further if needed.
        through = math.floor(limit * report.calls / samples) if samples >= 2 * limit else limit - 1
        lowered = max(1, min(limit - 1, through))
        return PaceState(limit=lowered, ceiling=limit, calls=0, throttled_until=throttled_until)
    calls = state.calls + report.calls
    ceiling = state.ceiling
    if report.saturated and limit < rules.maximum:
        probing = bool(ceiling) and limit + 1 >= ceiling
        needed = rules.probe_calls(limit) if probing else rules.grow_calls(limit)
        if calls >= needed:
            # A probe steps onto the ceiling; the step after it is a probe again (the ceiling moves one up).
            ceiling = limit + 2 if probing else ceiling
            return PaceState(limit=limit + 1, ceiling=ceiling, calls=0, throttled_until=throttled_until)
    return replace(state, limit=limit, calls=calls, throttled_until=throttled_until)


def share(limit: int, members: Sequence[str], me: str) -> int:
    """This instance's part of `limit`: an even split among the active instances (ids sorted, so every instance
    computes the same split), the remainder to the first ones; at least one call each."""
    everyone = sorted({*members, me})
    base, extra = divmod(max(1, limit), len(everyone))
    return max(1, base + (1 if everyone.index(me) < extra else 0))


class PaceBoard(Protocol):
    """Where the instances meet: `sync.state.targets.TablePaceBoard` (Table Storage) in production."""

    def exchange(self, organization: str, instance: str, report: PaceReport, rules: PaceRules) -> tuple[PaceState, list[str]]:
        """Apply `report` to the organisation's shared state, mark `instance` alive, and return the state with the
        ids of the instances active right now."""
        ...


class LocalPaceBoard:
    """A board for one process alone (the CLI without shared storage, tests): the same rules, in memory."""

    def __init__(self) -> None:
        self.states: dict[str, PaceState] = {}

    def exchange(self, organization: str, instance: str, report: PaceReport, rules: PaceRules) -> tuple[PaceState, list[str]]:
        state = advance(self.states.get(organization) or rules.initial(), report, rules)
        self.states[organization] = state
        return state, [instance]


def describe(state: PaceState, members: Sequence[str]) -> str:
    """One line for logs: limit, ceiling, instances."""
    ceiling = f", refused at {state.ceiling}" if state.ceiling else ""
    return f"{state.limit} concurrent calls across {len(members)} instance(s){ceiling}"
