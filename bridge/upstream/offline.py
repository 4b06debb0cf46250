"""What drbridge answers a station itself while the operator's CSMS is unreachable (pure).

Stations stay connected and keep charging: BootNotification, Heartbeat and
StatusNotification are answered locally; Authorize and the start of a transaction from
the authorization cache (``bridge.upstream.authcache``); meter values and the rest of a
transaction are acknowledged. :func:`kept_for_replay` says which messages go into the
outage queue (written *before* the answer): everything about a transaction, the
connector states around it, and the station's notices. Heartbeats, BootNotification
(the station's link to drbridge never dropped; a boot during the outage is sent upstream
as the link returns, see the README), Authorize (the replayed start carries the id tag
to the operator) and meter values outside a transaction are not kept.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from bridge.upstream.authcache import Decision, token_key

HEARTBEAT_INTERVAL_S = 300
V16, V201 = "1.6", "2.0.1"
_KEPT_16 = frozenset({"StartTransaction", "StopTransaction", "StatusNotification",
                      "FirmwareStatusNotification", "DiagnosticsStatusNotification"})
_KEPT_201 = frozenset({"TransactionEvent", "StatusNotification", "SecurityEventNotification",
                       "FirmwareStatusNotification", "LogStatusNotification", "NotifyEvent"})
_ACKNOWLEDGED = frozenset({"StatusNotification", "MeterValues", "FirmwareStatusNotification",
                           "DiagnosticsStatusNotification", "SecurityEventNotification",
                           "LogStatusNotification", "NotifyEvent", "NotifyReport",
                           "NotifyChargingLimit", "ReportChargingProfiles",
                           "NotifyMonitoringReport", "NotifyEVChargingNeeds",
                           "NotifyEVChargingSchedule", "ClearedChargingLimit",
                           "NotifyCustomerInformation", "NotifyDisplayMessages",
                           "ReservationStatusUpdate", "PublishFirmwareStatusNotification"})

Authorize = Callable[[str], Decision]  # token key -> the offline decision


def kept_for_replay(version: str, action: str, payload: Mapping[str, Any]) -> bool:
    """Whether a message the station sends while the operator is away is queued."""
    if version == V16:
        return action in _KEPT_16 or (action == "MeterValues" and "transactionId" in payload)
    return action in _KEPT_201


def _iso(now: datetime) -> str:
    return now.isoformat(timespec="seconds").replace("+00:00", "Z")


def local_answer(version: str, action: str, payload: Mapping[str, Any], now: datetime,
                 authorize: Authorize, local_tx: int | None = None) -> dict[str, Any] | None:
    """The answer drbridge gives in the operator's place; None when it has none to give
    (a request only the operator can answer, e.g. a certificate: a CALLERROR then).

    ``local_tx``: the transaction id the outage queue gave a 1.6 StartTransaction."""
    if action == "BootNotification":
        return {"currentTime": _iso(now), "interval": HEARTBEAT_INTERVAL_S, "status": "Accepted"}
    if action == "Heartbeat":
        return {"currentTime": _iso(now)}
    if action == "DataTransfer":
        return {"status": "Rejected"}  # the operator's vendor extension is not here to ask
    if version == V16:
        return _local_answer_16(action, payload, authorize, local_tx)
    return _local_answer_201(action, payload, authorize)


def _local_answer_16(action: str, payload: Mapping[str, Any], authorize: Authorize,
                     local_tx: int | None) -> dict[str, Any] | None:
    if action == "Authorize":
        return {"idTagInfo": {"status": authorize(token_key(str(payload["idTag"]))).status}}
    if action == "StartTransaction":
        if local_tx is None:
            raise ValueError("a StartTransaction is answered with the id the queue gave it")
        status = authorize(token_key(str(payload["idTag"]))).status
        return {"transactionId": local_tx, "idTagInfo": {"status": status}}
    if action == "StopTransaction":
        if "idTag" not in payload:
            return {}
        return {"idTagInfo": {"status": authorize(token_key(str(payload["idTag"]))).status}}
    return {} if action in _ACKNOWLEDGED else None


def _local_answer_201(action: str, payload: Mapping[str, Any],
                      authorize: Authorize) -> dict[str, Any] | None:
    if action == "Authorize":
        return {"idTokenInfo": {"status": authorize(token_key(payload["idToken"])).status}}
    if action == "TransactionEvent":
        if "idToken" not in payload:
            return {}
        return {"idTokenInfo": {"status": authorize(token_key(payload["idToken"])).status}}
    return {} if action in _ACKNOWLEDGED else None
