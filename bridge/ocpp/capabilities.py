"""What a station's smart charging can take, read from GetConfiguration (pure).

Chargers answer in many dialects: rate units as "Current", "power", "Current,Power"
or "A;W"; numbers as strings with spaces or as JSON numbers; feature profiles in
any case. Whatever cannot be read falls back to the most cautious value.

OCPP 1.6 has no standard key for a station's maximum current, but many chargers
expose one of their own (``MaxCurrent``, ``MaxChargingCurrent``,
``Station.MaxCurrentA``, ``MaxChargeRate``...): :func:`parse_rated_current` finds it
by its name, for a station the bridge cannot steer.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from bridge.shared_values import SharedValues
from bridge.worst_case import Rated

RATE_UNIT_KEY = "ChargingScheduleAllowedChargingRateUnit"
STACK_LEVEL_KEY = "ChargeProfileMaxStackLevel"
PERIODS_KEY = "ChargingScheduleMaxPeriods"
PROFILES_KEY = "MaxChargingProfilesInstalled"
FEATURES_KEY = "SupportedFeatureProfiles"
CONNECTORS_KEY = "NumberOfConnectors"
KEYS = (RATE_UNIT_KEY, STACK_LEVEL_KEY, PERIODS_KEY, PROFILES_KEY, FEATURES_KEY, CONNECTORS_KEY)


@dataclass(frozen=True, slots=True)
class Capabilities:
    rate_units: frozenset[str] = frozenset({"A"})  # "A" and/or "W"
    max_stack_level: int = 0
    max_periods: int = 24
    max_profiles: int | None = None
    features: frozenset[str] = frozenset()
    connectors: int = 1
    known: bool = False  # False until the station answered GetConfiguration

    @property
    def smart_charging(self) -> bool:
        """False only when the station lists its feature profiles without SmartCharging.

        A station that does not say is tried: a refusal is handled like any other.
        """
        if not self.features:
            return True
        return any(f.lower() == "smartcharging" for f in self.features)

    def to_json(self) -> str:
        return json.dumps({
            "rate_units": sorted(self.rate_units), "max_stack_level": self.max_stack_level,
            "max_periods": self.max_periods, "max_profiles": self.max_profiles,
            "features": sorted(self.features), "connectors": self.connectors,
        })

    @classmethod
    def from_json(cls, text: str) -> Capabilities | None:
        """What :meth:`to_json` wrote; None for anything else (an older format, junk)."""
        try:
            data = json.loads(text)
            return shared(cls(
                rate_units=frozenset(data["rate_units"]),
                max_stack_level=int(data["max_stack_level"]),
                max_periods=int(data["max_periods"]),
                max_profiles=None if data["max_profiles"] is None else int(data["max_profiles"]),
                features=frozenset(data["features"]),
                connectors=int(data["connectors"]),
                known=True,
            ))
        except (TypeError, ValueError, KeyError):
            return None

    @property
    def preferred_unit(self) -> str:
        # Amps are what the EV's pilot signal carries; use them where possible.
        return "A" if "A" in self.rate_units or not self.rate_units else "W"


UNKNOWN = Capabilities()  # a station's until it answers (one instance for all)

# Stations of one model answer alike: each gets the one instance of what it answered, not
# a copy of its own (with its sets) for each of thousands of stations. Bounded: a fleet of
# many odd answers keeps its own copies beyond this many kinds.
MAX_SHARED = 1024
shared: SharedValues[Capabilities] = SharedValues(MAX_SHARED)


def parse_rate_units(text: str) -> frozenset[str]:
    """'Current', 'Power', 'Current,Power', 'A', 'W' in any case and separator."""
    units = set()
    for word in re.split(r"[\s,;|]+", text.strip().lower()):
        if word in ("current", "a", "amps", "ampere"):
            units.add("A")
        elif word in ("power", "w", "watts", "watt"):
            units.add("W")
    return frozenset(units)


def _int(value: Any, default: int) -> int:
    try:
        return int(float(str(value).strip()))  # "8", " 8 ", 8 and "8.0" alike
    except (TypeError, ValueError, OverflowError):
        return default


def parse_configuration(keys: Iterable[Mapping[str, Any]]) -> Capabilities:
    """From GetConfiguration.conf's configurationKey list (snake_case or camelCase items)."""
    values = {str(k.get("key")): k.get("value") for k in keys if isinstance(k, Mapping)}
    default = Capabilities()
    units = parse_rate_units(str(values.get(RATE_UNIT_KEY) or ""))
    features = frozenset(
        w.strip() for w in re.split(r"[,;\s]+", str(values.get(FEATURES_KEY) or "")) if w.strip()
    )
    profiles = values.get(PROFILES_KEY)
    return shared(Capabilities(
        rate_units=units or default.rate_units,
        max_stack_level=max(_int(values.get(STACK_LEVEL_KEY), default.max_stack_level), 0),
        max_periods=max(_int(values.get(PERIODS_KEY), default.max_periods), 1),
        max_profiles=_int(profiles, 0) or None if profiles is not None else None,
        features=features,
        connectors=max(_int(values.get(CONNECTORS_KEY), 1), 1),
        known=True,
    ))


# A vendor key states the station's maximum current when its name (letters and digits
# only, any case) speaks of the maximum of the current or of the charge rate...
_RATED_NAME = re.compile(r"max\w*(current|chargerate)|chargerate\w*max")
# ...and of nothing else: a minimum, an offset or imbalance, the cable's rating (another
# cable may come), a fallback for when it is offline, power (kW or W, not amps), or a
# standard smart-charging key.
_NOT_RATED = re.compile(r"min|offset|imbalance|unbalance|cable|fallback|failsafe|offline|"
                        r"default|power|kw|watt|unit|stack|period|profile|ma$|milli")
RATED_RANGE_A = (6.0, 500.0)  # per phase: what a charger can be rated at


def parse_rated_current(keys: Iterable[Mapping[str, Any]]) -> Rated | None:
    """A station's maximum current per phase from its configuration keys, if it states one.

    Of several such keys the highest counts: the station may draw up to any of them.
    Values outside what a charger can be rated at are not read as amps.
    """
    best: Rated | None = None
    for item in keys:
        if not isinstance(item, Mapping):
            continue
        name = str(item.get("key") or "")
        plain = re.sub(r"[^a-z0-9]", "", name.lower())
        if not _RATED_NAME.search(plain) or _NOT_RATED.search(plain):
            continue
        try:
            amps = float(str(item.get("value")).strip())
        except ValueError:
            continue
        low, high = RATED_RANGE_A
        if low <= amps <= high and (best is None or best.amps is None or amps > best.amps):
            best = Rated(name, amps=amps)
    return best
