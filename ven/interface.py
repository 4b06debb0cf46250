"""What the bridge needs of a VEN, whatever OpenADR version it speaks.

Both :class:`ven.client.Ven` (2.0b) and :class:`ven.oadr3.Ven3` (3.0.1, 3.1.0) satisfy
:class:`VenDriver`; the bridge picks one by ``ven.protocol`` and talks to it through this.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Protocol

from ven.client import OptReason, Registration
from ven.events import DrEvent, OptType


class VenDriver(Protocol):
    known: dict[str, DrEvent]  # every event handed on, as last handed on
    opts: dict[str, OptType]  # what the site answered to each (the bridge may change it)

    @property
    def registration(self) -> Registration | None: ...

    @property
    def last_contact(self) -> datetime | None:
        """When the VTN last answered (the policy's fail-safe watches it)."""
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
