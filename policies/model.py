"""The policy language: what a site does with each DR signal, as a validated model."""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources
from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    PlainValidator,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError


def _share(value: object) -> object:
    """Accept ``50%`` as well as ``0.5``: site owners write percentages."""
    if isinstance(value, str) and value.strip().endswith("%"):
        try:
            return float(value.strip()[:-1]) / 100
        except ValueError:
            return value
    return value


Share = Annotated[float, BeforeValidator(_share), Field(ge=0, le=1)]


@dataclass(frozen=True)
class Limit:
    """A limit for EV charging: a share of the site capacity, or an absolute power."""

    share: float | None = None
    watts: float | None = None

    def watts_of(self, capacity_w: float) -> float:
        if self.watts is not None:
            return min(self.watts, capacity_w)
        return (self.share or 0.0) * capacity_w

    def describe(self) -> str:
        if self.watts is not None:
            return f"{self.watts / 1000:g} kW"
        return f"{(self.share or 0.0):.0%} of capacity"


_POWER = re.compile(r"^\s*([0-9]+(?:\.[0-9]*)?)\s*(W|kW|MW)\s*$")
_POWER_FACTOR = {"W": 1.0, "kW": 1e3, "MW": 1e6}


def _limit(value: object) -> Limit:
    """``50%``, ``0.5`` (shares) or ``20 kW``, ``7400 W`` (absolute)."""
    if isinstance(value, Limit):
        return value
    if isinstance(value, str):
        text = value.strip()
        match = _POWER.match(text)
        if match:
            return Limit(watts=float(match.group(1)) * _POWER_FACTOR[match.group(2)])
        value = _share(text)
        if isinstance(value, str):
            raise PydanticCustomError(
                "limit", "expected a share (50% or 0.5) or a power (20 kW, 7400 W)")
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise PydanticCustomError(
            "limit", "expected a share (50% or 0.5) or a power (20 kW, 7400 W)")
    if value < 0:
        raise PydanticCustomError("greater_than_equal",
                                  "Input should be greater than or equal to 0")
    if value > 1:
        raise PydanticCustomError(
            "less_than_equal",
            "Input should be less than or equal to 1 (a share; write 20 kW for a power)")
    return Limit(share=float(value))


LimitSpec = Annotated[
    Limit, PlainValidator(_limit),
    PlainSerializer(lambda limit: limit.describe(), return_type=str),
]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)


def _level_limit(levels: dict[int, Limit], level: float) -> Limit:
    """A level above every configured one gets the highest's limit; below, the lowest's."""
    known = sorted(levels)
    wanted = round(level)
    for candidate in reversed(known):
        if candidate <= wanted:
            return levels[candidate]
    return levels[known[0]]


class SimpleRule(_Strict):
    """OpenADR SIMPLE level -> share of site capacity, or a power, left for EV charging."""

    levels: dict[int, LimitSpec] = Field(
        default_factory=lambda: {0: Limit(1.0), 1: Limit(0.5), 2: Limit(0.25), 3: Limit(0.0)},
        min_length=1,
    )

    def limit(self, level: float) -> Limit:
        return _level_limit(self.levels, level)

    def share(self, level: float) -> float | None:
        """The share for a level (None when that level is an absolute power)."""
        return self.limit(level).share


class PriceTier(_Strict):
    above: float  # this price or more (in the signal's currency per kWh)...
    limit: LimitSpec  # ...limits EV charging to this


class Cheapest(_Strict):
    """Charge in the cheapest intervals of an event's price curve, hold back in the rest."""

    charge_in: Share  # the cheapest intervals making up this share of the curve's duration
    otherwise: LimitSpec  # the limit in the other intervals (raised to meet known needs)


class PriceRule(_Strict):
    """ELECTRICITY_PRICE: the dearer the energy, the lower the limit."""

    tiers: tuple[PriceTier, ...] = ()
    cheapest: Cheapest | None = None

    @model_validator(mode="after")
    def _something(self) -> PriceRule:
        if not self.tiers and self.cheapest is None:
            raise ValueError("give `tiers`, `cheapest`, or both")
        return self

    @field_validator("tiers")
    @classmethod
    def _ascending(cls, tiers: tuple[PriceTier, ...]) -> tuple[PriceTier, ...]:
        prices = [tier.above for tier in tiers]
        if prices != sorted(prices) or len(set(prices)) != len(prices):
            raise ValueError("list tiers by rising `above` price, each price once")
        return tiers

    def tier(self, price: float) -> PriceTier | None:
        """The tier a price falls into; None below the cheapest threshold (no limit)."""
        chosen = None
        for tier in self.tiers:
            if price >= tier.above:
                chosen = tier
        return chosen


Unit = Literal["W", "kW", "MW"]


class DispatchRule(_Strict):
    """LOAD_DISPATCH: a setpoint (absolute site power) or a delta (shed from the baseline)."""

    setpoint: bool = True
    delta: bool = True
    unit: Unit = "kW"  # for signals that name no unit of their own
    # Site load the bridge does not steer (buildings), taken off a setpoint before EV charging.
    other_load_kw: float = Field(default=0, ge=0)


class LoadControlRule(_Strict):
    """LOAD_CONTROL signal types the site acts on."""

    capacity: bool = True  # x-loadControlCapacity: 0..1 of normal (site capacity)
    percent_offset: bool = True  # x-loadControlPercentOffset: -20 means 20 % below normal
    setpoint: bool = True  # x-loadControlSetpoint: absolute power, as LOAD_DISPATCH setpoint
    unit: Unit = "kW"
    # x-loadControlLevelOffset: offset from normal (0) -> limit; none: the type is not handled
    level_offset: dict[int, LimitSpec] | None = None

    def level_limit(self, offset: float) -> Limit | None:
        if not self.level_offset:
            return None
        return _level_limit(self.level_offset, offset)


class CapacityLimitRule(_Strict):
    """IMPORT_CAPACITY_LIMIT (OpenADR 3): the utility caps the site's import over time (a
    dynamic operating envelope, a grid-aware charging profile); EV charging keeps under it."""

    unit: Unit = "kW"  # for signals that name no unit of their own
    # Site load the bridge does not steer (buildings), taken off the cap before EV charging.
    other_load_kw: float = Field(default=0, ge=0)


class Group(_Strict):
    """Stations that share a priority: ``fleet`` before ``visitors``."""

    name: str = Field(min_length=1)
    stations: tuple[str, ...] = ()  # ids; a trailing * matches a prefix (``DEPOT-*``)
    rank: int = 0  # lower ranks are admitted first when not all sessions fit
    weight: float = Field(default=1, gt=0, le=100)  # share of the headroom relative to others
    exempt: bool = False  # never shed for DR (still within the site's physical limits)

    def matches(self, station_id: str) -> bool:
        for pattern in self.stations:
            if pattern.endswith("*") and station_id.startswith(pattern[:-1]):
                return True
            if pattern == station_id:
                return True
        return False


class DemandAware(_Strict):
    """A session drawing less than its limit gives the rest to others, keeping a margin."""

    enabled: bool = False
    margin_a: float = Field(default=2, ge=0, le=32)  # per phase, above the measured draw


class Rotation(_Strict):
    """When not every session fits at its minimum, paused ones take turns."""

    enabled: bool = True
    period_s: float = Field(default=1800, gt=0)  # every waiting session charges within this
    # No session switches on or off more often than this (protects EV contactors).
    guard_s: float = Field(default=300, ge=0)


# IEC 61851-1: the lowest current a control pilot may offer; below it an EV does not charge
PILOT_MIN_A = 6.0


class AllocationRule(_Strict):
    strategy: Literal["fair", "priority"] = "fair"
    min_current_a: float = Field(default=6.0, ge=0, le=80)
    # What a paused session gets: zero (0 A), or minimum: min_current_a wherever the room
    # left after every charging session's minimum still takes it (EVs that fall asleep
    # at 0 A). A pause for the voltage, and an operator's, stay at 0 A.
    pause: Literal["zero", "minimum"] = "zero"
    # After a pause a session gets the minimum current this long before its share
    resume_s: float = Field(default=60, gt=0, le=900)
    groups: tuple[Group, ...] = ()
    demand_aware: DemandAware = Field(default_factory=DemandAware)
    rotation: Rotation = Field(default_factory=Rotation)

    @field_validator("pause")
    @classmethod
    def _pilot_current(cls, pause: str, info: ValidationInfo) -> str:
        min_a = info.data.get("min_current_a")
        if pause == "minimum" and min_a is not None and min_a < PILOT_MIN_A:
            raise ValueError(
                f"minimum holds paused EVs at min_current_a, and {min_a:g} A is below "
                f"the {PILOT_MIN_A:g} A an EV can be offered (IEC 61851-1): set min_current_a "
                f"to {PILOT_MIN_A:g} or more, or use pause: zero")
        return pause

    @model_validator(mode="after")
    def _groups_for_priority(self) -> AllocationRule:
        if self.strategy == "priority" and not self.groups:
            raise ValueError("strategy priority needs `groups` (name, stations, rank, weight)")
        names = [g.name for g in self.groups]
        if len(set(names)) != len(names):
            raise ValueError("group names must be unique")
        return self

    def group_of(self, station_id: str) -> Group | None:
        for group in self.groups:
            if group.matches(station_id):
                return group
        return None


class Restore(_Strict):
    """Back to normal after an event without a rebound spike."""

    ramp_kw_per_min: float | None = Field(default=None, gt=0)  # none: no ramp
    step_s: float = Field(default=60, gt=0, le=3600)  # the ramp rises in steps this long
    random_window_s: float = Field(default=0, ge=0, le=3600)  # per-station random restore delay


class FailSafe(_Strict):
    """What the site does when it cannot trust what it knows."""

    vtn_silent_after_s: float | None = Field(default=None, gt=0)
    fleet_stale_after_s: float | None = Field(default=None, gt=0)
    limit: LimitSpec = Field(default_factory=lambda: Limit(share=0.5))
    # A station silent this long is counted at its last commanded limit and kept there.
    station_silent_after_s: float = Field(default=300, gt=0)


class OptOut(_Strict):
    """When the site declines an event, and says why."""

    unsupported: bool = True  # events with no signal this policy acts on
    # Opt out when the event asks for more shed than this share of the site capacity.
    shed_exceeds: Share | None = None
    # Opt out of SIMPLE-only events whose highest level is below this (emergencies only).
    simple_below: int | None = Field(default=None, ge=0)


def _curve_value(value: object) -> float | str:
    """A share (``50%``, ``0.5``) or ``min``: the minimum current of the allocation rule."""
    if isinstance(value, str) and value.strip().lower() == "min":
        return "min"
    value = _share(value)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise PydanticCustomError("share", "expected a share (50% or 0.5) or `min`")
    if not 0 <= value <= 1:
        raise PydanticCustomError("share", "a share lies between 0 (0%) and 1 (100%)")
    return float(value)


CurveValue = Annotated[float | str, PlainValidator(_curve_value)]
PerUnit = Annotated[float, Field(gt=0.5, lt=1.5)]


class OverVoltage(_Strict):
    """A surplus (PV exporting) lifts the feeder's voltage; charging absorbs it. Between
    ``start`` and ``full`` price signals give way, linearly, to a floor of the site's
    capacity; the site cap, the fail-safe and every other DR signal still hold."""

    start: PerUnit = 1.05  # pu: price signals begin to give way
    full: PerUnit = 1.08  # pu: price signals hold nothing back

    @model_validator(mode="after")
    def _ordered(self) -> OverVoltage:
        if self.full <= self.start:
            raise ValueError(f"full ({self.full:g} pu) must lie above start ({self.start:g} pu)")
        return self


class VoltageRule(_Strict):
    """Volt-watt: the measured voltage (per unit of ``site.voltage_v``) -> share of power."""

    scope: Literal["station", "site"] = "station"  # each station by its own voltage, or all
    phases: Literal["worst", "mean"] = "worst"  # the worst phase, or the mean of the phases
    # per unit -> share of the allowed power (or ``min``); linear between the points
    curve: dict[PerUnit, CurveValue] = Field(
        default_factory=lambda: {0.95: 1.0, 0.90: "min"}, min_length=1)
    pause_below: PerUnit | None = 0.88
    # Protection, not support: pauses above the chargers' rated voltage. Pausing a load
    # lifts an over-voltage further; ``over_voltage`` is the rule that helps the feeder.
    pause_above: PerUnit | None = None
    over_voltage: OverVoltage | None = None
    hysteresis: float = Field(default=0.01, ge=0, le=0.1)  # pu a restriction waits to ease
    hold_s: float = Field(default=60, ge=0)  # a restriction eases no sooner than this
    # each easing raises the share by at most this (none: straight to the curve); small
    # enough that one step moves the voltage less than the hysteresis band, it cannot
    # set off the restriction it eased
    ease_step: Share | None = 0.1
    stale_after_s: float = Field(default=120, gt=0)  # older readings hold, never ease
    # none: a restriction is held until fresh readings come; else lifted after this long
    release_after_s: float | None = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _thresholds(self) -> VoltageRule:
        low, high = min(self.curve), max(self.curve)
        if self.pause_below is not None and self.pause_below > low:
            raise ValueError(f"pause_below ({self.pause_below:g} pu) must not lie above the "
                             f"curve's lowest point ({low:g} pu)")
        if self.pause_above is not None and self.pause_above < high:
            raise ValueError(f"pause_above ({self.pause_above:g} pu) must not lie below the "
                             f"curve's highest point ({high:g} pu)")
        if self.over_voltage is not None and self.over_voltage.start < high:
            raise ValueError(f"over_voltage.start ({self.over_voltage.start:g} pu) must not "
                             f"lie below the curve's highest point ({high:g} pu)")
        if self.over_voltage is not None and self.pause_above is not None and \
                self.pause_above < self.over_voltage.full:
            raise ValueError(f"pause_above ({self.pause_above:g} pu) must not lie below "
                             f"over_voltage.full ({self.over_voltage.full:g} pu)")
        if self.release_after_s is not None and self.release_after_s < self.stale_after_s:
            raise ValueError("release_after_s must be at least stale_after_s")
        return self


class Policy(_Strict):
    name: str
    description: str = ""
    simple: SimpleRule | None = Field(default_factory=SimpleRule)
    electricity_price: PriceRule | None = None
    load_dispatch: DispatchRule | None = None
    load_control: LoadControlRule | None = None
    capacity_limit: CapacityLimitRule | None = None
    allocation: AllocationRule = Field(default_factory=AllocationRule)
    restore: Restore = Field(default_factory=Restore)
    failsafe: FailSafe = Field(default_factory=FailSafe)
    opt_out: OptOut = Field(default_factory=OptOut)
    voltage: VoltageRule | None = None  # volt-watt response to the measured voltage
    opt_out_unsupported: bool | None = None  # older spelling of opt_out.unsupported

    @property
    def opts_out_unsupported(self) -> bool:
        if self.opt_out_unsupported is not None:
            return self.opt_out_unsupported
        return self.opt_out.unsupported

    @property
    def handled_signals(self) -> frozenset[str]:
        names = set()
        if self.simple is not None:
            names.add("SIMPLE")
        if self.electricity_price is not None:
            names.add("ELECTRICITY_PRICE")
        if self.load_dispatch is not None:
            names.add("LOAD_DISPATCH")
        if self.load_control is not None:
            names.add("LOAD_CONTROL")
        if self.capacity_limit is not None:
            names.add("IMPORT_CAPACITY_LIMIT")
        return frozenset(names)

    def handles(self, name: str, signal_type: str) -> bool:
        """Whether a signal of this name and type drives a limit under this policy."""
        kind = signal_type.lower()
        if name == "SIMPLE":
            return self.simple is not None
        if name == "ELECTRICITY_PRICE":
            return self.electricity_price is not None
        if name == "IMPORT_CAPACITY_LIMIT":
            return self.capacity_limit is not None
        if name == "LOAD_DISPATCH" and self.load_dispatch is not None:
            rule = self.load_dispatch
            return (kind == "setpoint" and rule.setpoint) or (kind == "delta" and rule.delta)
        if name == "LOAD_CONTROL" and self.load_control is not None:
            rule = self.load_control
            return {
                "x-loadcontrolcapacity": rule.capacity,
                "x-loadcontrolpercentoffset": rule.percent_offset,
                "x-loadcontrolsetpoint": rule.setpoint,
                "x-loadcontrolleveloffset": bool(rule.level_offset),
            }.get(kind, False)
        return False


PRESETS = ("default", "price-responsive", "emergency-only", "fleet-depot")


def preset_text(name: str) -> str:
    """The YAML of a preset shipped with the package."""
    if name not in PRESETS:
        raise KeyError(name)
    return resources.files("policies").joinpath("presets", f"{name}.yaml").read_text("utf-8")


def parse_policy(text: str, source: str) -> Policy:
    # imported here: the planning process receives policies already parsed, and the YAML
    # parser is a few MB of its memory
    from policies.validation import validate_yaml

    return validate_yaml(text, source, Policy)
