"""Settings from `SPARC_*` environment variables and `.env` (pydantic-settings).

Precedence, highest first: command-line flags (the CLI passes them as overrides), the environment /
`.env`, then the project file, then the defaults (all of them in `defaults.py`). Credential locations
follow `HOME` at the time the settings are read, so tests and users can point them anywhere.

Every URL setting is checked when the settings are read (scheme, host, port), so a URL that cannot
work stops the command at once with exit 2, naming the setting."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import AliasChoices, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from sparc_cloud import defaults

# Kept for importers; the figures live in defaults.py.
CODE_ASSIST_ENDPOINT = defaults.CODE_ASSIST_ENDPOINT
CODE_ASSIST_API_VERSION = defaults.CODE_ASSIST_API_VERSION
GEMINI_CODE_ASSIST_BASE = f"{defaults.CODE_ASSIST_ENDPOINT}/{defaults.CODE_ASSIST_API_VERSION}"
GEMINI_API_BASE = defaults.GEMINI_API_BASE
GOOGLE_TOKEN_URL = defaults.GOOGLE_TOKEN_URL
CODEX_BASE = defaults.CODEX_BASE
CODEX_REFRESH_URL = defaults.CODEX_REFRESH_URL
CODEX_CLIENT_ID = defaults.CODEX_CLIENT_ID

# Public list prices, USD per million tokens (input, output), used only for estimates. Code Assist and
# Codex Cloud are billed through subscriptions; these show what the same work costs at API prices.
DEFAULT_PRICES: dict[str, tuple[float, float]] = {
    "gemini-2.5-pro": (1.25, 10.0),
    "gemini-2.5-flash": (0.30, 2.50),
    "gemini-2.5-flash-lite": (0.10, 0.40),
    "codex": (1.25, 10.0),
}

PathStyle = Literal["auto", "wham", "api-codex", "runbook"]

# Settings read from more than their `SPARC_` name (the official CLIs' own variables), in precedence order.
ALIASES: dict[str, tuple[str, ...]] = {
    "gemini_api_key": ("SPARC_GEMINI_API_KEY", "GEMINI_API_KEY"),
    "gemini_api_base_url": ("SPARC_GEMINI_API_BASE_URL", "GOOGLE_GEMINI_BASE_URL"),
    "code_assist_endpoint": ("SPARC_CODE_ASSIST_ENDPOINT", "CODE_ASSIST_ENDPOINT"),
    "code_assist_api_version": ("SPARC_CODE_ASSIST_API_VERSION", "CODE_ASSIST_API_VERSION"),
    "google_cloud_project": ("SPARC_GOOGLE_CLOUD_PROJECT", "GOOGLE_CLOUD_PROJECT", "GOOGLE_CLOUD_PROJECT_ID"),
}
URL_FIELDS = ("gemini_base_url", "gemini_api_base_url", "code_assist_endpoint", "gemini_oauth_token_url",
              "codex_base_url", "codex_refresh_url")
_SECRET_FIELDS = {"gemini_api_key", "gemini_oauth_client_secret"}


def _alias(field: str) -> Any:
    return Field(default=None, validation_alias=AliasChoices(*ALIASES[field]))


def env_names(field: str) -> tuple[str, ...]:
    """The environment variables that set a settings field."""
    return ALIASES.get(field, ("SPARC_" + field.upper(),))


def setting_name(field: str) -> str:
    """The variable that set `field` in this environment (else its `SPARC_` name)."""
    names = env_names(field)
    return next((n for n in names if os.environ.get(n)), names[0])


def check_url(value: str, *, base: bool = True) -> str:
    """`value` if it can be an http(s) URL with a host and a valid port; else ValueError saying why."""
    text = value.strip()
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"{text!r} is not a URL ({exc})") from None
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"{text!r} is not an http(s) URL: it needs to start with https:// (or http://)")
    if not parts.hostname:
        raise ValueError(f"{text!r} has no host name")
    if port == 0:
        raise ValueError(f"{text!r} has port 0")
    if base and (parts.query or parts.fragment):
        raise ValueError(f"{text!r} is a base URL and must not carry a query or fragment")
    return text.rstrip("/") if base else text


def default_gemini_creds() -> Path:
    """`$GEMINI_CLI_HOME/.gemini/oauth_creds.json`, else `~/.gemini/oauth_creds.json`."""
    home = os.environ.get("GEMINI_CLI_HOME") or os.environ.get("HOME") or str(Path.home())
    return Path(home) / ".gemini" / "oauth_creds.json"


def default_codex_auth() -> Path:
    """`$CODEX_HOME/auth.json`, else `~/.codex/auth.json`."""
    codex_home = os.environ.get("CODEX_HOME")
    if codex_home:
        return Path(codex_home) / "auth.json"
    home = os.environ.get("HOME") or str(Path.home())
    return Path(home) / ".codex" / "auth.json"


class Settings(BaseSettings):
    """Every setting sparc-cloud reads; `.env.example` documents each one."""

    model_config = SettingsConfigDict(
        env_prefix="SPARC_", env_file=".env", env_file_encoding="utf-8", extra="ignore", populate_by_name=True
    )

    # --- Gemini ---
    # The Code Assist base URL. Unset: CODE_ASSIST_ENDPOINT + "/" + CODE_ASSIST_API_VERSION (gemini-cli's two
    # variables); a value with no path gets "/" + the API version.
    gemini_base_url: str | None = None
    code_assist_endpoint: str = Field(default=defaults.CODE_ASSIST_ENDPOINT,
                                      validation_alias=AliasChoices(*ALIASES["code_assist_endpoint"]))
    code_assist_api_version: str = Field(default=defaults.CODE_ASSIST_API_VERSION,
                                         validation_alias=AliasChoices(*ALIASES["code_assist_api_version"]))
    gemini_api_base_url: str = Field(default=defaults.GEMINI_API_BASE,
                                     validation_alias=AliasChoices(*ALIASES["gemini_api_base_url"]))
    gemini_api_key: SecretStr | None = _alias("gemini_api_key")
    gemini_creds: Path | None = None
    gemini_oauth_client_id: str | None = None
    gemini_oauth_client_secret: SecretStr | None = None
    gemini_oauth_token_url: str = defaults.GOOGLE_TOKEN_URL
    gemini_refresh_command: str = "gemini"
    google_cloud_project: str | None = _alias("google_cloud_project")
    gemini_fallback: bool = False

    # --- Codex ---
    codex_base_url: str = defaults.CODEX_BASE
    codex_path_style: PathStyle = "auto"
    codex_auth: Path | None = None
    codex_refresh: bool = False
    codex_refresh_url: str = defaults.CODEX_REFRESH_URL
    codex_oauth_client_id: str = defaults.CODEX_CLIENT_ID
    codex_environment: str | None = None
    codex_branch: str | None = None
    # Unset: the default (defaults.CODEX_POLLS_PER_MINUTE), or the project's [limits."codex.poll"].
    codex_polls_per_minute: float | None = Field(default=None, gt=0)

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

    @field_validator("gemini_base_url", "gemini_api_base_url", "code_assist_endpoint", "gemini_oauth_token_url",
                     "codex_base_url", "codex_refresh_url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        return None if value is None else check_url(value)

    @field_validator("code_assist_api_version")
    @classmethod
    def _version(cls, value: str) -> str:
        text = value.strip().strip("/")
        if not text or any(c in text for c in "/:?# "):
            raise ValueError(f"{value!r} is not an API version (a single path part such as v1internal)")
        return text

    @field_validator("prices")
    @classmethod
    def _prices(cls, value: dict[str, tuple[float, float]]) -> dict[str, tuple[float, float]]:
        for model, (price_in, price_out) in value.items():
            if price_in < 0 or price_out < 0:
                raise ValueError(f"the price of {model!r} is negative")
        return value

    def code_assist_base(self) -> str:
        """The Code Assist base URL (`{endpoint}/{version}`); methods are `{base}:{method}`."""
        if self.gemini_base_url:
            if not urlsplit(self.gemini_base_url).path.strip("/"):
                return f"{self.gemini_base_url}/{self.code_assist_api_version}"
            return self.gemini_base_url
        return f"{self.code_assist_endpoint}/{self.code_assist_api_version}"

    def code_assist_source(self) -> str:
        """The setting(s) the Code Assist base URL comes from, for messages."""
        if self.gemini_base_url:
            return "SPARC_GEMINI_BASE_URL"
        return f"{setting_name('code_assist_endpoint')} / {setting_name('code_assist_api_version')}"

    def gemini_creds_path(self) -> Path:
        """Where the Gemini OAuth credentials file is."""
        return self.gemini_creds or default_gemini_creds()

    def codex_auth_path(self) -> Path:
        """Where the Codex auth.json is."""
        return self.codex_auth or default_codex_auth()


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
    example = ' e.g. {"gemini-2.5-pro": [1.25, 10.0]}' if field == "prices" else ""
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
