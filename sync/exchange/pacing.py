"""`OrgPacer`: the slots for Exchange calls to one target organisation in this process, sized by the shared pace.

Every HTTP call to the admin API takes a slot (`with pacer.slot(): ...`) and reports how it went (`observe`):
- this process may run its share of the organisation's limit at once (`sync.core.pacing.share`); the others wait;
- a concurrency 429 shrinks this process's share by one at once and is reported at once; while the shared limit
  comes down the share does not grow back before every instance has heard of it;
- a 429 with Retry-After (a spent budget), or a `Rate-Limit-Remaining` no larger than the limit, holds every new
  call of the organisation until the tenant's reset time (`Rate-Limit-Reset`, read as seconds or as the absolute
  ISO-8601 time Exchange Online sends);
- the concurrency headers of an answer (`X-Combinedapponlyconcurrencycount` less `X-Concurrencycount`: other
  apps' calls in flight at the tenant) take this process's proportion of those calls off its share until an answer
  says otherwise, so the shared limit measures the tenant's whole cap and ctcs leaves room for the other apps;
- about once a second (`report_seconds`) one calling thread reports what it saw to the `PaceBoard` (Table Storage:
  a read and a conditional write, whatever the number of calls) and takes back the shared limit and the active
  instances. Nothing is reported while the organisation is idle.
"""

from __future__ import annotations

import contextlib
import logging
import math
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

from sync.core.pacing import PaceBoard, PaceReport, PaceRules, describe, share

log = logging.getLogger("ctcs.pacing")

REPORT_SECONDS = 1.0
CONCURRENCY_RETRY_SECONDS = 0.5  # a refused call waits this long before it queues for a slot again
CLOCK_TRUST_SECONDS = 2.0  # an absolute Rate-Limit-Reset is read against our clock while it is this close to Date
MAX_BUDGET_HOLD_SECONDS = 900.0  # a reset further away than this is taken as a misread, not a quarter-hour pause


class OrgPacer:
    """Slots for one organisation's calls in this process; thread-safe."""

    def __init__(
        self,
        organization: str,
        *,
        board: PaceBoard,
        instance: str,
        rules: PaceRules | None = None,
        report_seconds: float = REPORT_SECONDS,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.organization = organization
        self.instance = instance
        self.rules = rules or PaceRules()
        self._board = board
        self._report_seconds = report_seconds
        self._clock, self._wall = clock, wall
        self._cond = threading.Condition()
        self._held = threading.local()
        self.limit = self.rules.initial().limit  # the organisation's total, as last heard
        self.share = 1  # this process's part of it: one slot until the first report says how many share it
        self._in_flight = 0
        self._not_before = 0.0  # monotonic: no call starts before
        self._last_report = float("-inf")  # the first call reports first: it learns the pace and the others
        self._reporting = False
        self._calls = 0
        self._refused = 0
        self._saturated = False
        self._throttled_until = 0.0  # epoch, to publish
        self.refusals = 0  # concurrency 429s seen by this process, for reports and tests
        self.others_in_flight = 0  # other apps' calls at the tenant, as the last answer's concurrency headers said

    @property
    def throttled_until(self) -> float:
        """Epoch time before which no call of the organisation starts (a spent or nearly spent budget); 0: none."""
        with self._cond:
            return self._throttled_until

    def __repr__(self) -> str:
        return f"<OrgPacer {self.organization}: {self._in_flight}/{self.share} of {self.limit}>"

    @contextlib.contextmanager
    def slot(self) -> Iterator[None]:
        """Hold one of this process's slots for the organisation while the call runs. Re-entrant: a thread that
        holds a slot (a shared look-up that waited for its slot before it closed its batch) does not take a
        second one for the call it makes inside."""
        if getattr(self._held, "slot", False):
            yield
            return
        self._acquire()
        self._held.slot = True
        try:
            yield
        finally:
            self._held.slot = False
            with self._cond:
                self._in_flight -= 1
                self._cond.notify()

    def _acquire(self) -> None:
        while True:
            self._report_if_due()
            with self._cond:
                now = self._clock()
                if now < self._not_before:
                    self._cond.wait(min(self._not_before - now, self._report_seconds))
                    continue
                if self._in_flight < self._room():
                    self._in_flight += 1
                    return
                self._saturated = True
                self._cond.wait(self._report_seconds)

    def observe(self, *, status: int, concurrency_refused: bool = False, retry_after: float | None = None,
                headers: Mapping[str, str] | None = None) -> None:
        """How one call went: its status, whether the tenant's concurrency cap refused it, its Retry-After and
        response headers (`Rate-Limit-Remaining`, `Rate-Limit-Reset`)."""
        with self._cond:
            now = self._clock()
            if concurrency_refused:
                self._refused += 1
                self.refusals += 1
                self.share = max(1, self.share - 1)
                self._last_report = float("-inf")  # tell the others now, not in a second
            elif status != 429:
                self._calls += 1
            if status == 429 and not concurrency_refused and retry_after is not None:
                self._hold(now, retry_after)
            others = _others_in_flight(headers)
            if others is not None:
                self.others_in_flight = others
            remaining, reset = _budget(headers, self._wall())
            if remaining is not None and reset is not None and remaining <= self.limit:
                self._hold(now, reset)
            # Nothing here frees a slot, so no waiter is woken: waking every waiter on every answer costs each of
            # them the GIL once per call (a convoy that slowed a busy worker several-fold).

    def room(self) -> int:
        """How many calls this process may have in flight now."""
        with self._cond:
            return self._room()

    def _room(self) -> int:
        # The share, less this process's part of the calls other apps have in flight at the tenant (every instance
        # gives up its share's proportion of them, so together they give up about all of them): the tenant counts
        # every app-only caller against one cap, and `limit` grows to that cap while the others' calls come and go.
        if not self.others_in_flight:
            return self.share
        return max(1, self.share - math.ceil(self.others_in_flight * self.share / max(1, self.limit)))

    def _hold(self, now: float, seconds: float) -> None:
        self._not_before = max(self._not_before, now + seconds)
        self._throttled_until = max(self._throttled_until, self._wall() + seconds)

    def _report_if_due(self) -> None:
        with self._cond:
            if self._reporting or self._clock() - self._last_report < self._report_seconds:
                return
            self._reporting = True
            report = PaceReport(self._calls, self._refused, self._saturated, self._throttled_until)
            self._calls = self._refused = 0
            self._saturated = False
        try:
            state, members = self._board.exchange(self.organization, self.instance, report, self.rules)
        except Exception as error:  # the shared state is an optimisation; the local share keeps working
            log.warning("pace of %s not shared this time: %s", self.organization, error)
            with self._cond:
                self._calls += report.calls
                self._refused += report.refused
                self._last_report, self._reporting = self._clock(), False
            return
        with self._cond:
            if (state.limit, len(members)) != (self.limit, len(set(members) | {self.instance})):
                log.info("pace of %s: %s", self.organization, describe(state, members))
            mine = share(state.limit, members, self.instance)
            # While the limit comes down, keep what a refusal already took off this instance's share: the
            # others only learn the lower limit at their next report, and until then the total must not grow.
            self.share = min(mine, self.share) if state.limit < self.limit else mine
            self.limit = state.limit
            wait = state.throttled_until - self._wall()
            if wait > 0:
                self._not_before = max(self._not_before, self._clock() + wait)
            self._last_report, self._reporting = self._clock(), False
            self._cond.notify_all()


def _budget(headers: Mapping[str, str] | None, wall: float) -> tuple[int | None, float | None]:
    """(Rate-Limit-Remaining, seconds until Rate-Limit-Reset) when the answer carries them.

    Exchange has been seen sending the reset as an absolute time (`2024-05-22T16:52:26.365Z`); the simulator and
    older answers send seconds (`37.5`). Both are read. An absolute time is measured against the answer's `Date`
    when this machine's clock (`wall`) is more than `CLOCK_TRUST_SECONDS` away from it, so a skewed clock can
    neither skip the hold nor stretch it; a hold never exceeds `MAX_BUDGET_HOLD_SECONDS`."""
    if not headers:
        return None, None
    remaining_text = _header(headers, "Rate-Limit-Remaining")
    reset_text = _header(headers, "Rate-Limit-Reset")
    if remaining_text is None or reset_text is None:
        return None, None
    try:
        remaining = int(remaining_text)
    except ValueError:
        return None, None
    reset = _reset_seconds(reset_text, _header(headers, "Date"), wall)
    if reset is None:
        return None, None
    return remaining, min(MAX_BUDGET_HOLD_SECONDS, max(0.0, reset))


def _others_in_flight(headers: Mapping[str, str] | None) -> int | None:
    """Calls of other apps in flight at the tenant: `X-Combinedapponlyconcurrencycount` (every app-only caller's)
    less `X-Concurrencycount` (this app's); None when an answer does not carry both (then nothing changes)."""
    if not headers:
        return None
    own, combined = _header(headers, "X-Concurrencycount"), _header(headers, "X-Combinedapponlyconcurrencycount")
    if own is None or combined is None:
        return None
    try:
        return max(0, int(combined) - int(own))
    except ValueError:
        return None


def _reset_seconds(value: str, date: str | None, wall: float) -> float | None:
    """Seconds from now until the reset: `value` is seconds or an ISO-8601 time (with `Z` or an offset)."""
    with contextlib.suppress(ValueError):
        return float(value)
    try:
        moment = datetime.fromisoformat(value.strip())
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    now = wall
    if date:
        with contextlib.suppress(TypeError, ValueError, IndexError):
            served = parsedate_to_datetime(date).timestamp()
            if abs(served - wall) > CLOCK_TRUST_SECONDS:
                now = served
    return moment.timestamp() - now


def _header(headers: Mapping[str, str], name: str) -> str | None:
    """A header by name, whatever its case (httpx's headers already ignore case; a plain dict may not)."""
    value = headers.get(name) or headers.get(name.lower())
    return value.strip() if isinstance(value, str) and value.strip() else None
