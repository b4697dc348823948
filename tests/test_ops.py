"""Queue messages: round trip, and every way a bad message is refused with a clear reason."""

from __future__ import annotations

import json

import pytest

from sync.contract.ops import ContactOp, OpKind, decode_batch, decode_message, decode_op, encode_batches
from sync.errors import BadOpMessage

OP = ContactOp("contoso-to-fabrikam", "run-1", OpKind.UPDATE, "0000-1", 1_732_000_000_000_000, "changed",
               {"Name": "ctcs-0000-1", "DisplayName": "Zoë \"Z\" O'Neil 山田"}, "abc")


def test_round_trip_keeps_every_field() -> None:
    assert decode_op(OP.to_json()) == OP
    assert decode_op(OP.to_json().encode()) == OP
    assert json.loads(OP.to_json())["schema"] == 1


def test_delete_carries_no_contact() -> None:
    op = ContactOp("p-1", "r", OpKind.DELETE, "u1", 5, "removed:deleted")
    assert "contact" not in json.loads(op.to_json())
    assert decode_op(op.to_json()) == op


def body(**changes: object) -> str:
    data = json.loads(OP.to_json())
    data.update(changes)
    return json.dumps({k: v for k, v in data.items() if v is not ...})


@pytest.mark.parametrize(
    ("message", "complaint"),
    [
        ("not json", "not JSON"),
        (b"\xff\xfe", "not UTF-8"),
        ("[1]", "JSON object"),
        (body(schema=2), "schema 2 is not supported"),
        (body(schema=...), "schema None"),
        (body(kind="purge"), "kind 'purge'"),
        (body(version="5"), "'version' must be a int"),
        (body(version=True), "'version' must be a int"),
        (body(version=-1), "must be from 1 to"),
        (body(version=2**70), "must be from 1 to"),
        (body(pair_id=None), "'pair_id' must be a str"),
        (body(source_id="../../etc"), "'source_id' has characters"),
        (body(contact=None), "needs the full desired contact"),
        (body(kind="delete"), "a delete operation carries no contact"),
        (body(extra=1), "unknown field(s): extra"),
        ("x" * 50_000, "more than 48000"),
    ],
)
def test_bad_messages_are_refused_with_a_reason(message: str | bytes, complaint: str) -> None:
    with pytest.raises(BadOpMessage) as caught:
        decode_op(message)
    assert complaint in str(caught.value)


def test_a_message_is_decoded_once_into_its_op_and_kept_as_it_came() -> None:
    text = OP.to_json()
    message = decode_message(text.encode())
    assert message.op == OP and message.text == text and message.require_op() == OP
    assert message.pair_id == OP.pair_id and not message.is_batch and message.error is None


def test_a_batch_message_holds_its_ops_and_is_not_one_op() -> None:
    [text] = encode_batches([OP, ContactOp(OP.pair_id, "run-1", OpKind.DELETE, "u2", 5, "removed:deleted")])
    message = decode_message(text)
    assert message.is_batch and list(message.batch) == decode_batch(text) and message.op is None
    assert message.pair_id == OP.pair_id and message.text == text and message.error is None
    with pytest.raises(BadOpMessage, match="a batch of 2 operations, not one"):
        message.require_op()


@pytest.mark.parametrize(
    "text",
    ['{"schema":1,"batch":[]}', '{"schema":1,"batch":{}}', '{"schema":1,"batch":[1]}', '{"schema":1,"batch":[,'],
)
def test_a_malformed_batch_says_why_it_is_not_a_batch(text: str) -> None:
    """The worker and the drain both report why it is not a valid batch (and poison it whole)."""
    message = decode_message(text)
    assert message.is_batch and not message.batch and message.op is None and message.pair_id is None
    with pytest.raises(BadOpMessage) as as_batch:
        decode_batch(text)
    assert str(message.error) == str(as_batch.value)
    with pytest.raises(BadOpMessage) as raised:
        message.require_op()
    assert raised.value is message.error


@pytest.mark.parametrize(("body", "complaint"), [(b"\xff\xfe", "not UTF-8"), ("not json", "not JSON")])
def test_a_message_that_is_not_an_op_says_why_and_is_kept_as_text(body: str | bytes, complaint: str) -> None:
    message = decode_message(body)
    assert message.op is None and not message.is_batch and complaint in str(message.error)
    assert message.text == (body.decode("utf-8", "replace") if isinstance(body, bytes) else body)
    with pytest.raises(BadOpMessage, match=complaint):
        message.require_op()
