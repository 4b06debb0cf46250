"""The site configuration (YAML), validated before anything starts."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from policies.fleet import Circuit, Site, StationInfo
from policies.model import PRESETS, Policy, parse_policy, preset_text
from policies.validation import InvalidDocument, KeyPath, Problem, parse_yaml, validate_yaml


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class VenSection(_Section):
    vtn_url: str
    ven_name: str = Field(min_length=1)
    resource_id: str | None = None  # the site's name in reports; defaults to ven_name
    poll_retry_max_s: float = Field(default=60, gt=0)

    @field_validator("vtn_url")
    @classmethod
    def _http(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value


class ConnectorSection(_Section):
    id: int = Field(ge=1)
    max_current_a: float = Field(gt=0, le=500)  # per phase, where lower than the station's


class StationSection(_Section):
    id: str = Field(min_length=1)
    max_current_a: float | None = Field(default=None, gt=0, le=500)
    phases: Literal[1, 3] | None = None
    circuit: str | None = None  # the site.circuits id feeding it; none: the connection itself
    phase: Literal["L1", "L2", "L3"] | None = None  # the line a single-phase station is on
    max_power_kw: float | None = Field(default=None, gt=0)
    connectors: tuple[ConnectorSection, ...] = ()


class OcppSection(_Section):
    host: str = "127.0.0.1"
    port: int = Field(default=9000, ge=0, le=65535)
    # When empty, any station id is accepted; otherwise only these.
    stations: tuple[StationSection, ...] = ()
    call_timeout_s: float = Field(default=10, gt=0)
    retry_s: float = Field(default=5, gt=0)
    default_max_current_a: float = Field(default=32, gt=0, le=500)
    # Asked of every station at boot (MeterValueSampleInterval); 0 keeps the station's own.
    # Many ship with 60 s or more, which leaves the measured load a minute behind.
    meter_interval_s: int = Field(default=10, ge=0, le=3600)


class CircuitSection(_Section):
    """A panel or feeder; circuits may nest."""

    id: str = Field(min_length=1)
    max_current_a: float | None = Field(default=None, gt=0)  # per phase
    max_power_kw: float | None = Field(default=None, gt=0)
    circuits: tuple[CircuitSection, ...] = ()


class SiteSection(_Section):
    capacity_kw: float = Field(gt=0)
    voltage_v: float = Field(default=230, gt=0, le=1000)
    phases: Literal[1, 3] = 3
    max_current_a: float | None = Field(default=None, gt=0)  # per phase at the connection
    circuits: tuple[CircuitSection, ...] = ()

    def flat_circuits(self) -> list[tuple[CircuitSection, str | None, KeyPath]]:
        """Every circuit with its parent's id and its key path in the file."""
        found: list[tuple[CircuitSection, str | None, KeyPath]] = []

        def walk(items: tuple[CircuitSection, ...], parent: str | None, path: KeyPath) -> None:
            for index, circuit in enumerate(items):
                here = (*path, "circuits", index)
                found.append((circuit, parent, here))
                walk(circuit.circuits, circuit.id, here)

        walk(self.circuits, None, ("site",))
        return found


class StorageSection(_Section):
    path: str = "var/drbridge.db"


class TelemetrySection(_Section):
    interval_s: int = Field(default=60, ge=1, le=3600)
    # A station silent for longer no longer counts towards the measured site load.
    stale_after_s: float = Field(default=180, gt=0)


class ConfigModel(_Section):
    ven: VenSection
    ocpp: OcppSection = Field(default_factory=OcppSection)
    site: SiteSection
    policy: str = "default"
    storage: StorageSection = Field(default_factory=StorageSection)
    telemetry: TelemetrySection = Field(default_factory=TelemetrySection)


@dataclass(frozen=True)
class Config:
    """A loaded configuration: the validated model, its policy, and resolved paths."""

    model: ConfigModel
    policy: Policy
    source: Path
    storage_path: Path

    @property
    def site(self) -> Site:
        s = self.model.site
        circuits = tuple(
            Circuit(c.id, parent, c.max_current_a,
                    None if c.max_power_kw is None else c.max_power_kw * 1000)
            for c, parent, _ in s.flat_circuits()
        )
        return Site(capacity_w=s.capacity_kw * 1000, voltage_v=s.voltage_v, phases=s.phases,
                    max_current_a=s.max_current_a, circuits=circuits)

    @property
    def resource_id(self) -> str:
        return self.model.ven.resource_id or self.model.ven.ven_name

    @cached_property
    def _listed(self) -> dict[str, StationSection]:
        return {s.id: s for s in self.model.ocpp.stations}

    def station_info(self, station_id: str) -> StationInfo:
        # Called per message and per plan for every station: no work beyond a lookup.
        info = self._infos.get(station_id)
        if info is None:
            info = self._infos[station_id] = self._make_station_info(station_id)
        return info

    @cached_property
    def _infos(self) -> dict[str, StationInfo]:
        return {}

    def _make_station_info(self, station_id: str) -> StationInfo:
        listed = self._listed.get(station_id)
        site = self.model.site
        return StationInfo(
            station_id=station_id,
            phases=(listed.phases if listed and listed.phases else site.phases),
            voltage_v=site.voltage_v,
            max_current_a=(
                listed.max_current_a
                if listed and listed.max_current_a
                else self.model.ocpp.default_max_current_a
            ),
            circuit=listed.circuit if listed else None,
            phase=int(listed.phase[1]) if listed and listed.phase else 1,
            max_power_w=listed.max_power_kw * 1000 if listed and listed.max_power_kw else None,
            connector_max_a=tuple((c.id, c.max_current_a) for c in listed.connectors)
            if listed else (),
        )

    def accepts_station(self, station_id: str) -> bool:
        return not self._listed or station_id in self._listed


def _load_policy(name: str, base: Path, source: str, lines: dict) -> Policy:
    if name in PRESETS:
        return parse_policy(preset_text(name), f"<preset {name}>")
    path = (base / name).resolve()
    if not path.is_file():
        raise InvalidDocument(source, [Problem(
            ("policy",), lines.get(("policy",)),
            f"{name!r} is neither a preset ({', '.join(PRESETS)}) nor a policy file",
        )])
    return parse_policy(path.read_text("utf-8"), str(path))


def _tree_problems(model: ConfigModel, lines: dict[KeyPath, int]) -> list[Problem]:
    """What a valid schema can still get wrong about the site's tree."""
    problems: list[Problem] = []
    seen: set[str] = set()
    for circuit, _, path in model.site.flat_circuits():
        if circuit.id in seen:
            problems.append(Problem((*path, "id"), lines.get((*path, "id")),
                                    f"circuit id {circuit.id!r} is used twice; give each its own"))
        seen.add(circuit.id)
    for index, station in enumerate(model.ocpp.stations):
        path: KeyPath = ("ocpp", "stations", index)
        if station.circuit is not None and station.circuit not in seen:
            known = ", ".join(sorted(seen)) or "none are defined under site.circuits"
            problems.append(Problem((*path, "circuit"), lines.get((*path, "circuit")),
                                    f"unknown circuit {station.circuit!r} (known: {known})"))
        phases = station.phases or model.site.phases
        if station.phase is not None and phases != 1:
            problems.append(Problem((*path, "phase"), lines.get((*path, "phase")),
                                    "only a single-phase station (phases: 1) sits on one line"))
    return problems


def load_config_text(text: str, source: Path) -> Config:
    model = validate_yaml(text, str(source), ConfigModel)
    _, lines = parse_yaml(text, str(source))
    problems = _tree_problems(model, lines)
    if problems:
        raise InvalidDocument(str(source), problems)
    base = source.resolve().parent
    policy = _load_policy(model.policy, base, str(source), lines)
    storage = Path(model.storage.path)
    return Config(
        model=model,
        policy=policy,
        source=source,
        storage_path=storage if storage.is_absolute() else base / storage,
    )


def load_config(path: Path) -> Config:
    """Read and validate a config file and the policy it names; raises InvalidDocument."""
    try:
        text = path.read_text("utf-8")
    except OSError as error:
        raise InvalidDocument(str(path), [Problem((), None, f"cannot read: {error.strerror}")]) \
            from None
    return load_config_text(text, path)
