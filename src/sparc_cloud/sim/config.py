"""The simulator's behaviour model and fault scenarios (pydantic), loadable from TOML or JSON.

All durations are the real services' seconds; the simulator multiplies them by `time_scale`."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from sparc_cloud import defaults
from sparc_cloud.backends.registry_fields import SIM_CONFIG_MODULES, ProviderSimFields
from sparc_cloud.errors import ConfigError
from sparc_cloud.sim.specs import LimitSpec
from sparc_cloud.terminal import clip

# Where faults can be scripted: each provider's endpoints, and the token endpoints all logins share.
ENDPOINTS: tuple[str, ...] = (*(e for m in SIM_CONFIG_MODULES for e in m.FAULT_ENDPOINTS), "oauth.token")
# Responses only some endpoints answer (e.g. a task created and then its answer lost) -> those endpoints.
RESPONSE_ENDPOINTS: dict[str, tuple[str, ...]] = {}
for _module in SIM_CONFIG_MODULES:
    for _response, _endpoint in _module.RESPONSE_ENDPOINTS.items():
        RESPONSE_ENDPOINTS[_response] = (*RESPONSE_ENDPOINTS.get(_response, ()), _endpoint)
FAULT_RESPONSES = (
    "400", "401", "403", "404", "500", "502", "503", "504", "429", "quota-daily", "capacity", "truncated",
    "malformed", "empty", "error-200", "reset", "huge", *RESPONSE_ENDPOINTS,
)
__all__ = ["ENDPOINTS", "FAULT_RESPONSES", "Fault", "LimitSpec", "SimConfig", "TaskScript", "load_scenario"]


def _check_response(value: str) -> str:
    base = value.split(":", 1)[0]
    if base not in FAULT_RESPONSES:
        raise ValueError(f"unknown fault response {value!r}; use one of {', '.join(FAULT_RESPONSES)} "
                         "(429 may carry a delay, e.g. '429:2s')")
    return value


class Fault(BaseModel):
    """Answer matching calls with faults: a scripted sequence from the `at_call`-th matching call, or
    each matching call with `probability` (at most `max_count` times)."""

    model_config = ConfigDict(extra="forbid")

    endpoint: str
    model: str | None = None
    at_call: int | None = Field(default=None, ge=1)
    responses: list[str] = Field(min_length=1)
    probability: float | None = Field(default=None, gt=0, le=1)
    max_count: int | None = Field(default=None, ge=1)

    @field_validator("endpoint")
    @classmethod
    def _endpoint(cls, value: str) -> str:
        if value not in ENDPOINTS:
            raise ValueError(f"unknown endpoint {value!r}; use one of {', '.join(ENDPOINTS)}")
        return value

    @field_validator("responses")
    @classmethod
    def _known(cls, values: list[str]) -> list[str]:
        return [_check_response(v) for v in values]

    @model_validator(mode="after")
    def _only_where_they_apply(self) -> Fault:
        for response in self.responses:
            only = RESPONSE_ENDPOINTS.get(response.split(":", 1)[0])
            if only is not None and self.endpoint not in only:
                raise ValueError(f"{response} applies to endpoint {' and '.join(only)} only")
        return self


class TaskScript(BaseModel):
    """How the N-th created cloud task (1-based) ends."""

    model_config = ConfigDict(extra="forbid")

    index: int = Field(ge=1)
    outcome: Literal["stuck", "failed", "cancelled"]
    error_code: str = "internal_error"
    error_message: str = "The task container exited unexpectedly."


def _default_latency() -> dict[str, tuple[float, float]]:
    return {**{k: v for m in SIM_CONFIG_MODULES for k, v in m.LATENCY.items()}, "*": (10.0, 20.0)}


def _default_limits() -> dict[str, LimitSpec]:
    return {name: LimitSpec(per_minute=rpm, burst=burst) for m in SIM_CONFIG_MODULES
            for name, (rpm, burst) in m.LIMITS.items()}


class SimConfig(ProviderSimFields):
    """Everything the simulator does, with the runbook's figures as defaults (each simulated provider's own
    fields come from `sim/<provider>_config.py`)."""

    model_config = ConfigDict(extra="forbid")

    seed: int = defaults.SIM_SEED
    time_scale: float = Field(default=defaults.SIM_TIME_SCALE, gt=0, le=10)
    latency: dict[str, tuple[float, float]] = Field(default_factory=_default_latency)
    limits: dict[str, LimitSpec] = Field(default_factory=_default_limits)
    enforce_limits: bool = True
    faults: list[Fault] = Field(default_factory=list)
    tasks: list[TaskScript] = Field(default_factory=list)

    def latency_for(self, model: str) -> tuple[float, float]:
        """The latency range of a model (or of what a kind names instead, e.g. a task's)."""
        return self.latency.get(model) or self.latency.get("*") or (1.0, 2.0)


def load_scenario(path: Path, base: SimConfig | None = None) -> SimConfig:
    """Read a scenario file (TOML or JSON) on top of `base` (defaults when None)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"Cannot read the scenario file {path}: {exc.strerror}.") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"The scenario file {path} is not UTF-8 text ({exc.reason} at byte {exc.start}). Save it "
                          "as UTF-8.") from None
    try:
        data = json.loads(text) if path.suffix == ".json" else tomllib.loads(text)
    except (ValueError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"The scenario file {path} is not valid {path.suffix.lstrip('.') or 'TOML'}: {exc}") from None
    merged = {**(base.model_dump() if base else {}), **data}
    try:
        return SimConfig.model_validate(merged)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ConfigError(f"The scenario file {path} is invalid at {where}: {clip(str(first['msg']), 400)}.") from None
