"""What the dispatcher needs of a station, whatever OCPP version it speaks.

The dispatcher and the bridge speak in domain terms (watts, amps, schedules,
:class:`~bridge.ocpp.profiles.BuiltProfile`, voltage monitors and curves); each protocol
edge (``v16``, ``v201``, ``v21``) turns them into its own payloads and its answers back into
these.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

from bridge.aio import Wake
from bridge.ocpp.capabilities import Capabilities
from bridge.ocpp.der_control import DerControlReport, DerCurve, DerReply
from bridge.ocpp.external_limits import ExternalLimit
from bridge.ocpp.leniency import Repair
from bridge.ocpp.profiles import BuiltProfile
from bridge.ocpp.sampling import NOT_READ, Sampling, SamplingChange, SamplingReply
from bridge.ocpp.voltage_monitors import InstalledMonitor, MonitorOutcome, MonitorSpec
from bridge.ocpp.voltage_observation import VoltageObservation
from bridge.worst_case import Rated

ACCEPTED = "Accepted"
# awaited between a call sent and its answer taken up (see ChargerLink.set_profile)
BeforeAnswer = Callable[[], Awaitable[None]]
# Where the meter values of an OCPP 2.0.1 transaction go while the station has not said
# which EVSE it runs on: counted in the station's draw, on no EVSE's.
UNKNOWN_EVSE = -1


class CallFailed(Exception):
    """A call to a station got a CallError, timed out, or the link dropped."""

    def __init__(self, message: str, error_code: str | None = None) -> None:
        super().__init__(message)
        self.error_code = error_code  # the CALLERROR's code, if it was one

    @property
    def unsupported(self) -> bool:
        """The station says it does not do this at all."""
        return self.error_code in ("NotSupported", "NotImplemented")


class StationListener(Protocol):
    def station_booted(self, station_id: str, info: dict[str, str]) -> None: ...

    def status_changed(self, station_id: str, connector_id: int, status: str) -> None: ...

    def transaction_started(self, station_id: str, connector_id: int, id_tag: str,
                            meter_start: int, at: datetime,
                            station_tx: str | None = None) -> int:
        """The bridge's id for a new transaction; ``station_tx``: the station's own id for it
        (OCPP 2.0.1), kept with it."""
        ...

    def transaction_stopped(self, station_id: str, transaction_id: int, meter_stop: int,
                            at: datetime) -> None: ...

    def meter_values(self, station_id: str, connector_id: int,
                     meter_values: list[dict[str, Any]]) -> None: ...

    def transaction_of(self, station_id: str, station_tx: str,
                       connector_id: int | None) -> tuple[int, int] | None:
        """The bridge's id and the connector of the open transaction the station calls
        ``station_tx``, if the bridge knows it (also from before a restart)."""
        ...

    def station_transaction(self, station_id: str, transaction_id: int) -> str | None:
        """The station's own id of one of the bridge's open transactions, if it has one."""
        ...

    def call_sent(self, station_id: str, action: str) -> None:
        """A call went to the station (counted for the operator's metrics)."""
        ...

    def request_repaired(self, station_id: str, action: str,
                         repairs: Sequence[Repair]) -> None:
        """A request off the schema was read after these repairs (logged and counted)."""
        ...

    def voltage_observed(self, station_id: str, observation: VoltageObservation) -> None:
        """The station told of its voltage between its meter samples: a variable monitor's
        event (2.0.1, 2.1: a voltage, at once), or its own DER control acting (2.1: no
        voltage, the station changed its power by itself)."""
        ...

    def external_limit(self, station_id: str, limit: ExternalLimit) -> None:
        """Another party limits the station, or one of its EVSEs, outside the central system
        (NotifyChargingLimit), or no longer does (ClearedChargingLimit: ``limit.cleared``);
        a new notice from the same source for the same EVSE replaces the one before."""
        ...


class ChargerLink(Protocol):
    """The central system's end of one station's connection: everything the dispatcher and
    the runtime ask of it, which every version's link does (as far as its protocol can:
    each method says what it answers where the protocol has no way)."""

    id: str
    # Set once the station may be sent calls (its boot answered, or it spoke first without
    # one); OCPP wants no call to a station before its BootNotification is accepted.
    registered: Wake

    async def read_capabilities(self) -> CapabilitiesRead:
        """What its smart charging can take, and (in the same read) how its meter samples."""
        ...

    async def set_profile(self, profile: BuiltProfile,
                          before_answer: BeforeAnswer | None = None) -> str:
        """Install a profile; "Accepted" or why not. ``before_answer``: awaited once the
        profile is sent, before its answer is taken up (a wave's pacing: see
        :class:`bridge.aio.WaveTurns`). The call is under way until then: another call to
        the station (in local-controller mode, one of the operator's) waits for it."""
        ...

    async def composite_schedule(self, connector_id: int, duration_s: int,
                                 unit: str) -> CompositeSchedule | None: ...

    async def read_rated_current(self) -> Rated | None:
        """The maximum current or power the station states of itself, if any (read, never
        written: 1.6 a configuration key of its own, 2.0.1 its device model)."""
        ...

    async def read_sampling(self) -> Sampling:
        """How its meter samples a transaction (read alone: for a station whose capabilities
        are known from before)."""
        ...

    async def set_sampling(self, change: SamplingChange) -> SamplingReply:
        """Set what ``change`` names, as few calls as the protocol allows; each setting's
        answer. Raises nothing: a call without an answer is told in the reply."""
        ...

    async def installed_profiles(self) -> list[InstalledProfile] | None:
        """The charging profiles the station holds, ours and others'; None where the
        protocol cannot tell (OCPP 1.6 has no call that lists them)."""
        ...

    async def clear_charging_profile(self, profile_id: int) -> str:
        """Remove one profile by its id (so never one that is not ours)."""
        ...

    # voltage boundaries in the station (OCPP 2.0.1 monitors, 2.1 DER control) -------------
    async def set_voltage_monitors(self, monitors: Sequence[MonitorSpec]) -> MonitorOutcome:
        """Set these threshold monitors (SetVariableMonitoring); what the station took, with
        the ids it gave, and what it refused and why. A station without variable monitoring
        refuses them all ``NotSupported`` (``outcome.unsupported``); so does 1.6, which has
        none, without a call. Raises CallFailed only when there is no answer to read."""
        ...

    async def clear_voltage_monitors(self, monitor_ids: Sequence[int]) -> set[int]:
        """Clear monitors by the ids the station gave for ours (never another's); the ids
        now gone (cleared, or unknown to the station). 1.6: all of them (it can hold none),
        without a call."""
        ...

    async def read_voltage_monitors(self, wanted: Sequence[MonitorSpec]
                                    ) -> list[InstalledMonitor]:
        """The monitors the station holds that are exactly these, with their ids
        (GetMonitoringReport): after it answered ``Duplicate`` to monitors set in an earlier
        run whose ids are lost. None found, or no monitoring (1.6: without a call): []."""
        ...

    async def read_der_support(self) -> bool:
        """Whether the station has a DER controller that does VoltWatt (its 2.1 device
        model). 1.6 and 2.0.1 have no DER control: False, without a call."""
        ...

    async def set_der_control(self, curve: DerCurve) -> DerReply:
        """Install our VoltWatt curve as a default control (SetDERControl; replaces ours in
        place); ``superseded`` when the station holds one of higher priority. 1.6 and 2.0.1,
        or a 2.1 station without DER control: ``not-supported``, the former without a call."""
        ...

    async def read_der_control(self) -> DerControlReport:
        """Our control as the station holds it (GetDERControl, then ReportDERControl):
        ``not-found`` when it holds none; ``not-supported`` as for set_der_control."""
        ...

    async def clear_der_control(self) -> DerReply:
        """Remove our control, by its id (never another party's): ``accepted``, or
        ``not-found`` when the station holds none; ``not-supported`` as above."""
        ...

    async def close(self, code: int, reason: str) -> None: ...


def reply_status(reply: dict[str, Any]) -> str:
    """A reply's status; "accepted" in any case counts, anything unreadable does not."""
    status = reply.get("status")
    if not isinstance(status, str):
        return "Unreadable"
    return ACCEPTED if status.strip().lower() == "accepted" else status


@dataclass(frozen=True, slots=True)
class CapabilitiesRead:
    """One read of a station's configuration: its capabilities (kept from one connection to
    the next, see :class:`~bridge.ocpp.capabilities.Capabilities`) and how its meter samples
    (a setting of its own, which the bridge may change: not kept with them)."""

    capabilities: Capabilities
    sampling: Sampling = NOT_READ


@dataclass(frozen=True)
class InstalledProfile:
    """A charging profile a station reports it holds (OCPP 2.0.1 ReportChargingProfiles)."""

    profile_id: int
    purpose: str  # as BuiltProfile.purpose names it (STATION_MAX, TX_DEFAULT, TX) or the wire's
    connector_id: int  # the EVSE; 0: the whole station
    stack_level: int
    source: str  # who installed it (chargingLimitSource: CSO, EMS, SO, Other)


@dataclass(frozen=True)
class CompositeSchedule:
    """What a station reports it will apply: per-period limits in the asked unit."""

    start: datetime
    unit: str
    periods: tuple[tuple[int, float], ...]  # (seconds from start, limit)

    def periods_at(self) -> list[tuple[datetime, float]]:
        """Each period's start as a time, and its limit."""
        return [(self.start + timedelta(seconds=second), limit)
                for second, limit in self.periods]

    def limit_at(self, at: datetime) -> float | None:
        offset = (at - self.start).total_seconds()
        current = None
        for second, limit in self.periods:
            if second > offset:
                break
            current = limit
        return current


