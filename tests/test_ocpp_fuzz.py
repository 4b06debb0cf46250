"""A bounded fuzz of the OCPP edge: a few hundred frames, valid requests bent in every way
and plain garbage, over one real websocket to a running bridge. The link must survive
all of them, and every CALL must get its answer."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from conftest import SiteHarness
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.sync.client import ClientConnection, connect

from bridge.sim.vtn import DemoVtn

STAMP = "2026-12-02T10:00:00Z"
VALID_16: dict[str, dict[str, Any]] = {
    "BootNotification": {"chargePointVendor": "Fuzz", "chargePointModel": "F1"},
    "Heartbeat": {},
    "StatusNotification": {"connectorId": 1, "status": "Charging", "errorCode": "NoError"},
    "Authorize": {"idTag": "TAG"},
    "StartTransaction": {"connectorId": 1, "idTag": "TAG", "meterStart": 0, "timestamp": STAMP},
    "StopTransaction": {"transactionId": 1, "meterStop": 10, "timestamp": STAMP},
    "MeterValues": {"connectorId": 1, "transactionId": 1, "meterValue": [{
        "timestamp": STAMP, "sampledValue": [
            {"value": "7000", "measurand": "Power.Active.Import", "unit": "W"},
            {"value": "1000", "measurand": "Energy.Active.Import.Register"},
            {"value": "230", "measurand": "Voltage", "phase": "L1-N"}]}]},
    "DataTransfer": {"vendorId": "fuzz", "data": "x"},
}

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=20,
)


@st.composite
def bent(draw: st.DrawFn, value: Any) -> Any:
    """A value as a quirky firmware might send it instead."""
    if isinstance(value, dict) and value:
        key = draw(st.sampled_from(sorted(value)))
        choice = draw(st.integers(0, 3))
        out = dict(value)
        if choice == 0:
            del out[key]
        elif choice == 1:
            out[draw(st.text(max_size=12))] = draw(json_values)
        else:
            out[key] = draw(bent(value[key]))
        return out
    if isinstance(value, list) and value:
        index = draw(st.integers(0, len(value) - 1))
        return [draw(bent(item)) if i == index else item for i, item in enumerate(value)]
    if isinstance(value, str):
        return draw(st.sampled_from([value.lower(), value.upper(), f" {value} ", value[:-1],
                                     "2026-12-02T10:00:00", "NaN", "1e308", "-5000", "abc"]))
    if isinstance(value, int) and not isinstance(value, bool):
        return draw(st.sampled_from([float(value), str(value), value + 0.5, -value, 10**30,
                                     float("nan"), True]))
    return draw(json_values)


@st.composite
def calls(draw: st.DrawFn) -> str:
    action = draw(st.sampled_from(sorted(VALID_16)))
    payload = VALID_16[action]
    for _ in range(draw(st.integers(0, 3))):
        payload = draw(bent(payload))
    unique_id = draw(st.text(min_size=1, max_size=8) | json_values)
    if draw(st.booleans()):
        action = draw(st.sampled_from([action, "NoSuchAction", action.lower(), ""]))
    return json.dumps([2, unique_id, action, payload])


frames = st.one_of(
    calls(),
    json_values.map(json.dumps),
    st.lists(json_values, max_size=5).map(json.dumps),
    st.text(max_size=50),
    st.binary(max_size=50),
    st.integers(1, 60_000).map(lambda depth: "[" * depth),
    # balanced nesting in a CALL: within what the decoder takes, or far beyond it (in
    # between, whether this test's own decoder takes it depends on its stack)
    (st.integers(1, 400) | st.integers(5_000, 30_000)).map(
        lambda depth: f'[2, "deep", "Heartbeat", {"[" * depth}{"]" * depth}]'),
)


def expected_answer(frame: str | bytes) -> str | None:
    """The message id the bridge must answer this frame with; None when it answers
    nothing (a reply to one of its calls)."""
    try:
        message = json.loads(frame)
    except (ValueError, TypeError, RecursionError):
        return "-1"
    if not isinstance(message, list) or not message or message[0] not in (2, 3, 4):
        return "-1"
    if message[0] == 2:
        return message[1] if len(message) > 1 and isinstance(message[1], str) else "-1"
    return None


class ThreadedSite:
    """A bridge and its VTN on an event loop of their own, so that hypothesis (which runs
    synchronous tests) can talk to them through a blocking websocket client."""

    def __init__(self, tmp_path: Path) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.vtn = DemoVtn(poll_interval=timedelta(seconds=1))
        self.run(self.vtn.start())
        self.site = SiteHarness(tmp_path, self.vtn)
        self.run(self.site.start_bridge())

    def run(self, coroutine: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(60)

    def close(self) -> None:
        try:
            self.run(self.site.close())
            self.run(self.vtn.stop())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)
            self.loop.close()


@pytest.fixture
def fuzzed(tmp_path: Path) -> Iterator[tuple[ThreadedSite, ClientConnection]]:
    harness = ThreadedSite(tmp_path)
    try:
        with connect(f"{harness.site.url}/FUZZ", subprotocols=["ocpp1.6"],  # type: ignore[list-item]
                     max_size=None) as ws:
            yield harness, ws
    finally:
        harness.close()


def answers_until_sentinel(ws: ClientConnection, sentinel: str) -> list[list[Any]]:
    """The bridge's answers up to its answer to the sentinel call (its own calls skipped)."""
    answers = []
    while True:
        message = json.loads(ws.recv(timeout=10))
        if message[0] == 2:
            continue  # the bridge asking the station something: left unanswered
        if message[1] == sentinel:
            return answers
        answers.append(message)


@settings(max_examples=300, deadline=None, database=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(frame=frames)
def test_the_link_survives_any_frame_and_every_call_is_answered(
        fuzzed: tuple[ThreadedSite, ClientConnection], frame: str | bytes):
    harness, ws = fuzzed
    link = harness.site.bridge.ocpp.links.get("FUZZ") if harness.site.bridge else None
    ws.send(frame)
    sentinel = "sentinel-" + str(id(frame))
    ws.send(json.dumps([2, sentinel, "Heartbeat", {}]))
    answers = answers_until_sentinel(ws, sentinel)
    wanted = expected_answer(frame)
    if wanted is None:
        assert answers == []
    else:
        assert [a[1] for a in answers] == [wanted], (frame, answers)
        assert answers[0][0] in (3, 4)
    assert link is not None and harness.site.bridge.ocpp.links.get("FUZZ") is link
