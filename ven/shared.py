"""What both VENs do alike, whatever their wire: backoff, a VTN's URL, forgotten events.

Pure helpers with no protocol vocabulary; each VEN's sub-package (:mod:`ven.oadr20b`,
:mod:`ven.oadr3`) uses them.
"""

from __future__ import annotations

import ipaddress
import random
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from policies.events import DrEvent

if TYPE_CHECKING:
    from ven.interface import VenState


class MemoryState:
    """A :class:`~ven.interface.VenState` that forgets on restart (tests, tools)."""

    def __init__(self) -> None:
        self.offsets: dict[str, timedelta] = {}

    def random_offset(self, event_id: str) -> timedelta | None:
        return self.offsets.get(event_id)

    def save_random_offset(self, event_id: str, offset: timedelta) -> None:
        self.offsets[event_id] = offset


def backoff_delays(initial: float, maximum: float, rng: random.Random) -> Callable[[], float]:
    """Exponential backoff with full jitter, so many VENs do not retry in lockstep."""
    attempt = 0

    def next_delay() -> float:
        nonlocal attempt
        ceiling = min(maximum, initial * 2**attempt)
        attempt += 1
        return rng.uniform(ceiling / 2, ceiling)

    return next_delay


def is_loopback_url(url: str) -> bool:
    """Whether a URL names this machine (localhost or a loopback address)."""
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class Targeting:
    """Which part of the site an event is for: the whole site, or some of the configured
    resources and groups."""

    whole_site: bool
    resources: tuple[str, ...] = ()
    groups: tuple[str, ...] = ()


def implicitly_cancelled(known: Mapping[str, DrEvent], listed: Iterable[str],
                         now: datetime) -> list[str]:
    """Known events a complete event list leaves out while they still matter."""
    present = set(listed)
    return [event_id for event_id, event in known.items()
            if event_id not in present and not event.is_over(now)]


def random_offset(event: DrEvent, state: VenState, rng: random.Random) -> timedelta:
    """The event's random start offset (2.0b ``startafter``, 3.x ``randomizeStart``): drawn
    once per event and kept in ``state``, so a restart does not draw again."""
    if not event.start_after:
        return timedelta(0)
    offset = state.random_offset(event.event_id)
    if offset is None:
        seconds = rng.uniform(0, event.start_after.total_seconds())
        offset = timedelta(seconds=round(seconds, 3))
        state.save_random_offset(event.event_id, offset)
    return offset
