"""Graph change notifications in, one debounced planning run per pair out.

    Graph ──POST /api/notifications──► accept_notifications: check each item's clientState against the hash of its
                                       subscription; count; arm the pair's mark ──► pair-runs (delayed `plan`,
                                       trigger notification) ──► run_requested ──► run_pair (lease, gate, delta)

The route does no Graph or Exchange work: per request it reads the subscription rows, counts, and for each pair
with accepted items arms `notify_pending_until` in PairState (ETag-guarded) and, when it armed it, sends one
`plan` request with a visibility delay of `CTCS_NOTIFICATION_DELAY_SECONDS`. Every notification of the burst that
arrives meanwhile finds the mark armed and only counts, so a burst makes one run; the planner disarms the mark
when the run starts, so changes during the run make (at most) one more. A notification never says *what* changed:
the run reads `users/delta` like any other, so a lost, repeated or forged notification cannot change a contact,
and the timer still runs every pair as the safety net.

An item whose subscription id is unknown or whose clientState does not match is rejected: counted (on its
subscription's row, or on `~unmatched`), logged without the value, never acted on.

Lifecycle events (`lifecycleEvent` items, posted to the same route): `reauthorizationRequired` marks the row for
renewal and `subscriptionRemoved` for re-creation, both done by the notification run before it plans; `missed`
(and the other two: notifications may have been lost) starts a run. Microsoft documents that directory resources
send only `reauthorizationRequired`; ctcs handles all three.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from sync.app.wiring.runtime import Runtime
from sync.contract.pair_runs import PairRunRequest, RunKind
from sync.contract.vocabulary import RunTrigger, SubscriptionState
from sync.state.entities import iso, now_utc
from sync.state.subscriptions import SubscriptionRow

log = logging.getLogger("ctcs.notifications")

MAX_BODY_BYTES = 1_000_000  # Graph batches a few hundred items at most; anything larger is not Graph
MAX_VALIDATION_TOKEN = 1_000
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


def parse_items(body: bytes) -> list[dict[str, Any]]:
    if len(body) > MAX_BODY_BYTES:
        raise NotNotifications(f"the body is {len(body)} bytes, more than Graph sends")
    try:
        parsed = json.loads(body)
    except (ValueError, RecursionError):
        raise NotNotifications("the body is not JSON") from None
    items = parsed.get("value") if isinstance(parsed, dict) else None
    if not isinstance(items, list):
        raise NotNotifications("the body has no 'value' list of notifications")
    return [item for item in items if isinstance(item, dict)]


def accept_notifications(rt: Runtime, body: bytes) -> Accepted:
    """Check and count every item, then ask for one run per pair with accepted items (see the module docstring)."""
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
        if not row.matches(item.get("clientState")):
            counts["rejected"] += 1
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
        log.warning("rejected %d change notification(s): unknown subscription or wrong clientState", done.rejected,
                    extra={"rejected": done.rejected, "unmatched": unmatched})
    for pair_id in done.pairs:
        try:
            if request_notification_run(rt, pair_id):
                done.runs_requested.append(pair_id)
        except Exception:  # one pair's storage trouble stops no other (invariant 7); the timer catches up
            log.exception("pair %s: could not ask for its notification run", pair_id)
    return done


def request_notification_run(rt: Runtime, pair_id: str) -> bool:
    """Ask for the pair's run `CTCS_NOTIFICATION_DELAY_SECONDS` from now, unless one is already asked for."""
    delay = rt.tuning.notification_delay_seconds
    if not rt.stores.pair_state.arm_notification_run(pair_id, pending_seconds=delay + PENDING_GRACE_SECONDS):
        return False
    request = PairRunRequest(pair_id, RunKind.PLAN, RunTrigger.NOTIFICATION, requested_at=iso(now_utc()))
    rt.stores.pair_runs.send(request, delay_seconds=delay)
    return True


def validation_answer(token: str) -> str:
    """The validation handshake's answer: the token as sent (the host has URL-decoded it), bounded in size."""
    return token[:MAX_VALIDATION_TOKEN]
