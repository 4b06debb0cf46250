"""What a link puts on the wire for a charging profile: the frame a station reads, whether
its payload was encoded with the frame or before (a DR wave encodes a profile once for all
the stations it goes to)."""

import asyncio
import gc
import json
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st
from ocpp.messages import MessageType, get_validator

from bench.link_cost import QuietListener
from bridge.ocpp.capabilities import Capabilities
from bridge.ocpp.framing import EncodedPayload, call_frame, result_frame
from bridge.ocpp.link import CallFailed
from bridge.ocpp.profiles import TX, BuiltProfile, build_profile, station_max_profile
from bridge.ocpp.v16 import StationLink16
from policies.fleet import StationInfo, Step

NOW = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)


class Answering:
    """A station's websocket that keeps each frame sent and accepts each call."""

    def __init__(self) -> None:
        self.link: StationLink16 | None = None
        self.sent: list[str] = []

    async def send(self, message: str) -> None:
        self.sent.append(message)
        unique_id = json.loads(message)[1]
        assert self.link is not None
        asyncio.get_running_loop().call_soon(
            asyncio.ensure_future,
            self.link.route_message(json.dumps([3, unique_id, {"status": "Accepted"}])))


@given(st.dictionaries(st.text(max_size=8), st.one_of(st.integers(), st.text(max_size=8),
                                                      st.floats(allow_nan=False)), max_size=4),
       st.text(min_size=1, max_size=12), st.text(min_size=1, max_size=20))
def test_an_encoded_payload_makes_the_frame_the_payload_would(payload, unique_id, action):
    encoded = EncodedPayload(json.dumps(payload))
    assert json.loads(call_frame(unique_id, action, encoded)) \
        == json.loads(call_frame(unique_id, action, payload)) \
        == [2, unique_id, action, payload]


def _profiles() -> list[BuiltProfile]:
    schedule = (Step(NOW, 11_040.0, "plan"), Step(NOW.replace(hour=13), 5_520.0, "event"))
    caps = Capabilities(rate_units=frozenset({"A"}), known=True)
    info = StationInfo("CP1", 3, 230.0, 32.0)
    return [station_max_profile(schedule, info, caps, NOW, 6),
            build_profile(schedule, info, caps, NOW, 6, purpose=TX, connector_id=2,
                          transaction_id=77)]


@pytest.mark.parametrize("built", _profiles(), ids=lambda b: b.purpose)
async def test_a_16_link_sends_a_profile_as_a_valid_set_charging_profile(built):
    connection = Answering()
    link = StationLink16("CP1", connection, QuietListener(), 5.0)
    connection.link = link
    for _ in range(2):  # the second time from the text kept with the profile
        assert await link.set_profile(built) == "Accepted"
    first, second = (json.loads(frame, parse_float=Decimal) for frame in connection.sent)
    assert first[0] == 2 and first[2] == "SetChargingProfile" and first[1] != second[1]
    assert first[3] == second[3] == json.loads(json.dumps(
        {"connectorId": built.connector_id, "csChargingProfiles": built.payload}),
        parse_float=Decimal)
    get_validator(MessageType.Call, "SetChargingProfile", "1.6",
                  parse_float=Decimal).validate(first[3])


class AnswerLater:
    """A station's websocket that keeps each frame sent; the test answers."""

    def __init__(self) -> None:
        self.sent: list[str] = []

    async def send(self, message: str) -> None:
        self.sent.append(message)


async def test_an_answer_that_comes_while_the_caller_waits_before_it_is_kept_for_it():
    connection = AnswerLater()
    link = StationLink16("CP1", connection, QuietListener(), 0.05)
    released = asyncio.Event()
    seen_when_held: list[int] = []

    async def hold() -> None:
        seen_when_held.append(len(connection.sent))
        await released.wait()

    call = asyncio.create_task(link.set_profile(_profiles()[0], hold))
    while not seen_when_held:
        await asyncio.sleep(0)
    assert seen_when_held == [1]  # held once its frame was sent
    unique_id = json.loads(connection.sent[0])[1]
    link.route_now(json.dumps([3, unique_id, {"status": "Accepted"}]))
    await asyncio.sleep(0.1)  # longer than the call's timeout: it starts after the hold
    assert not call.done()
    released.set()
    assert await call == "Accepted"


async def test_a_call_that_ends_while_its_caller_waits_before_the_answer_fails_after_it():
    connection = AnswerLater()
    link = StationLink16("CP1", connection, QuietListener(), 5.0)
    released = asyncio.Event()
    call = asyncio.create_task(link._request("SetChargingProfile", {}, True, released.wait))
    while not connection.sent:
        await asyncio.sleep(0)
    link._end_call_under_way(ConnectionError("the socket closed"))
    released.set()
    with pytest.raises(CallFailed, match="socket closed"):
        await call


async def test_a_caller_cancelled_before_the_answer_leaves_no_unread_failure(caplog):
    connection = AnswerLater()
    link = StationLink16("CP1", connection, QuietListener(), 5.0)

    async def cancelled_while_held() -> None:
        call = asyncio.create_task(link._request("SetChargingProfile", {}, True,
                                                 asyncio.Event().wait))
        while not connection.sent:
            await asyncio.sleep(0)
        link._end_call_under_way(ConnectionError("the socket closed"))
        call.cancel()
        await asyncio.wait([call])
        assert call.cancelled()

    await cancelled_while_held()
    gc.collect()  # the call's future goes: unread, its failure would be logged now
    assert "never retrieved" not in caplog.text
    assert link._pending is None


@given(st.text(max_size=40), st.sampled_from([{}, {"status": "Accepted"}, {"a": [1, "é"]}]))
def test_a_result_frame_is_what_the_encoder_writes(unique_id: str, reply: dict):
    """The empty answer written without the encoder reads the same as the encoder's, for
    any id (quotes, backslashes, control characters and non-ASCII ones included)."""
    text = result_frame(unique_id, reply)
    assert text == json.dumps([3, unique_id, reply], separators=(",", ":"))
    assert json.loads(text) == [3, unique_id, reply]
