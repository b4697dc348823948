"""Graph change notifications in, one debounced planning run per pair out.

    Graph ──POST /api/notifications/{pair}/{token}──► issued_address_id: the token checked by arithmetic alone (HMAC
        with CTCS_NOTIFICATION_KEY, sync.core.notification_path); a wrong one is refused before any storage, queue or
        log work, counted in memory and logged at most once a minute (`RefusedPaths`)
    ──► accept_notifications: each item checked against its subscription row (this pair, this address id, its
        clientState's hash, the pair's source tenant); counted; the pair's mark armed ──► pair-runs (delayed `plan`,
        trigger notification) ──► run_requested ──► run_pair (lease, gate, delta)

The route does no Graph or Exchange work: per accepted request it reads the subscription rows, counts, and for each
pair with accepted items arms `notify_pending_until` in PairState (ETag-guarded) and, when it armed it, sends one
`plan` request with a visibility delay of `CTCS_NOTIFICATION_DELAY_SECONDS`. Every notification of the burst that
arrives meanwhile finds the mark armed and only counts, so a burst makes one run; the planner disarms the mark
when the run starts, so changes during the run make (at most) one more. A notification never says *what* changed:
the run reads `users/delta` like any other, so a lost, repeated or forged notification cannot change a contact,
and the timer still runs every pair as the safety net.

An item whose subscription id is unknown, belongs to another pair or address id, whose clientState does not
match or whose `tenantId` is not the pair's source tenant is rejected: counted (on its subscription's row, or on
`~unmatched`), logged without the value, never acted on. Only a caller that holds an issued URL gets this far.

The validation handshake (`?validationToken=`) is answered only while the timer is creating a subscription of this
pair and address id (`SubscriptionStore.creating`), so nobody else's subscription can be pointed at ctcs.

Lifecycle events (`lifecycleEvent` items, posted to the same URL): `reauthorizationRequired` and
`subscriptionRemoved` mark the row; the notification run confirms them with Graph before acting (GET the
subscription: renew, make again, or nothing when a `subscriptionRemoved` names one Graph still has); `missed` (and
the other two: notifications may have been lost) starts a run. Microsoft documents that directory resources send
only `reauthorizationRequired`; ctcs handles all three.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sync.app.notifications.lean import IntakeRuntime
from sync.contract.pair_runs import PairRunRequest, RunKind
from sync.contract.vocabulary import RunTrigger, SubscriptionState
from sync.core.notification_path import checked_address_id
from sync.state.entities import iso, now_utc
from sync.state.subscriptions import SubscriptionRow

log = logging.getLogger("ctcs.notifications")

MAX_BODY_BYTES = 1_000_000  # Graph batches a few hundred items at most; anything larger is not Graph
MAX_VALIDATION_TOKEN = 1_000
REFUSED_LOG_SECONDS = 60.0  # refused requests are logged as one line per this many seconds at most
PENDING_GRACE_SECONDS = 120  # a mark whose request never reached the queue lapses this long after its run was due
LIFECYCLE_MARKS = {
    "reauthorizationRequired": SubscriptionState.REAUTHORIZE,
    "subscriptionRemoved": SubscriptionState.REMOVED,
}


class NotNotifications(ValueError):
    """The body is not a Graph notification collection."""


@dataclass
class Accepted:
    """What one notification request did (the route's answer and its log line)."""

    accepted: int = 0
    rejected: int = 0
    pairs: list[str] = field(default_factory=list)  # pairs with accepted items
    runs_requested: list[str] = field(default_factory=list)  # pairs whose run this request asked for
    lifecycle: Counter[str] = field(default_factory=Counter)
    refusals: Counter[str] = field(default_factory=Counter)  # why items naming a subscription of ours were rejected


class RefusedPaths:
    """Requests refused for their path (no token ctcs issued): counted exactly under concurrency, in memory, and
    logged as one aggregated line per `REFUSED_LOG_SECONDS` at most, so a flood costs no storage and no log volume."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.total = 0
        self._unlogged = 0
        self._logged_at: float | None = None
        self._lock = threading.Lock()

    def refuse(self) -> None:
        with self._lock:
            self.total += 1
            self._unlogged += 1
            now = self.clock()
            if self._logged_at is not None and now - self._logged_at < REFUSED_LOG_SECONDS:
                return
            count, self._unlogged, self._logged_at = self._unlogged, 0, now
        log.warning("refused %d change-notification request(s) at an address ctcs never gave out (since the last "
                    "such line)", count, extra={"refused": count})


REFUSED = RefusedPaths()  # one per process, like the route's Runtime


def issued_address_id(rt: IntakeRuntime, pair_id: str, token: str) -> str | None:
    """The address id of an issued path, or None (counted in `REFUSED`): no storage, no queue, and at most one
    aggregated log line a minute."""
    address_id = checked_address_id(rt.tuning.notification_key, pair_id, token)
    if address_id is None:
        REFUSED.refuse()
    return address_id


def parse_items(body: bytes) -> list[dict[str, Any]]:
    if len(body) > MAX_BODY_BYTES:
        raise NotNotifications(f"the body is {len(body)} bytes, more than Graph sends")
    try:
        parsed = json.loads(body)
    except (ValueError, RecursionError):
        raise NotNotifications("the body is not JSON") from None
    try:  # JSON escapes can spell text that is not Unicode (a lone surrogate): refuse it here, not deep inside
        json.dumps(parsed, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise NotNotifications("the body holds a string that is not valid Unicode text") from None
    items = parsed.get("value") if isinstance(parsed, dict) else None
    if not isinstance(items, list):
        raise NotNotifications("the body has no 'value' list of notifications")
    return [item for item in items if isinstance(item, dict)]


def _refusal(row: SubscriptionRow, pair_id: str, address_id: str, item: dict[str, Any]) -> str:
    """Why an item that names a subscription of ours is not acted on ("" when it is)."""
    if row.pair_id != pair_id or row.address_id != address_id:
        return "another address"  # the URL of another pair, or of a subscription since replaced
    if not row.matches(item.get("clientState")):
        return "clientState"
    if str(item.get("tenantId", "")).lower() != row.tenant_id:
        return "tenantId"
    return ""


def accept_notifications(rt: IntakeRuntime, body: bytes, *, pair_id: str, address_id: str) -> Accepted:
    """Check and count every item posted to the pair's URL of this address_id, then ask for one run per pair with
    accepted items (see the module docstring)."""
    items = parse_items(body)
    store = rt.stores.subscriptions
    subscriptions = store.by_subscription_id()
    done = Accepted()
    per_row: dict[str, tuple[SubscriptionRow, Counter[str]]] = {}
    unmatched = 0
    marks: dict[tuple[str, str], SubscriptionState] = {}
    for item in items:
        row = subscriptions.get(str(item.get("subscriptionId", "")))
        if row is None:
            unmatched += 1
            continue
        counts = per_row.setdefault(row.subscription_id, (row, Counter()))[1]
        refusal = _refusal(row, pair_id, address_id, item)
        if refusal:
            counts["rejected"] += 1
            done.refusals[refusal] += 1
            continue
        counts["accepted"] += 1
        event = item.get("lifecycleEvent")
        if isinstance(event, str) and event:
            done.lifecycle[event] += 1
            if event in LIFECYCLE_MARKS:
                marks[(row.pair_id, row.resource)] = LIFECYCLE_MARKS[event]
        if row.pair_id not in done.pairs:
            done.pairs.append(row.pair_id)
    for (pair_id, resource), state in marks.items():
        store.mark(pair_id, resource, state)
    for row, counts in per_row.values():
        done.accepted += counts["accepted"]
        done.rejected += counts["rejected"]
        store.count(row, accepted=counts["accepted"], rejected=counts["rejected"])
    if unmatched:
        done.rejected += unmatched
        store.count(None, rejected=unmatched)
    if done.rejected:
        log.warning("rejected %d change notification(s): unknown subscription, another address, wrong clientState "
                    "or tenantId", done.rejected,
                    extra={"rejected": done.rejected, "unmatched": unmatched, "why": dict(done.refusals)})
    for pair_id in done.pairs:
        try:
            if request_notification_run(rt, pair_id):
                done.runs_requested.append(pair_id)
        except Exception:  # one pair's storage trouble stops no other (invariant 7); the timer catches up
            log.exception("pair %s: could not ask for its notification run", pair_id)
    return done


def request_notification_run(rt: IntakeRuntime, pair_id: str) -> bool:
    """Ask for the pair's run `CTCS_NOTIFICATION_DELAY_SECONDS` from now, unless one is already asked for."""
    delay = rt.tuning.notification_delay_seconds
    if not rt.stores.pair_state.arm_notification_run(pair_id, pending_seconds=delay + PENDING_GRACE_SECONDS):
        return False
    request = PairRunRequest(pair_id, RunKind.PLAN, RunTrigger.NOTIFICATION, requested_at=iso(now_utc()))
    rt.stores.pair_runs.send(request, delay_seconds=delay)
    return True


def validation_answer(rt: IntakeRuntime, pair_id: str, address_id: str, token: str) -> str | None:
    """The validation handshake's answer (the token as sent, the host has URL-decoded it, bounded in size), or None
    when no subscription of this pair and address id is being created right now."""
    if not rt.stores.subscriptions.creating(pair_id, address_id):
        return None
    return token[:MAX_VALIDATION_TOKEN]
