"""The queues, as the Functions host sees them (base64 JSON messages).

    contact-ops          ops waiting for the worker (the queue trigger), one per message or packed in batches
    contact-ops-poison   where the host moves an op after maxDequeueCount failed deliveries
    contact-ops-failed   where the poison trigger keeps those ops for `python -m sync replay-poison` (no trigger,
                         no expiry: invariant 2)
    contact-ops-poison-poison  where the host would move a message the poison trigger failed on every time; the
                         trigger never raises on its last delivery, so only an older version of ctcs left any here
                         (replay-poison reads it too)
    pair-runs            requests to plan one pair (the planner's queue trigger)
    pair-runs-poison     requests the planner failed on every delivery (no trigger: status counts them)
    pair-runs-poison-poison  never filled (no trigger reads pair-runs-poison); counted so status shows every queue

The `-poison` and `-poison-poison` queues are created by the Functions host on first use; ctcs never creates the
ones without a trigger, and counts a missing queue as empty.

Sending is the planner's hot path: `send_all` sends a plan's messages several at once (sync.state.parallel) over the
client's pooled connections (the SDK's QueueClient is thread-safe), and packs large plans into batch messages
(`sync.contract.ops.encode_batches`): a queue takes one message per request, a message holds up to 64 KiB.
    contact-ops-parked   ops of pairs quarantined for their credentials, untried; moved back when the pair's
                         connection test passes (no trigger)
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

from azure.core.exceptions import HttpResponseError, ResourceExistsError, ResourceNotFoundError
from azure.storage.queue import QueueClient, QueueMessage

from sync.contract.ops import ContactOp, encode_batches, pair_of_message
from sync.contract.pair_runs import PairRunRequest, decode_run_request
from sync.errors import BadRunRequest
from sync.state.parallel import run_all

POISON_SUFFIX = "-poison"
FAILED_SUFFIX = "-failed"
PARKED_SUFFIX = "-parked"
NEVER_EXPIRES = -1  # Queue Storage time-to-live for "never" (service version 2017-07-29 and later)
PACK_FROM = 50  # a send of this many ops or more goes out in batch messages; fewer go one op per message


@dataclass
class OpQueue:
    client: QueueClient

    @property
    def name(self) -> str:
        return str(self.client.queue_name)

    def ensure(self) -> OpQueue:
        with contextlib.suppress(ResourceExistsError):
            self.client.create_queue()
        return self

    def send(self, op: ContactOp, *, delay_seconds: int = 0) -> None:
        self.send_text(op.to_json(), delay_seconds=delay_seconds)

    def send_text(self, body: str, *, delay_seconds: int = 0) -> None:
        """Send a message as it is, without expiry: a queue's default time-to-live is 7 days, and an op must not
        vanish because the Function App was stopped for a week (invariant 2)."""
        self.client.send_message(body, visibility_timeout=delay_seconds or None, time_to_live=NEVER_EXPIRES)

    def send_all(self, ops: Iterable[ContactOp], *, pack_from: int = PACK_FROM) -> int:
        """Send every op, in parallel; `pack_from` or more ops go in batch messages. Returns how many ops were sent.
        When any message fails, every other one has still been attempted, and the first error is raised: the caller
        re-plans and re-sends the lot (duplicates carry the same version, and the worker applies an op once)."""
        listed = list(ops)
        if not listed:
            return 0
        bodies = list(encode_batches(listed)) if len(listed) >= pack_from else [op.to_json() for op in listed]
        self.send_texts(bodies)
        return len(listed)

    def send_texts(self, bodies: Sequence[str]) -> None:
        """Send messages as they are, several at once (also the worker splitting a batch into single ops)."""
        run_all([functools.partial(self.client.send_message, body, time_to_live=NEVER_EXPIRES) for body in bodies])

    def receive(self, *, max_messages: int = 32, visibility_timeout: int = 60) -> list[QueueMessage]:
        pages = self.client.receive_messages(messages_per_page=max_messages, visibility_timeout=visibility_timeout)
        return list(next(pages.by_page(), []))

    def delete(self, message: QueueMessage, *, missing_ok: bool = False) -> None:
        """Delete a received message. `missing_ok`: its lease ran out meanwhile (a slow, loaded machine) and it may
        have been received again: that copy is applied or dropped as stale by version, so this is not an error."""
        try:
            self.client.delete_message(message)
        except ResourceNotFoundError:
            if not missing_ok:
                raise

    def defer(self, message: QueueMessage, seconds: int) -> None:
        """Hide a received message for `seconds` more; it comes back with the same body (and dequeue count)."""
        self.client.update_message(message, visibility_timeout=seconds)

    def renew(self, message: QueueMessage, seconds: int) -> bool:
        """Keep a received message hidden `seconds` more while it is being applied (a lease that a process renews
        while it lives, so that what a killed process held comes back within `seconds`, not after a long timeout).
        The handle takes the new pop receipt. False when the lease was lost already (another consumer may hold it)."""
        try:
            updated = self.client.update_message(message, visibility_timeout=seconds)
        except (ResourceNotFoundError, HttpResponseError):
            return False
        message.pop_receipt, message.next_visible_on = updated.pop_receipt, updated.next_visible_on
        return True

    def make_visible(self, message: QueueMessage) -> None:
        """Give a received message back at once (someone else's to handle)."""
        self.client.update_message(message, visibility_timeout=0)

    def peek_all(self) -> Iterator[QueueMessage]:
        yield from self.client.peek_messages(max_messages=32)

    def approximate_count(self) -> int:
        return queue_depth(self.client)


@dataclass
class PairRunQueue:
    """The `pair-runs` queue: requests to plan one pair."""

    client: QueueClient

    @property
    def name(self) -> str:
        return str(self.client.queue_name)

    def ensure(self) -> PairRunQueue:
        with contextlib.suppress(ResourceExistsError):
            self.client.create_queue()
        return self

    def send(self, request: PairRunRequest, *, delay_seconds: int = 0) -> None:
        self.client.send_message(request.to_json(), visibility_timeout=delay_seconds or None, time_to_live=NEVER_EXPIRES)

    def approximate_count(self) -> int:
        return queue_depth(self.client)


def queue_depth(client: QueueClient) -> int:
    """Messages in a queue, approximate as Storage counts them; 0 for a queue that does not exist (the Functions
    host creates a `-poison` queue only when it first moves a message there)."""
    try:
        return int(client.get_queue_properties().approximate_message_count or 0)
    except ResourceNotFoundError:
        return 0


def move_ops(source: OpQueue, destination: OpQueue, *, wanted: Callable[[str | None], bool], limit: int = 10_000) -> int:
    """Move the messages whose pair is `wanted` from one queue to another, byte for byte (sent first, then deleted:
    a crash in between leaves a copy in both, which is harmless, never none). Other messages are hidden while
    looked at and given back after. A source queue that does not exist holds nothing."""
    moved = 0
    others = []
    while moved < limit:
        try:
            messages = source.receive(max_messages=32, visibility_timeout=60)
        except ResourceNotFoundError:  # a queue the host never created (a -poison-poison): nothing to move
            break
        if not messages:
            break
        for message in messages:
            if not wanted(pair_of_message(message.content)):
                others.append(message)
                continue
            destination.send_text(message.content)
            source.delete(message)
            moved += 1
    for message in others:
        source.make_visible(message)
    return moved


PEEK_LIMIT = 32  # the most messages Queue Storage shows in one peek


@dataclass(frozen=True)
class Waiting:
    """Messages of one pair seen at the front of a queue (a peek: nothing is received, hidden or counted as a
    delivery). `complete` is False when the queue held more than one peek shows."""

    messages: int
    complete: bool


def waiting_ops(queue: OpQueue, pair_id: str) -> Waiting:
    """Messages of the pair's ops (a batch counts once) among the first `PEEK_LIMIT` of an ops queue."""
    peeked = list(queue.client.peek_messages(max_messages=PEEK_LIMIT))
    mine = sum(1 for message in peeked if pair_of_message(message.content) == pair_id)
    return Waiting(mine, len(peeked) < PEEK_LIMIT)


def waiting_requests(queue: PairRunQueue, pair_id: str) -> Waiting:
    """The pair's planning requests among the first `PEEK_LIMIT` messages of `pair-runs`."""
    peeked = list(queue.client.peek_messages(max_messages=PEEK_LIMIT))
    mine = 0
    for message in peeked:
        try:
            mine += decode_run_request(message.content).pair_id == pair_id
        except BadRunRequest:
            continue
    return Waiting(mine, len(peeked) < PEEK_LIMIT)
