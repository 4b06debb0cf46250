"""The policy language: what a site does with each DR signal, as a validated model."""

from __future__ import annotations

from importlib import resources
from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from policies.validation import validate_yaml


def _share(value: object) -> object:
    """Accept ``50%`` as well as ``0.5``: site owners write percentages."""
    if isinstance(value, str) and value.strip().endswith("%"):
        try:
            return float(value.strip()[:-1]) / 100
        except ValueError:
            return value
    return value


Share = Annotated[float, BeforeValidator(_share), Field(ge=0, le=1)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SimpleRule(_Strict):
    """OpenADR SIMPLE level -> share of site capacity left for EV charging."""

    levels: dict[int, Share] = Field(
        default_factory=lambda: {0: 1.0, 1: 0.5, 2: 0.25, 3: 0.0}
    )

    def share(self, level: float) -> float:
        """The share for a level; a level above every configured one gets the highest's share."""
        known = sorted(self.levels)
        wanted = round(level)
        for candidate in reversed(known):
            if candidate <= wanted:
                return self.levels[candidate]
        return self.levels[known[0]]


class AllocationRule(_Strict):
    strategy: Literal["fair"] = "fair"
    min_current_a: float = Field(default=6.0, ge=0, le=80)


class Policy(_Strict):
    name: str
    description: str = ""
    simple: SimpleRule = Field(default_factory=SimpleRule)
    allocation: AllocationRule = Field(default_factory=AllocationRule)
    opt_out_unsupported: bool = True

    @property
    def handled_signals(self) -> frozenset[str]:
        return frozenset({"SIMPLE"})


PRESETS = ("default",)


def preset_text(name: str) -> str:
    """The YAML of a preset shipped with the package."""
    if name not in PRESETS:
        raise KeyError(name)
    return resources.files("policies").joinpath("presets", f"{name}.yaml").read_text("utf-8")


def parse_policy(text: str, source: str) -> Policy:
    return validate_yaml(text, source, Policy)
