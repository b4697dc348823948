"""The `contact-ops` queue and its siblings, as the Functions host sees them (base64 JSON messages).

    contact-ops          ops waiting for the worker (the queue trigger)
    contact-ops-poison   where the host moves an op after maxDequeueCount failed deliveries
    contact-ops-failed   where the poison trigger keeps those ops for `python -m sync replay-poison` (no trigger,
                         no expiry: invariant 2)
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from azure.core.exceptions import ResourceExistsError
from azure.storage.queue import QueueClient, QueueMessage

from sync.contract.ops import ContactOp

POISON_SUFFIX = "-poison"
FAILED_SUFFIX = "-failed"
NEVER_EXPIRES = -1  # Queue Storage time-to-live for "never" (service version 2017-07-29 and later)


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

    def send_all(self, ops: Iterable[ContactOp]) -> int:
        sent = 0
        for op in ops:
            self.send(op)
            sent += 1
        return sent

    def receive(self, *, max_messages: int = 32, visibility_timeout: int = 60) -> list[QueueMessage]:
        pages = self.client.receive_messages(messages_per_page=max_messages, visibility_timeout=visibility_timeout)
        return list(next(pages.by_page(), []))

    def delete(self, message: QueueMessage) -> None:
        self.client.delete_message(message)

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
