"""The simulator's behaviour model and fault scenarios (pydantic), loadable from TOML or JSON.

All durations are the real services' seconds; the simulator multiplies them by `time_scale`."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from sparc_cloud import defaults
from sparc_cloud.clients import codex_settings, gemini_settings, openai_defaults
from sparc_cloud.errors import ConfigError

Endpoint = Literal[
    "gemini.generate", "gemini.load", "codex.create", "codex.poll", "codex.list", "codex.envs", "oauth.token",
    "openai.chat",
]
FAULT_RESPONSES = (
    "400", "401", "403", "404", "500", "502", "503", "504", "429", "quota-daily", "capacity", "truncated",
    "malformed", "empty", "error-200", "reset", "huge",
    # codex.create only: the task IS created, then the answer is lost (a 502, a reset, or no answer at all)
    "created-502", "created-reset", "created-timeout",
    # openai.chat only: a refinement answer whose diff `git apply --check` refuses
    "bad-diff",
)


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

    endpoint: Endpoint
    model: str | None = None
    at_call: int | None = Field(default=None, ge=1)
    responses: list[str] = Field(min_length=1)
    probability: float | None = Field(default=None, gt=0, le=1)
    max_count: int | None = Field(default=None, ge=1)

    @field_validator("responses")
    @classmethod
    def _known(cls, values: list[str]) -> list[str]:
        return [_check_response(v) for v in values]

    @model_validator(mode="after")
    def _created_only_on_create(self) -> Fault:
        if self.endpoint != "codex.create" and any(r.startswith("created-") for r in self.responses):
            raise ValueError("created-502 / created-reset / created-timeout apply to endpoint codex.create only")
        if self.endpoint != "openai.chat" and "bad-diff" in self.responses:
            raise ValueError("bad-diff applies to endpoint openai.chat only")
        return self


class TaskScript(BaseModel):
    """How the N-th created Codex task (1-based) ends."""

    model_config = ConfigDict(extra="forbid")

    index: int = Field(ge=1)
    outcome: Literal["stuck", "failed", "cancelled"]
    error_code: str = "internal_error"
    error_message: str = "The task container exited unexpectedly."


class LimitSpec(BaseModel):
    """A requests-per-minute limit with a burst."""

    model_config = ConfigDict(extra="forbid")

    per_minute: float = Field(gt=0)
    burst: int = Field(default=1, ge=1)


def _default_latency() -> dict[str, tuple[float, float]]:
    return {
        "gemini-2.5-flash": (15.0, 25.0),
        "gemini-2.5-pro": (20.0, 40.0),
        "codex-task": (30.0, 90.0),
        "*": (10.0, 20.0),
    }


def _default_limits() -> dict[str, LimitSpec]:
    return {
        "gemini-2.5-flash": LimitSpec(per_minute=gemini_settings.FLASH_LIMIT[0], burst=gemini_settings.FLASH_LIMIT[1]),
        "gemini-2.5-pro": LimitSpec(per_minute=gemini_settings.PRO_LIMIT[0], burst=gemini_settings.PRO_LIMIT[1]),
        "codex.create": LimitSpec(per_minute=codex_settings.CREATE_LIMIT[0], burst=codex_settings.CREATE_LIMIT[1]),
        "codex.poll": LimitSpec(per_minute=codex_settings.POLLS_PER_MINUTE, burst=codex_settings.POLL_BURST),
    }


class SimConfig(BaseModel):
    """Everything the simulator does, with the runbook's figures as defaults."""

    model_config = ConfigDict(extra="forbid")

    seed: int = defaults.SIM_SEED
    time_scale: float = Field(default=defaults.SIM_TIME_SCALE, gt=0, le=10)
    latency: dict[str, tuple[float, float]] = Field(default_factory=_default_latency)
    limits: dict[str, LimitSpec] = Field(default_factory=_default_limits)
    enforce_limits: bool = True
    gemini_token_life_s: float = Field(default=3000.0, gt=0)
    codex_token_life_s: float = Field(default=864000.0, gt=0)
    models: list[str] = Field(
        default_factory=lambda: [
            "gemini-2.5-flash", "gemini-2.5-pro", "gemini-2.5-flash-lite", "gemini-3-flash",
            "gemini-3-pro-preview", "gemini-3-flash-preview",
        ]
    )
    project_id: str = "sim-project-4242"
    # false: the Google account has no Code Assist tier yet; loadCodeAssist offers the free tier and the
    # client must onboardUser (a long-running operation, done after `onboard_polls` polls) first
    onboarded: bool = True
    onboard_polls: int = Field(default=2, ge=0)
    environments: list[dict[str, object]] = Field(
        default_factory=lambda: [
            {"id": "env_sim_memory_extension", "label": "memory-extension", "is_pinned": True, "task_count": 12},
            {"id": "env_sim_playground", "label": "playground", "is_pinned": False, "task_count": 3},
        ]
    )
    # OpenAI-compatible /v1: requests per minute per model (sent back in x-ratelimit-* headers), and the
    # models GET /v1/models lists (chat/completions answers any model name: local servers have any)
    chat_limit: LimitSpec = Field(default_factory=lambda: LimitSpec(per_minute=openai_defaults.LIMIT[0],
                                                                    burst=openai_defaults.LIMIT[1]))
    chat_models: list[str] = Field(default_factory=lambda: ["gpt-4.1", "gpt-4.1-mini", "llama3.1:8b"])
    faults: list[Fault] = Field(default_factory=list)
    tasks: list[TaskScript] = Field(default_factory=list)

    def latency_for(self, model: str) -> tuple[float, float]:
        """The latency range of a model (or of Codex tasks: `codex-task`)."""
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
        raise ConfigError(f"The scenario file {path} is invalid at {where}: {first['msg']}.") from None
