"""Message ids on a shared websocket leg: forwarded and own CALLs never collide."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from bridge.upstream.message_ids import (
    MAX_ID_LENGTH,
    Forwarded,
    LegIds,
    Own,
    Unknown,
    call_with_id,
    reply_with_id,
    with_id,
)

# What a CSMS may use as ids: anything, including ids that look like ours, and repeats.
foreign_ids = st.one_of(st.sampled_from(["1", "d1", "f1", "f2", "d2"]),
                        st.uuids().map(str), st.text(min_size=1, max_size=36))


def test_a_forwarded_answer_goes_back_under_its_sender_id():
    ids = LegIds()
    wire = ids.forward("upstream-uuid-1", tag="SetChargingProfile")
    own = ids.own(tag="GetConfiguration")
    assert wire != own
    assert ids.resolve(own) == Own("GetConfiguration")
    assert ids.resolve(wire) == Forwarded("upstream-uuid-1", "SetChargingProfile")
    assert ids.resolve(wire) == Unknown()  # answered once; a repeat is a stray
    assert len(ids) == 0


def test_an_upstream_id_equal_to_one_of_ours_is_still_told_apart():
    ids = LegIds()
    own = ids.own()
    wire = ids.forward(own)  # the CSMS happens to use the very id drbridge used
    assert wire != own
    assert ids.resolve(own) == Own(None)
    assert ids.resolve(wire) == Forwarded(own, None)


def test_a_timed_out_call_answer_is_dropped():
    ids = LegIds()
    wire = ids.own()
    ids.forget(wire)
    assert ids.resolve(wire) == Unknown()
    assert ids.resolve(12) == Unknown()  # not even a string


def test_a_closed_leg_gives_up_every_pending_call_and_answers_none_later():
    ids = LegIds()
    forwarded, own = ids.forward("op-1", tag="Reset"), ids.own(tag="GetConfiguration")
    assert ids.drop_pending() == [Forwarded("op-1", "Reset"), Own("GetConfiguration")]
    assert len(ids) == 0
    assert ids.resolve(forwarded) == Unknown() and ids.resolve(own) == Unknown()


def test_bounded():
    ids = LegIds(max_pending=3)
    wires = [ids.forward(str(i)) for i in range(5)]
    assert len(ids) == 3 and ids.evicted == 2
    assert ids.resolve(wires[0]) == Unknown()
    assert ids.resolve(wires[4]) == Forwarded("4", None)


@given(st.lists(st.tuples(st.booleans(), foreign_ids), max_size=60), st.randoms())
def test_every_answer_maps_to_its_own_call_whatever_the_ids(calls, rnd):
    ids = LegIds(max_pending=1000)
    issued: dict[str, tuple[bool, str]] = {}
    for is_forward, origin in calls:
        wire = ids.forward(origin, tag=origin) if is_forward else ids.own(tag=origin)
        assert wire not in issued, "a wire id issued twice"
        assert len(wire) <= MAX_ID_LENGTH
        issued[wire] = (is_forward, origin)
    for _, origin in calls:  # a foreign id is never taken for a pending call of another
        if origin not in issued:
            assert isinstance(ids.resolve(origin), Unknown)
    answers = list(issued)
    rnd.shuffle(answers)
    for wire in answers:
        is_forward, origin = issued[wire]
        expected = Forwarded(origin, origin) if is_forward else Own(origin)
        assert ids.resolve(wire) == expected
    assert len(ids) == 0


def test_reframing_keeps_everything_but_the_id():
    frame = [2, "csms-7", "SetChargingProfile", {"connectorId": 0, "note": "é"}]
    assert json.loads(with_id(frame, "f1")) == [2, "f1", "SetChargingProfile",
                                                 {"connectorId": 0, "note": "é"}]
    error = [4, "f1", "NotSupported", "no", {}]
    assert json.loads(with_id(error, "csms-7")) == [4, "csms-7", "NotSupported", "no", {}]


def test_a_call_keeps_its_text_under_another_id():
    raw = '[2, "abc-1" ,"MeterValues",{"connectorId":1,"meterValue":[]}]'
    assert call_with_id(raw, "abc-1", "f7") == \
        '[2,"f7" ,"MeterValues",{"connectorId":1,"meterValue":[]}]'
    assert json.loads(call_with_id(raw, "abc-1", "f7") or "") == \
        [2, "f7", "MeterValues", {"connectorId": 1, "meterValue": []}]
    # an id with escapes in its text, or another id, is left to re-encoding
    assert call_with_id('[2,"a\\u0062",' + '"Heartbeat",{}]', "ab", "f8") is None
    assert call_with_id('[2,"ab",' + '"Heartbeat",{}]', "a", "f8") is None
    assert call_with_id('[3,"ab",{}]', "ab", "f8") is None


def test_an_answer_keeps_its_text_under_the_senders_id():
    raw = '[3, "f12",{"idTagInfo":{"status":"Accepted","note":"\\u00e9"}}]'
    assert reply_with_id(raw, "f12", "st-1") == \
        '[3,"st-1",{"idTagInfo":{"status":"Accepted","note":"\\u00e9"}}]'
    error = '[4,"f12","NotSupported","no",{}]'
    assert json.loads(reply_with_id(error, "f12", "st-1") or "") == \
        [4, "st-1", "NotSupported", "no", {}]
    # the station's id is written as JSON, whatever it holds
    assert json.loads(reply_with_id('[3,"f12",{}]', "f12", 'a"b\\') or "") == \
        [3, 'a"b\\', {}]
    # another id, an id with escapes in its text, or no answer at all: re-encoded instead
    assert reply_with_id('[3,"f1",{}]', "f12", "st-1") is None
    assert reply_with_id('[3,"f123",{}]', "f12", "st-1") is None
    assert reply_with_id('[3,"f\\u0031",{}]', "f1", "st-1") is None
    assert reply_with_id('[2,"f12","Heartbeat",{}]', "f12", "st-1") is None


@given(st.text(max_size=36), st.dictionaries(st.text(max_size=5), st.text(max_size=5)))
def test_an_answer_under_the_senders_id_reads_as_the_reencoded_one(origin, payload):
    raw = json.dumps([3, "f9", payload])
    swapped = reply_with_id(raw, "f9", origin)
    assert swapped is not None
    assert json.loads(swapped) == json.loads(with_id([3, "f9", payload], origin))
