"""Settings from `SPARC_*` environment variables and `.env` (pydantic-settings).

Precedence, highest first: command-line flags (the CLI passes them as overrides), the environment /
`.env`, then the project file, then the defaults (`defaults.py`, and each provider's in its settings fragment). Credential locations
follow `HOME` at the time the settings are read, so tests and users can point them anywhere.

Every URL setting is checked when the settings are read (scheme, host, port), so a URL that cannot
work stops the command at once with exit 2, naming the setting."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from sparc_cloud import defaults
from sparc_cloud.backends.registry_fields import SETTINGS_MODULES, ProviderSettings
from sparc_cloud.settings_fields import check_url, env_names_in, setting_name_in

# Each provider's list prices, USD per million tokens (input, output), used only for estimates.
DEFAULT_PRICES: dict[str, tuple[float, float]] = {k: v for m in SETTINGS_MODULES for k, v in m.PRICES.items()}
# Settings read from more than their `SPARC_` name (the official CLIs' own variables), in precedence order.
ALIASES: dict[str, tuple[str, ...]] = {k: v for m in SETTINGS_MODULES for k, v in m.ALIASES.items()}
URL_FIELDS: tuple[str, ...] = tuple(f for m in SETTINGS_MODULES for f in m.URL_FIELDS)
_SECRET_FIELDS = {f for m in SETTINGS_MODULES for f in m.SECRET_FIELDS}
__all__ = ["ALIASES", "DEFAULT_PRICES", "URL_FIELDS", "Settings", "check_url", "describe_settings_error",
           "env_names", "load_settings", "setting_name"]


def env_names(field: str) -> tuple[str, ...]:
    """The environment variables that set a settings field."""
    return env_names_in(ALIASES, field)


def setting_name(field: str) -> str:
    """The variable that set `field` in this environment (else its `SPARC_` name)."""
    return setting_name_in(ALIASES, field)


class Settings(ProviderSettings, BaseSettings):
    """Every setting sparc-cloud reads; `.env.example` documents each one. The providers' own settings come
    from their fragments (`backends/registry_fields.py` `ProviderSettings`)."""

    model_config = SettingsConfigDict(
        env_prefix="SPARC_", env_file=".env", env_file_encoding="utf-8", extra="ignore", populate_by_name=True
    )

    # --- Retry and timing ---
    http_timeout_s: float = Field(default=defaults.HTTP_TIMEOUT_S, gt=0)
    retry_max_attempts: int = Field(default=defaults.RETRY_MAX_ATTEMPTS, ge=1)
    retry_deadline_s: float = Field(default=defaults.RETRY_DEADLINE_S, gt=0)
    retry_initial_s: float = Field(default=defaults.RETRY_INITIAL_S, gt=0)
    retry_max_wait_s: float = Field(default=defaults.RETRY_MAX_WAIT_S, gt=0)
    agent_timeout_s: float = Field(default=defaults.AGENT_TIMEOUT_S, gt=0)
    run_deadline_s: float | None = Field(default=None, gt=0)

    # --- Run ---
    concurrency: int = Field(default=defaults.CONCURRENCY, ge=1, le=512)
    output_dir: Path | None = None
    sim_time_scale: float = Field(default=defaults.SIM_TIME_SCALE, gt=0, le=10)
    sim_seed: int = defaults.SIM_SEED
    # A simulator already running (`sparc-cloud sim serve --write-creds DIR`) for --backend sim to use instead of
    # starting one in the process: its tasks outlive a killed run, so resumes re-attach to them.
    sim_url: str | None = None
    sim_creds: Path | None = None

    # --- Cost estimates: USD per million tokens (input, output); SPARC_PRICES='{"model": [in, out]}' ---
    prices: dict[str, tuple[float, float]] = Field(default_factory=lambda: dict(DEFAULT_PRICES))

    @field_validator("prices")
    @classmethod
    def _prices(cls, value: dict[str, tuple[float, float]]) -> dict[str, tuple[float, float]]:
        for model, (price_in, price_out) in value.items():
            if price_in < 0 or price_out < 0:
                raise ValueError(f"the price of {model!r} is negative")
        return value


def describe_settings_error(exc: Exception) -> str:
    """One paragraph naming the setting that is wrong and what it should be, for a ValidationError or a
    pydantic-settings SettingsError (a value that is not JSON where JSON is expected). Never echoes a secret."""
    if isinstance(exc, ValidationError):
        first = exc.errors()[0]
        loc = [str(p) for p in first["loc"]]
        field = next((f for f in Settings.model_fields if f in loc or any(n in loc for n in env_names(f))),
                     loc[0] if loc else "?")
        name = setting_name(field)
        msg = str(first["msg"]).removeprefix("Value error, ")
        where = f" (at {'.'.join(loc[1:])})" if len(loc) > 1 else ""
        shown = "" if field in _SECRET_FIELDS else f" (got {_short(first.get('input'))})"
        if field in URL_FIELDS:
            shown = ""  # the message quotes the URL already
        return (f"setting {name} is invalid{where}: {msg}{shown}. Fix it in the environment or .env "
                f"(.env.example describes every setting).")
    text = str(exc)
    field = text.split('"')[1] if text.count('"') >= 2 else "?"
    name = setting_name(field)
    example = ' e.g. {"MODEL": [1.25, 10.0]}' if field == "prices" else ""
    return (f"setting {name} is invalid: its value is not valid JSON{example}. Fix it in the environment or .env "
            "(.env.example describes every setting).")


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "...'"


def load_settings(**overrides: Any) -> Settings:
    """Settings from the environment, with `overrides` (command-line flags, None = not given) on top.

    Raises ValidationError / SettingsError like `Settings()`; `describe_settings_error` words them."""
    base = Settings()
    updates = {k: v for k, v in overrides.items() if v is not None}
    if not updates:
        return base
    return Settings.model_validate({**base.model_dump(), **updates})
