"""What the dispatcher needs of a station, whatever OCPP version it speaks.

The dispatcher and the bridge speak in domain terms (watts, amps, schedules,
:class:`~bridge.ocpp.profiles.BuiltProfile`); each protocol edge (``v16``,
``v201``) turns them into its own payloads and its answers back into these.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

from bridge.ocpp.capabilities import Capabilities
from bridge.ocpp.leniency import Repair
from bridge.ocpp.profiles import BuiltProfile

ACCEPTED = "Accepted"
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


class ChargerLink(Protocol):
    """The central system's end of one station's connection."""

    id: str
    # Set once the station may be sent calls (its boot answered, or it spoke first without
    # one); OCPP wants no call to a station before its BootNotification is accepted.
    registered: asyncio.Event

    async def read_capabilities(self) -> Capabilities: ...

    async def set_profile(self, profile: BuiltProfile) -> str:
        """Install a profile; "Accepted" or why not."""
        ...

    async def composite_schedule(self, connector_id: int, duration_s: int,
                                 unit: str) -> CompositeSchedule | None: ...

    async def set_meter_interval(self, seconds: int) -> str: ...

    async def installed_profiles(self) -> list[InstalledProfile] | None:
        """The charging profiles the station holds, ours and others'; None where the
        protocol cannot tell (OCPP 1.6 has no call that lists them)."""
        ...

    async def clear_charging_profile(self, profile_id: int) -> str:
        """Remove one profile by its id (so never one that is not ours)."""
        ...

    async def close(self, code: int, reason: str) -> None: ...


def reply_status(reply: dict[str, Any]) -> str:
    """A reply's status; "accepted" in any case counts, anything unreadable does not."""
    status = reply.get("status")
    if not isinstance(status, str):
        return "Unreadable"
    return ACCEPTED if status.strip().lower() == "accepted" else status


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


