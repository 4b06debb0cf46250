"""What drbridge answers in the operator's place during an outage, and what it keeps."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from functools import cache
from importlib import resources

import fastjsonschema
import pytest

from bridge.upstream.authcache import Decision
from bridge.upstream.offline import kept_for_replay, local_answer

NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)


@cache
def response_schema(version: str, action: str):  # noqa: ANN201
    folder = "v16" if version == "1.6" else "v201"
    text = resources.files("ocpp").joinpath(folder, "schemas",
                                            f"{action}Response.json").read_text("utf-8")
    schema = json.loads(text)
    schema.pop("$id", None)
    return fastjsonschema.compile(schema)


def authorize(token: str) -> Decision:
    return Decision("Accepted" if token.endswith("GOOD") else "Blocked", "test")


CASES_16 = [
    ("BootNotification", {"chargePointVendor": "v", "chargePointModel": "m"}),
    ("Heartbeat", {}),
    ("StatusNotification", {"connectorId": 1, "errorCode": "NoError", "status": "Charging"}),
    ("Authorize", {"idTag": "GOOD"}),
    ("StartTransaction", {"connectorId": 1, "idTag": "GOOD", "meterStart": 0,
                          "timestamp": "2025-06-01T12:00:00Z"}),
    ("MeterValues", {"connectorId": 1, "transactionId": 7, "meterValue": []}),
    ("StopTransaction", {"transactionId": 7, "meterStop": 9, "timestamp": "2025-06-01T12:00:00Z",
                         "idTag": "BAD"}),
    ("DataTransfer", {"vendorId": "x"}),
    ("FirmwareStatusNotification", {"status": "Idle"}),
    ("DiagnosticsStatusNotification", {"status": "Idle"}),
]
CASES_201 = [
    ("BootNotification", {"reason": "PowerUp", "chargingStation": {"model": "m",
                                                                   "vendorName": "v"}}),
    ("Heartbeat", {}),
    ("StatusNotification", {}),
    ("Authorize", {"idToken": {"idToken": "GOOD", "type": "ISO14443"}}),
    ("TransactionEvent", {"eventType": "Started", "idToken": {"idToken": "BAD", "type": "Local"}}),
    ("TransactionEvent", {"eventType": "Updated"}),
    ("MeterValues", {"evseId": 1, "meterValue": []}),
    ("SecurityEventNotification", {}),
    ("NotifyEvent", {}),
    ("DataTransfer", {"vendorId": "x"}),
]


@pytest.mark.parametrize(("action", "payload"), CASES_16)
def test_16_answers_follow_the_schema(action, payload):
    answer = local_answer("1.6", action, payload, NOW, authorize, local_tx=2_100_000_000)
    assert answer is not None
    response_schema("1.6", action)(answer)


@pytest.mark.parametrize(("action", "payload"), CASES_201)
def test_201_answers_follow_the_schema(action, payload):
    answer = local_answer("2.0.1", action, payload, NOW, authorize)
    assert answer is not None
    response_schema("2.0.1", action)(answer)


def test_authorization_comes_from_the_cache_decision():
    start = local_answer("1.6", "StartTransaction", dict(CASES_16[4][1]), NOW, authorize,
                         local_tx=2_100_000_003)
    assert start == {"transactionId": 2_100_000_003, "idTagInfo": {"status": "Accepted"}}
    event = local_answer("2.0.1", "TransactionEvent", dict(CASES_201[4][1]), NOW, authorize)
    assert event == {"idTokenInfo": {"status": "Blocked"}}
    with pytest.raises(ValueError, match="id the queue gave"):
        local_answer("1.6", "StartTransaction", dict(CASES_16[4][1]), NOW, authorize)


def test_requests_only_the_operator_can_answer_get_none():
    assert local_answer("2.0.1", "SignCertificate", {"csr": "x"}, NOW, authorize) is None
    assert local_answer("1.6", "SomethingNew", {}, NOW, authorize) is None


@pytest.mark.parametrize(("version", "action", "payload", "kept"), [
    ("1.6", "StartTransaction", {}, True),
    ("1.6", "StopTransaction", {}, True),
    ("1.6", "MeterValues", {"transactionId": 3}, True),
    ("1.6", "MeterValues", {"connectorId": 0}, False),
    ("1.6", "StatusNotification", {}, True),
    ("1.6", "Authorize", {}, False),
    ("1.6", "Heartbeat", {}, False),
    ("1.6", "BootNotification", {}, False),
    ("2.0.1", "TransactionEvent", {}, True),
    ("2.0.1", "MeterValues", {}, False),
    ("2.0.1", "SecurityEventNotification", {}, True),
    ("2.0.1", "Authorize", {}, False),
])
def test_what_is_kept_for_replay(version, action, payload, kept):
    assert kept_for_replay(version, action, payload) is kept
