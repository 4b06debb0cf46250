"""The bridge <-> edge worker message codec (pure)."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bridge.ocpp.relay import HEADER, MAX_BODY_BYTES, Decoder, Kind, RelayError, encode, encode_json

messages = st.lists(st.tuples(st.sampled_from(list(Kind)), st.integers(0, 2**32 - 1),
                              st.binary(max_size=300)), max_size=20)


@given(messages, st.lists(st.integers(0, 10_000), max_size=30))
def test_messages_come_back_whole_and_in_order_from_any_split(
        sent: list[tuple[Kind, int, bytes]], cuts: list[int]):
    stream = b"".join(encode(kind, connection, body) for kind, connection, body in sent)
    points = sorted({min(c, len(stream)) for c in cuts} | {0, len(stream)})
    decoder = Decoder()
    got = []
    for start, stop in zip(points, points[1:], strict=False):
        got += decoder.feed(stream[start:stop])
    assert [(m.kind, m.connection, m.body) for m in got] == sent


def test_json_bodies_and_text_frames():
    decoder = Decoder()
    hello, frame = decoder.feed(
        encode_json(Kind.HELLO, 7, {"path": "/CP 1", "authorization": None})
        + encode(Kind.FRAME, 7, '[2,"1","Heartbeat",{}] é'.encode()))
    assert hello.json() == {"path": "/CP 1", "authorization": None} and hello.connection == 7
    assert frame.text() == '[2,"1","Heartbeat",{}] é'


def test_a_stream_out_of_step_is_refused_not_buffered():
    with pytest.raises(RelayError, match="unknown message kind"):
        Decoder().feed(HEADER.pack(5, 99, 1))
    with pytest.raises(RelayError, match="bytes"):
        Decoder().feed(struct.pack("!IBI", MAX_BODY_BYTES + 1000, Kind.FRAME, 1))
    with pytest.raises(RelayError, match="bytes"):
        Decoder().feed(struct.pack("!IBI", 2, Kind.FRAME, 1))
