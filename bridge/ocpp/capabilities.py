"""What a station's smart charging can take, read from GetConfiguration (pure)."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

RATE_UNIT_KEY = "ChargingScheduleAllowedChargingRateUnit"
STACK_LEVEL_KEY = "ChargeProfileMaxStackLevel"
PERIODS_KEY = "ChargingScheduleMaxPeriods"
PROFILES_KEY = "MaxChargingProfilesInstalled"
FEATURES_KEY = "SupportedFeatureProfiles"
CONNECTORS_KEY = "NumberOfConnectors"
KEYS = (RATE_UNIT_KEY, STACK_LEVEL_KEY, PERIODS_KEY, PROFILES_KEY, FEATURES_KEY, CONNECTORS_KEY)


@dataclass(frozen=True)
class Capabilities:
    rate_units: frozenset[str] = frozenset({"A"})  # "A" and/or "W"
    max_stack_level: int = 0
    max_periods: int = 24
    max_profiles: int | None = None
    features: frozenset[str] = frozenset()
    connectors: int = 1
    known: bool = False  # False until the station answered GetConfiguration

    @property
    def preferred_unit(self) -> str:
        # Amps are what the EV's pilot signal carries; use them where possible.
        return "A" if "A" in self.rate_units or not self.rate_units else "W"


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
        return int(str(value).strip())
    except (TypeError, ValueError):
        return default


def parse_configuration(keys: Iterable[Mapping[str, Any]]) -> Capabilities:
    """From GetConfiguration.conf's configurationKey list (snake_case or camelCase items)."""
    values = {str(k.get("key")): k.get("value") for k in keys if isinstance(k, Mapping)}
    default = Capabilities()
    units = parse_rate_units(str(values.get(RATE_UNIT_KEY) or ""))
    features = frozenset(
        w.strip() for w in str(values.get(FEATURES_KEY) or "").split(",") if w.strip()
    )
    profiles = values.get(PROFILES_KEY)
    return Capabilities(
        rate_units=units or default.rate_units,
        max_stack_level=max(_int(values.get(STACK_LEVEL_KEY), default.max_stack_level), 0),
        max_periods=max(_int(values.get(PERIODS_KEY), default.max_periods), 1),
        max_profiles=_int(profiles, 0) or None if profiles is not None else None,
        features=features,
        connectors=max(_int(values.get(CONNECTORS_KEY), 1), 1),
        known=True,
    )
