"""The `contact-ops` queue and its siblings, as the Functions host sees them (base64 JSON messages).

    contact-ops          ops waiting for the worker (the queue trigger)
    contact-ops-poison   where the host moves an op after maxDequeueCount failed deliveries
    contact-ops-failed   where the poison trigger keeps those ops for `python -m sync replay-poison` (no trigger)
    contact-ops-parked   ops of pairs quarantined for their credentials, untried; moved back when the pair's
                         connection test passes (no trigger)
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError
from azure.storage.queue import QueueClient, QueueMessage

from sync.contract.ops import ContactOp, decode_op
from sync.errors import BadOpMessage

POISON_SUFFIX = "-poison"
FAILED_SUFFIX = "-failed"
PARKED_SUFFIX = "-parked"


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
        self.client.send_message(op.to_json(), visibility_timeout=delay_seconds or None)

    def send_text(self, body: str, *, delay_seconds: int = 0, keep: bool = False) -> None:
        """Send a message as it is; `keep` sends it without expiry (the holding queue keeps ops until replayed)."""
        self.client.send_message(body, visibility_timeout=delay_seconds or None, time_to_live=-1 if keep else None)

    def send_all(self, ops: Iterable[ContactOp]) -> int:
        sent = 0
        for op in ops:
            self.send(op)
            sent += 1
        return sent

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

    def make_visible(self, message: QueueMessage) -> None:
        """Give a received message back at once (someone else's to handle)."""
        self.client.update_message(message, visibility_timeout=0)

    def peek_all(self) -> Iterator[QueueMessage]:
        yield from self.client.peek_messages(max_messages=32)

    def approximate_count(self) -> int:
        return int(self.client.get_queue_properties().approximate_message_count or 0)


def pair_of(body: str) -> str | None:
    """The pair an op message belongs to; None for a message that is not an op."""
    try:
        return decode_op(body).pair_id
    except BadOpMessage:
        return None


def move_ops(source: OpQueue, destination: OpQueue, *, wanted: Callable[[str | None], bool], limit: int = 10_000,
             keep: bool = False) -> int:
    """Move the messages whose pair is `wanted` from one queue to another, byte for byte (sent first, then deleted:
    a crash in between leaves a copy in both, which is harmless, never none). Other messages are hidden while
    looked at and given back after. `keep` sends without expiry (holding queues)."""
    moved = 0
    others = []
    while moved < limit:
        messages = source.receive(max_messages=32, visibility_timeout=60)
        if not messages:
            break
        for message in messages:
            if not wanted(pair_of(message.content)):
                others.append(message)
                continue
            destination.send_text(message.content, keep=keep)
            source.delete(message)
            moved += 1
    for message in others:
        source.make_visible(message)
    return moved
