"""What the bridge and a VEN know of each other, whatever OpenADR version the VEN speaks.

Both :class:`ven.oadr20b.client.Ven` (2.0b) and :class:`ven.oadr3.ven.Ven3` (3.0.1, 3.1.0)
satisfy :class:`VenDriver`; the bridge picks one by ``ven.protocol`` and talks to it
through this. Each calls the bridge back through a :class:`VenListener`, which decides on
events and supplies report values, and keeps what must survive a restart in a
:class:`VenState`. Events are the policy's :class:`~policies.events.DrEvent`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal, Protocol

from policies.events import DrEvent, OptType

# ei:optReason values (OpenADR 2.0b OptReasonEnumeratedType, without the x- extension); the
# operator's reasons are written in them, and a VEN without opt messages ignores them.
OptReason = Literal["economic", "emergency", "mustRun", "notParticipating", "outageRunStatus",
                    "overrideStatus", "participating", "x-schedule"]


@dataclass(frozen=True)
class Window:
    """A period of time, as in an xcal:vavailability component."""

    start: datetime
    duration: timedelta


@dataclass(frozen=True)
class Registration:
    ven_id: str
    registration_id: str


@dataclass(frozen=True)
class SiteStatus:
    online: bool  # the bridge steers at least one station
    manual_override: bool  # the site operator overrides an active event
    current_w: float  # the capacity the site can offer now: its present limit
    min_w: float
    max_w: float


class ReportSource(Protocol):
    """Where report values come from (the bridge)."""

    def measured_load_w(self) -> float: ...

    def measured_energy_wh(self) -> float: ...

    def group_load_w(self, group_id: str) -> float: ...

    def site_status(self) -> SiteStatus: ...

    def load_history(self, start: datetime, end: datetime) -> list[tuple[datetime, float]]:
        """Stored (time, site load W) samples in [start, end)."""
        ...


class VoltageSource(Protocol):
    def site_voltages(self) -> Mapping[str, tuple[float, float]]:
        """Per phase (L1..L3) with fresh readings: (lowest V, mean V) over the stations."""
        ...


class VenListener(ReportSource, Protocol):
    """What the VEN needs from the rest of the gateway (report values included)."""

    async def on_event(self, event: DrEvent) -> OptType:
        """Decide on and persist an event (new, modified or cancelled); called before the VTN
        gets our answer."""
        ...

    def on_registration(self, registration: Registration) -> None: ...

    def on_registration_cancelled(self) -> None:
        """The VTN cancelled our registration: forget the persisted one."""
        ...


class VenState(Protocol):
    """Persistence the VEN needs beyond its listener (the bridge's store implements it)."""

    def random_offset(self, event_id: str) -> timedelta | None: ...

    def save_random_offset(self, event_id: str, offset: timedelta) -> None: ...


class VenDriver(Protocol):
    known: dict[str, DrEvent]  # every event handed on, as last handed on
    opts: dict[str, OptType]  # what the site answered to each (the bridge may change it)

    @property
    def registration(self) -> Registration | None: ...

    @property
    def last_contact(self) -> datetime | None:
        """When the VTN last answered (the policy's fail-safe watches it)."""
        ...

    @property
    def openadr_version(self) -> str:
        """The OpenADR version spoken: 2.0b, 3.0.1 or 3.1.0."""
        ...

    @property
    def program_names(self) -> dict[str, str]:
        """The programs the VTN shows this VEN, by id (none in 2.0b)."""
        ...

    async def run(self) -> None:
        """Register (retrying while the VTN is down), then follow events until stop()."""
        ...

    async def stop(self) -> None: ...

    async def opt_out_of_event(self, opt_id: str, event_id: str, modification_number: int,
                               reason: OptReason = "notParticipating",
                               market_context: str | None = None) -> bool:
        """True once the VTN has it (3.x: at once; it has no opt message)."""
        ...

    async def declare_unavailable(self, opt_id: str, windows: list[Any],
                                  reason: OptReason = "notParticipating",
                                  market_context: str | None = None) -> bool: ...

    async def cancel_opt(self, opt_id: str) -> bool: ...
