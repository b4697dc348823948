"""Contact operations: what the planner emits and a queue message carries (JSON, schema 1).

Fields added within schema 1 are optional and left out at their default, so older messages still decode:
`partial` (an update that carries only some parameters, merged into the applied contact: manager links) and
`manager_id` (the source id of the user's manager as planned, recorded in the state row) and `object` ("group" for a
group's contact; absent for a user's, so users' messages are exactly what they were) and `generation` (the stored
life of the pair that planned the op, `sync.state.pairs`; absent for a pair stored before generations existed, so a
message without it belongs to such a pair, and the worker discards it for a pair added since).

A message carries one op, or a batch of one pair's ops, `{"schema": 1, "batch": [op, op, ...]}`: a planner that
queues hundreds of ops at once packs them, because a queue takes messages one request at a time (Azurite here serves
a few hundred requests a second, Azure Storage 2,000 messages a second per queue) while a message holds 64 KiB. The
worker never applies a batch: it first splits it into single-op messages on the same queue (`sync.app.worker.batches`),
so every op is retried, deferred and poisoned on its own, exactly as if it had been sent alone.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Any

from sync.contract.vocabulary import ObjectKind
from sync.errors import BadOpMessage

SCHEMA_VERSION = 1
MAX_MESSAGE_CHARS = 48_000  # base64 of this stays under the queue's 64 KiB message limit
MAX_BATCH_BYTES = 45_000  # UTF-8 bytes of a batch message: its base64 (60,000 characters) fits the 64 KiB limit
MAX_BATCH_OPS = 100
BATCH_HEAD = f'{{"schema":{SCHEMA_VERSION},"batch":'  # how every batch message begins
_ID = re.compile(r"^[A-Za-z0-9._-]{1,128}$")
MAX_VERSION = 2**63 - 1  # versions are kept in Int64 table properties: a larger one could never be recorded
PARTIAL_PARAMETERS = frozenset({"Manager"})  # what a partial update may carry: never the address, name or anchor
_FIELDS = {"schema", "pair_id", "run_id", "kind", "source_id", "version", "reason", "contact", "hash", "partial",
           "manager_id", "object", "generation"}


class OpKind(StrEnum):
    CREATE = "create"
    UPDATE = "update"
    DELETE = "delete"
    HIDE = "hide"  # staged delete: hide from the address lists, keep the contact
    RESTORE = "restore"  # a hidden contact's user is back: show it again, with the current values

    @property
    def carries_contact(self) -> bool:
        return self not in (OpKind.DELETE, OpKind.HIDE)

    @property
    def removes(self) -> bool:
        """Takes a person out of the address list: what the safety gate counts."""
        return self in (OpKind.DELETE, OpKind.HIDE)


# Removals first (a delete frees an address a create may need), then updates, then creates.
KIND_ORDER = {OpKind.DELETE: 0, OpKind.HIDE: 0, OpKind.UPDATE: 1, OpKind.RESTORE: 1, OpKind.CREATE: 2}


@dataclass(frozen=True)
class ContactOp:
    pair_id: str
    run_id: str
    kind: OpKind
    source_id: str
    version: int
    reason: str
    contact: Mapping[str, Any] | None = None  # full desired contact for create/update (partial: only some parameters)
    hash: str = ""  # of the full contact; "" for a partial update (the worker hashes the merged contact)
    partial: bool = False  # an update of PARTIAL_PARAMETERS only, merged into the contact as applied
    manager_id: str = ""  # the source id of the user's manager, as planned ("" = none)
    object_kind: ObjectKind = ObjectKind.USER  # a user's or a group's contact (message field "object", left out for users)
    generation: str = ""  # the pair's generation when planned ("" = a pair stored before generations; left out then)

    def to_json(self) -> str:
        body = {"schema": SCHEMA_VERSION, **asdict(self), "kind": self.kind.value}
        body.pop("object_kind")
        if self.object_kind is not ObjectKind.USER:
            body["object"] = self.object_kind.value
        for name, default in (("contact", None), ("partial", False), ("manager_id", ""), ("generation", "")):
            if body[name] == default:
                body.pop(name)
        return json.dumps(body, ensure_ascii=False, separators=(",", ":"))

    @property
    def key(self) -> str:
        return f"{self.pair_id}/{self.source_id}@{self.version}"


def _field(body: Mapping[str, Any], name: str, kind: type) -> Any:
    value = body.get(name)
    if not isinstance(value, kind) or isinstance(value, bool) is not (kind is bool):
        raise BadOpMessage(f"contact operation field {name!r} must be a {kind.__name__}, got {type(value).__name__}")
    return value


def decode_op(text: str | bytes) -> ContactOp:
    """A queue message back into an op; `BadOpMessage` names what is wrong (never the whole message)."""
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError:
            raise BadOpMessage("contact operation is not UTF-8 text") from None
    if len(text) > MAX_MESSAGE_CHARS:
        raise BadOpMessage(f"contact operation is {len(text)} characters, more than {MAX_MESSAGE_CHARS}")
    try:
        body = json.loads(text)
    except json.JSONDecodeError as error:
        raise BadOpMessage(f"contact operation is not JSON ({error.msg} at character {error.pos})") from None
    except RecursionError:  # json gives up on deep nesting with RecursionError, not JSONDecodeError
        raise BadOpMessage("contact operation nests JSON too deeply") from None
    if not isinstance(body, dict):
        raise BadOpMessage("contact operation must be a JSON object")
    if body.get("schema") != SCHEMA_VERSION:
        raise BadOpMessage(f"contact operation schema {body.get('schema')!r} is not supported (expected {SCHEMA_VERSION})")
    unknown = set(body) - _FIELDS
    if unknown:
        raise BadOpMessage(f"contact operation has unknown field(s): {', '.join(sorted(unknown))}")
    try:
        kind = OpKind(str(body.get("kind")))
    except ValueError:
        raise BadOpMessage(
            f"contact operation kind {body.get('kind')!r} is not one of {', '.join(kind.value for kind in OpKind)}"
        ) from None
    for name in ("pair_id", "source_id"):
        if not _ID.match(_field(body, name, str)):
            raise BadOpMessage(f"contact operation field {name!r} has characters or a length that are not allowed")
    version = _field(body, "version", int)
    if not 0 < version <= MAX_VERSION:
        raise BadOpMessage(f"contact operation field 'version' must be from 1 to {MAX_VERSION} (a table's Int64)")
    contact = body.get("contact")
    partial = _field(body, "partial", bool) if "partial" in body else False
    manager_id = _field(body, "manager_id", str) if "manager_id" in body else ""
    try:
        object_kind = ObjectKind(body.get("object", ObjectKind.USER.value))
    except ValueError:
        raise BadOpMessage(f"contact operation field 'object' must be one of {', '.join(ObjectKind)}") from None
    if manager_id and not _ID.match(manager_id):
        raise BadOpMessage("contact operation field 'manager_id' has characters or a length that are not allowed")
    generation = _field(body, "generation", str) if "generation" in body else ""
    if generation and not _ID.match(generation):
        raise BadOpMessage("contact operation field 'generation' has characters or a length that are not allowed")
    if not kind.carries_contact:
        if contact is not None:
            raise BadOpMessage(f"a {kind.value} operation carries no contact")
    elif not isinstance(contact, dict) or not contact:
        raise BadOpMessage(f"a {kind.value} operation needs the full desired contact as an object")
    if partial:
        if kind is not OpKind.UPDATE:
            raise BadOpMessage(f"a {kind.value} operation cannot be partial (only an update can)")
        assert isinstance(contact, dict)
        if not set(contact) <= PARTIAL_PARAMETERS:
            extra = ", ".join(sorted(set(contact) - PARTIAL_PARAMETERS))
            raise BadOpMessage(f"a partial update may only carry {', '.join(sorted(PARTIAL_PARAMETERS))}, not {extra}")
    return ContactOp(
        pair_id=body["pair_id"],
        run_id=_field(body, "run_id", str),
        kind=kind,
        source_id=body["source_id"],
        version=version,
        reason=_field(body, "reason", str),
        contact=contact,
        hash=str(body.get("hash") or ""),
        partial=partial,
        manager_id=manager_id,
        object_kind=object_kind,
        generation=generation,
    )


def encode_batches(ops: Sequence[ContactOp], *, max_bytes: int = MAX_BATCH_BYTES, max_ops: int = MAX_BATCH_OPS) -> Iterator[str]:
    """The ops as batch messages of at most `max_ops` ops and `max_bytes` UTF-8 bytes each, in order. An op too big
    to share a message is a batch of its own (it still fits: an op is at most MAX_MESSAGE_CHARS)."""
    head, tail = BATCH_HEAD + "[", "]}"
    overhead = len(head) + len(tail)
    parts: list[str] = []
    size = overhead
    for op in ops:
        text = op.to_json()
        length = len(text.encode("utf-8")) + 1  # the comma
        if parts and (size + length > max_bytes or len(parts) >= max_ops):
            yield head + ",".join(parts) + tail
            parts, size = [], overhead
        parts.append(text)
        size += length
    if parts:
        yield head + ",".join(parts) + tail


def _json_object(text: str | bytes, what: str) -> dict[str, Any]:
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError:
            raise BadOpMessage(f"{what} is not UTF-8 text") from None
    try:
        body = json.loads(text)
    except json.JSONDecodeError as error:
        raise BadOpMessage(f"{what} is not JSON ({error.msg} at character {error.pos})") from None
    except RecursionError:
        raise BadOpMessage(f"{what} nests JSON too deeply") from None
    if not isinstance(body, dict):
        raise BadOpMessage(f"{what} must be a JSON object")
    return body


def is_batch(text: str | bytes) -> bool:
    """Whether a message is a batch of ops (cheap: looks at the start only; `decode_batch` checks the rest)."""
    start = text[:40] if isinstance(text, str) else text[:40].decode("utf-8", "replace")
    return start.replace(" ", "").startswith(BATCH_HEAD)


def decode_batch(text: str | bytes) -> list[ContactOp]:
    """A batch message back into its ops, each checked as `decode_op` checks a single one; `BadOpMessage` names
    what is wrong. All ops of a batch belong to one pair."""
    if len(text) > MAX_BATCH_BYTES * 2:
        raise BadOpMessage(f"batch of operations is {len(text)} characters, more than a queue message holds")
    body = _json_object(text, "batch of operations")
    if body.get("schema") != SCHEMA_VERSION or set(body) != {"schema", "batch"} or not isinstance(body["batch"], list):
        raise BadOpMessage(f"a batch of operations must be {{\"schema\": {SCHEMA_VERSION}, \"batch\": [...]}}")
    if not body["batch"]:
        raise BadOpMessage("a batch of operations holds no operation")
    ops = [decode_op(json.dumps(item, ensure_ascii=False)) for item in body["batch"]]
    if len({op.pair_id for op in ops}) != 1:
        raise BadOpMessage("a batch of operations mixes pairs")
    return ops


@dataclass(frozen=True)
class OpMessage:
    """One message of the ops queue, decoded once where it enters ctcs (`sync.app.worker.delivery.deliver`,
    `keep_poisoned`, the CLI's drain): one op, a batch of ops, or why it is neither. Nothing past the entry point
    decodes it again: everything after it reads `op` or `batch`.

    `text` is the message exactly as it came, kept only to send it on unchanged (deferred, parked, poisoned, kept in
    `-failed`); nothing reads an op out of it."""

    text: str
    op: ContactOp | None = None
    batch: tuple[ContactOp, ...] = ()  # a valid batch: its ops, in order (never empty)
    error: BadOpMessage | None = None  # why it is neither one op nor a valid batch
    is_batch: bool = False  # it begins as a batch of ops (valid or not)

    @property
    def pair_id(self) -> str | None:
        """The pair of its op or batch; None when it is neither."""
        if self.op is not None:
            return self.op.pair_id
        return self.batch[0].pair_id if self.batch else None

    def require_op(self) -> ContactOp:
        """The op; `BadOpMessage` (why it is not one) when the message is not a single op."""
        if self.op is not None:
            return self.op
        raise self.error or BadOpMessage(f"the message is a batch of {len(self.batch)} operations, not one")


def decode_message(body: str | bytes) -> OpMessage:
    """An ops-queue message, as it came, into an `OpMessage`: the body becomes text once and is decoded once, as a
    batch when it begins as one, else as a single op. Bytes that are not UTF-8 are kept with replacement characters:
    a batch is read from that text, a single op is refused as not UTF-8."""
    undecodable = False
    if isinstance(body, bytes):
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            text, undecodable = body.decode("utf-8", "replace"), True
    else:
        text = body
    if is_batch(text):
        try:
            return OpMessage(text, batch=tuple(decode_batch(text)), is_batch=True)
        except BadOpMessage as bad:
            return OpMessage(text, error=bad, is_batch=True)
    if undecodable:
        return OpMessage(text, error=BadOpMessage("contact operation is not UTF-8 text"))
    try:
        return OpMessage(text, op=decode_op(text))
    except BadOpMessage as bad:
        return OpMessage(text, error=bad)


def pair_of_message(text: str | bytes) -> str | None:
    """The pair an ops-queue message belongs to (a single op or a batch); None when it is neither."""
    try:
        return decode_batch(text)[0].pair_id if is_batch(text) else decode_op(text).pair_id
    except BadOpMessage:
        return None
