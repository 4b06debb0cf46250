"""How often, and what, a station's meter samples during a transaction; what of it the
bridge must change (pure).

The bridge wants a transaction's meter values every ``ocpp.meter_interval_s`` and, for the
voltage rules and reports, the grid measurands. OCPP 1.6 keeps both in configuration keys
(``MeterValueSampleInterval``, ``MeterValuesSampledData``), 2.0.1 and 2.1 in the variables
``TxUpdatedInterval`` and ``TxUpdatedMeasurands`` of ``SampledDataCtrlr``; each protocol edge
reads and writes its own, in these terms. They are read with the station's capabilities,
and a setting the station holds already is not set again: a fleet that reconnects after an
outage costs no call that changes nothing.

Read as chargers write them: the interval as "10", " 10 ", "10.0" or a JSON number; the
measurands as a list separated by commas (or semicolons or spaces), in any order and case.
A value that was not read (the key is unknown, the read refused, the value unreadable)
differs from any: it is set, as it always was. A setting the station says it cannot change
(OCPP 1.6 lists the key read-only: not settable by ChangeConfiguration) is not asked: the
call could change nothing either.

The measurands must be the same set as asked, not merely include it. Setting them leaves
the station with exactly the bridge's list, and skipping the call must leave it as the call
would have: a station sampling more (a factory default, another party's choice) would put
the extra values into every MeterValues it sends, which the bridge reads in its hot path
and stores nothing of.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from bridge.shared_values import SharedValues


@dataclass(frozen=True, slots=True)
class Sampling:
    """What a station says its meter samples in a transaction; None where it was not read."""

    interval_s: int | None = None
    measurands: frozenset[str] | None = None  # case-folded names (see measurand_set)
    # it says it cannot change them (1.6: read-only keys)
    interval_fixed: bool = False
    measurands_fixed: bool = False


NOT_READ = Sampling()


@dataclass(frozen=True, slots=True)
class SamplingChange:
    """What to set; None leaves that setting as the station holds it."""

    interval_s: int | None = None
    measurands: tuple[str, ...] | None = None

    @property
    def empty(self) -> bool:
        return self.interval_s is None and self.measurands is None


@dataclass(frozen=True, slots=True)
class SamplingReply:
    """The station's answer to each setting asked ("Accepted", what it answered instead, or
    why there was no answer); None for a setting not asked."""

    interval: str | None = None
    measurands: str | None = None


def read_interval(value: Any) -> int | None:
    """Seconds from "10", " 10 ", "10.0" or 10; None for anything else (a negative too)."""
    if value is None or isinstance(value, bool):
        return None
    try:
        number = float(str(value).strip())
    except ValueError:
        return None
    if not number.is_integer() or number < 0:
        return None
    return int(number)


# One object for each set of measurands stations report alike: a fleet holds a handful of
# distinct sets, and a frozenset costs 216 bytes or more a station.
shared_sets: SharedValues[frozenset[str]] = SharedValues(256)


def measurand_set(names: Iterable[str]) -> frozenset[str]:
    """The names as compared: without surrounding spaces, case-folded, blanks left out."""
    return shared_sets(frozenset(n.strip().casefold() for n in names if n.strip()))


def read_measurands(value: Any) -> frozenset[str] | None:
    """The measurands of a list as chargers write it; None when there is no text to read
    (an empty text is a value: no measurand)."""
    if not isinstance(value, str):
        return None
    return measurand_set(re.split(r"[,;\s]+", value))


def sampling_from(interval: Any, measurands: Any, interval_fixed: bool = False,
                  measurands_fixed: bool = False) -> Sampling:
    """From the two values as read (None: not read), and whether each is read-only."""
    return Sampling(read_interval(interval), read_measurands(measurands), interval_fixed,
                    measurands_fixed)


def changes(held: Sampling, interval_s: int, measurands: Iterable[str]) -> SamplingChange:
    """What to set so that the station samples every ``interval_s`` seconds (0: no wish),
    exactly ``measurands`` (none: no wish), given what it holds and can change."""
    wanted = tuple(measurands)
    return SamplingChange(
        interval_s=interval_s if interval_s and not held.interval_fixed
        and held.interval_s != interval_s else None,
        measurands=wanted if wanted and not held.measurands_fixed
        and held.measurands != measurand_set(wanted) else None,
    )


def kept(held: Sampling, interval_s: int, measurands: Iterable[str]) -> list[str]:
    """What the station keeps although it differs from the wish, as it cannot change it: for
    the log ("meter interval", "measurands")."""
    wanted = tuple(measurands)
    return [what for what, differs in (
        ("meter interval", bool(interval_s) and held.interval_fixed
         and held.interval_s != interval_s),
        ("measurands", bool(wanted) and held.measurands_fixed
         and held.measurands != measurand_set(wanted))) if differs]

