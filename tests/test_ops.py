"""Queue messages: round trip, and every way a bad message is refused with a clear reason."""

from __future__ import annotations

import json

import pytest

from sync.contract.ops import ContactOp, OpKind, decode_op
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
        (body(version=-1), "must be positive"),
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
