"""What a station says about its voltage between meter samples, in domain terms (pure).

Two sources besides the sampled meter values:

- ``monitor``: an OCPP 2.0.1/2.1 variable monitor the bridge set on the station's voltage
  fired (NotifyEvent): a voltage, on a line when the station names one, at once;
- ``der-control``: an OCPP 2.1 station's own DER control acted or stopped (NotifyDERAlarm,
  NotifyDERStartStop): no voltage, but the station has changed its power by itself.

The volt-watt rule reads :class:`~policies.voltwatt.VoltageReading`; :func:`merge` folds a
monitor's voltage into the station's last reading so the rule can act on it immediately.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

from policies.voltwatt import VoltageReading

Source = Literal["monitor", "der-control"]
_LINE = re.compile(r"(?:^|[^a-z])l([123])(?![0-9])", re.IGNORECASE)
_NUMBER = re.compile(r"[-+]?\d+(?:[.,]\d+)?(?:[eE][-+]?\d+)?")


@dataclass(frozen=True)
class VoltageObservation:
    """One thing a station reported about its voltage, outside its meter samples."""

    station_id: str
    at: datetime  # when the station saw it (never later than it reached us)
    source: Source
    volts: float | None = None  # line-to-neutral; None for a DER notice
    line: int | None = None  # 1-3 when the station names the line; None: not said
    evse_id: int | None = None
    returned_to_normal: bool = False  # a monitor's "cleared", an alarm's or control's end
    detail: str = ""  # for the reason chain and the dashboard

    @property
    def phase(self) -> str | None:
        return f"L{self.line}" if self.line is not None else None


def line_of(instance: object) -> int | None:
    """The line a device-model instance names (``L1``, ``L2-N``, ``l3``...), if any."""
    if not isinstance(instance, str):
        return None
    match = _LINE.search(instance)
    return int(match.group(1)) if match else None


def read_volts(text: object) -> float | None:
    """A voltage as a station writes it (``229.8``, ``229,8``, ``"229.8 V"``); None if not
    a plausible line voltage."""
    if isinstance(text, int | float) and not isinstance(text, bool):
        value = float(text)
    elif isinstance(text, str):
        match = _NUMBER.search(text)
        if match is None:
            return None
        value = float(match.group(0).replace(",", "."))
    else:
        return None
    return value if 0 < value < 1000 else None  # not a number a line voltage can be


def read_time(text: object, received_at: datetime) -> datetime:
    """A station's time stamp, never later than when the message reached us (a clock running
    ahead must not make a reading look fresher than it is); unreadable: ``received_at``."""
    try:
        at = datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    except ValueError:
        return received_at
    at = at if at.tzinfo else at.replace(tzinfo=UTC)
    return min(at, received_at)


def merge(previous: VoltageReading | None, observation: VoltageObservation,
          lines: tuple[int, ...], stale_after: timedelta) -> VoltageReading | None:
    """The station's reading with a monitor's voltage folded in.

    The observed line gets the new voltage; a voltage that names no line stands for every
    line the station uses (``lines``). The reading counts from the observation's time, so
    lines the observation does not cover are kept only while the previous reading is
    fresh: a stale value must not pass for a fresh one. An observation older than the
    reading, or one without a voltage, changes nothing (returns ``previous``).
    """
    if observation.volts is None:
        return previous
    if previous is not None and previous.at > observation.at:
        return previous
    covered = (observation.line,) if observation.line is not None else lines
    phases: list[float | None] = [None, None, None]  # L1, L2, L3
    sources: list[str | None] = [None, None, None]
    if previous is not None and observation.at - previous.at <= stale_after:
        for index, volts in enumerate(previous.phases_v[:3]):
            phases[index] = volts
            sources[index] = previous.source_of(index)
    for line in covered:
        phases[line - 1] = observation.volts
        sources[line - 1] = observation_source(observation)
    return VoltageReading(observation.at, tuple(phases), tuple(sources))


def observation_source(observation: VoltageObservation) -> str:
    """Where a voltage came from, for the reason chain: ``station's monitor event
    12:00:03.4`` (to the tenth of a second: it is acted on within one)."""
    at = observation.at
    return f"station's monitor event {at:%H:%M:%S}.{at.microsecond // 100_000}"


def meter_value_source(at: datetime) -> str:
    """Where a voltage in a meter value came from: ``meter value 12:00:03``."""
    return f"meter value {at:%H:%M:%S}"
