"""OCPP 2.1, central-system side: one :class:`StationLink21` per connected station.

OCPP 2.1 keeps the 2.0.1 messages drbridge uses (BootNotification, TransactionEvent,
smart charging with the same purposes and SetChargingProfile, device model reports,
variable monitors, NotifyChargingLimit), with more optional fields; so a 2.1 link is the
2.0.1 family's (:class:`~bridge.ocpp.v201.StationLink2`) on the 2.1 schemas, read and
answered as for 2.0.1. What 2.1 adds and drbridge uses, DER control (block R):

- the device model says whether a station can (``ACDERCtrlr``/``DCDERCtrlr``);
- SetDERControl, GetDERControl (answered in ReportDERControl parts) and ClearDERControl
  for drbridge's one VoltWatt control (:mod:`bridge.ocpp.der_control`);
- NotifyDERAlarm and NotifyDERStartStop: the station's own control acted or stopped,
  handed to the listener as voltage observations of source ``der-control``.

The 2.1 purposes drbridge does not set (``PriorityCharging``, ``LocalGeneration``,
``ChargingStationExternalConstraints``) are other parties' profiles to it, as any profile
that is not its own; the station reports the external ones with NotifyChargingLimit.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import UTC, datetime

from bridge.ocpp import der_control as der
from bridge.ocpp.framing import Dialect, LinkHandler
from bridge.ocpp.link import CallFailed
from bridge.ocpp.v201 import StationLink2, report_part
from bridge.ocpp.wire import Payload, action_names

log = logging.getLogger(__name__)

OCPP21 = Dialect(
    version="2.1",
    schemas="v21",
    request_suffix="Request",
    actions=action_names("v21", "Request"),
    format_violation="FormatViolation",
    occurrence_violation="OccurrenceConstraintViolation",
)


class StationLink21(StationLink2):
    """The central system's end of one OCPP 2.1 station's websocket."""

    DIALECT = OCPP21

    @classmethod
    def handlers(cls) -> Mapping[str, LinkHandler]:
        return {
            **super().handlers(),
            "NotifyDERAlarm": cls.on_der_alarm,
            "NotifyDERStartStop": cls.on_der_start_stop,
            "ReportDERControl": report_part("ReportDERControl"),
        }

    # DER control -------------------------------------------------------------------------
    async def read_der_support(self) -> bool:
        evses = range(1, max(self._evse_count, *self._evses, 1) + 1)
        try:
            reply = await self._request("GetVariables", der.support_query(list(evses)),
                                        lenient=True)
        except CallFailed as error:
            if error.unsupported:
                return False
            raise
        return der.supports_volt_watt(reply)

    async def set_der_control(self, curve: der.DerCurve) -> der.DerReply:
        try:
            reply = await self._request("SetDERControl", der.set_der_control_request(curve),
                                        lenient=True)
        except CallFailed as error:
            if error.unsupported:
                return der.DerReply("not-supported", str(error))
            raise
        return der.read_reply(reply)

    async def read_der_control(self) -> der.DerControlReport:
        try:
            asked, reply = await self._ask_for_report(
                "GetDERControl", "ReportDERControl", der.get_der_control_request)
        except CallFailed as error:
            if error.unsupported:
                return der.DerControlReport(der.DerReply("not-supported", str(error)))
            raise
        answer = der.read_reply(reply)
        if answer.status != "accepted":  # no report follows
            self._reports.pop(asked[0], None)
            return der.DerControlReport(answer)
        return der.DerControlReport(answer, der.read_report(await self._collected(asked)))

    async def clear_der_control(self) -> der.DerReply:
        try:
            reply = await self._request("ClearDERControl", der.clear_der_control_request(),
                                        lenient=True)
        except CallFailed as error:
            if error.unsupported:
                return der.DerReply("not-supported", str(error))
            raise
        return der.read_reply(reply)

    # handlers ----------------------------------------------------------------------------
    def on_der_alarm(self, payload: Payload) -> Payload:
        self._listener.voltage_observed(
            self.id, der.observation_from_alarm(self.id, payload, datetime.now(UTC)))
        return {}

    def on_der_start_stop(self, payload: Payload) -> Payload:
        """Ours started or stopped, or one superseded ours; others' are not ours to read."""
        observation = der.observation_from_start_stop(self.id, payload, datetime.now(UTC))
        if observation is not None:
            self._listener.voltage_observed(self.id, observation)
        return {}
