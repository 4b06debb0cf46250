"""The site configuration (YAML), validated before anything starts."""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from policies.fleet import Site, StationInfo
from policies.model import PRESETS, Policy, parse_policy, preset_text
from policies.validation import InvalidDocument, Problem, parse_yaml, validate_yaml
from ven.client import TlsSettings, transport_warnings


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TlsSection(_Section):
    """HTTPS towards the VTN: OpenADR 2.0b asks for TLS 1.2 with client certificates."""

    cert: str | None = None  # the VEN's client certificate (PEM)
    key: str | None = None  # its private key (PEM)
    key_passphrase_env: str | None = None  # environment variable holding the key's passphrase
    ca_file: str | None = None  # CA bundle for the VTN's certificate (default: the system's)
    vtn_fingerprint: str | None = None  # pin: SHA-256 of the VTN's certificate, or the short form
    check_hostname: bool = True
    xml_signatures: bool = False  # sign every message; accept only VTN messages signed by
    vtn_signing_fingerprint: str | None = None  # this certificate (default: vtn_fingerprint)

    @model_validator(mode="after")
    def _consistent(self) -> TlsSection:
        if bool(self.cert) != bool(self.key):
            raise ValueError("cert and key go together: give both or neither")
        if self.xml_signatures and not (self.cert and self.key):
            raise ValueError("xml_signatures needs cert and key to sign with")
        if self.xml_signatures and not (self.vtn_signing_fingerprint or self.vtn_fingerprint):
            raise ValueError("xml_signatures needs vtn_signing_fingerprint (or vtn_fingerprint)"
                             " to check the VTN's signatures against")
        return self


class VenSection(_Section):
    vtn_url: str
    ven_name: str = Field(min_length=1)
    resource_id: str | None = None  # the site's name in reports; defaults to ven_name
    poll_retry_max_s: float = Field(default=60, gt=0)
    # eiTarget: resource ids and group ids the VTN may name, each mapped to the stations it
    # means; party_id names the whole site. Events naming none of these (nor the VEN, nor
    # resource_id) are not for this site: opted out of and not acted on.
    resources: dict[str, tuple[str, ...]] = {}
    groups: dict[str, tuple[str, ...]] = {}
    party_id: str | None = None
    tls: TlsSection | None = None

    @model_validator(mode="after")
    def _tls_needs_https(self) -> VenSection:
        if self.tls is not None and not self.vtn_url.startswith("https://"):
            raise ValueError("ven.tls is given but vtn_url is not https://")
        return self

    @field_validator("vtn_url")
    @classmethod
    def _http(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value


class StationSection(_Section):
    id: str = Field(min_length=1)
    max_current_a: float | None = Field(default=None, gt=0, le=500)
    phases: Literal[1, 3] | None = None


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


class SiteSection(_Section):
    capacity_kw: float = Field(gt=0)
    voltage_v: float = Field(default=230, gt=0, le=1000)
    phases: Literal[1, 3] = 3


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
        return Site(capacity_w=s.capacity_kw * 1000, voltage_v=s.voltage_v, phases=s.phases)

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
        )

    def target_stations(self, resources: Iterable[str], groups: Iterable[str]) -> frozenset[str]:
        """The stations an event's matched resource ids and group ids stand for."""
        ven = self.model.ven
        stations: set[str] = set()
        for resource in resources:
            stations.update(ven.resources.get(resource, ()))
        for group in groups:
            stations.update(ven.groups.get(group, ()))
        return frozenset(stations)

    @cached_property
    def tls(self) -> TlsSettings | None:
        """ven.tls with paths resolved and the passphrase read from its variable."""
        tls = self.model.ven.tls
        if tls is None:
            return None
        base = self.source.resolve().parent

        def path(value: str | None) -> str | None:
            return None if value is None else str(base / value)

        passphrase = os.environ.get(tls.key_passphrase_env) if tls.key_passphrase_env else None
        return TlsSettings(
            cert=path(tls.cert), key=path(tls.key), passphrase=passphrase,
            ca_file=path(tls.ca_file), vtn_fingerprint=tls.vtn_fingerprint,
            check_hostname=tls.check_hostname, xml_signatures=tls.xml_signatures,
            vtn_signing_fingerprint=tls.vtn_signing_fingerprint,
        )

    def warnings(self) -> list[str]:
        """What is valid but unsafe in this configuration."""
        return transport_warnings(self.model.ven.vtn_url, self.tls)

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


def _check_tls_files(model: ConfigModel, base: Path, source: str, lines: dict) -> None:
    tls = model.ven.tls
    if tls is None:
        return
    problems = []
    for key in ("cert", "key", "ca_file"):
        value = getattr(tls, key)
        if value is not None and not (base / value).is_file():
            where = ("ven", "tls", key)
            problems.append(Problem(where, lines.get(where),
                                    f"no such file {value!r} (relative to the config's folder)"))
    if tls.key_passphrase_env and tls.key_passphrase_env not in os.environ:
        where = ("ven", "tls", "key_passphrase_env")
        problems.append(Problem(where, lines.get(where),
                                f"environment variable {tls.key_passphrase_env} is not set"))
    if problems:
        raise InvalidDocument(source, problems)


def load_config_text(text: str, source: Path) -> Config:
    model = validate_yaml(text, str(source), ConfigModel)
    _, lines = parse_yaml(text, str(source))
    base = source.resolve().parent
    policy = _load_policy(model.policy, base, str(source), lines)
    _check_tls_files(model, base, str(source), lines)
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
