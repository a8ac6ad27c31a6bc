"""Settings from `SPARC_*` environment variables and `.env` (pydantic-settings).

Precedence, highest first: command-line flags (the CLI passes them as overrides), the environment /
`.env`, then the project file, then these defaults. Credential locations follow `HOME` at the time
the settings are read, so tests and users can point them anywhere."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

GEMINI_CODE_ASSIST_BASE = "https://cloudcode-pa.googleapis.com/v1internal"
GEMINI_API_BASE = "https://generativelanguage.googleapis.com"
GOOGLE_TOKEN_URL = "https://oauth2.googleapis.com/token"
CODEX_BASE = "https://chatgpt.com/backend-api"
CODEX_REFRESH_URL = "https://auth.openai.com/oauth/token"
# The Codex CLI's published OAuth client id (shared/api/codex.md section 4).
CODEX_CLIENT_ID = "app_EMoamEEZ73f0CkXaXp7hrann"

# Public list prices, USD per million tokens (input, output), used only for estimates. Code Assist and
# Codex Cloud are billed through subscriptions; these show what the same work costs at API prices.
DEFAULT_PRICES: dict[str, tuple[float, float]] = {
    "gemini-2.5-pro": (1.25, 10.0),
    "gemini-2.5-flash": (0.30, 2.50),
    "gemini-2.5-flash-lite": (0.10, 0.40),
    "codex": (1.25, 10.0),
}

PathStyle = Literal["auto", "wham", "api-codex", "runbook"]


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
    gemini_base_url: str = GEMINI_CODE_ASSIST_BASE
    gemini_api_base_url: str = GEMINI_API_BASE
    gemini_api_key: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("SPARC_GEMINI_API_KEY", "GEMINI_API_KEY")
    )
    gemini_creds: Path | None = None
    gemini_oauth_client_id: str | None = None
    gemini_oauth_client_secret: SecretStr | None = None
    gemini_oauth_token_url: str = GOOGLE_TOKEN_URL
    gemini_refresh_command: str = "gemini"
    google_cloud_project: str | None = Field(
        default=None,
        validation_alias=AliasChoices(
            "SPARC_GOOGLE_CLOUD_PROJECT", "GOOGLE_CLOUD_PROJECT", "GOOGLE_CLOUD_PROJECT_ID"
        ),
    )
    gemini_fallback: bool = False

    # --- Codex ---
    codex_base_url: str = CODEX_BASE
    codex_path_style: PathStyle = "auto"
    codex_auth: Path | None = None
    codex_refresh: bool = False
    codex_refresh_url: str = CODEX_REFRESH_URL
    codex_oauth_client_id: str = CODEX_CLIENT_ID
    codex_environment: str | None = None
    codex_branch: str | None = None
    codex_polls_per_minute: float = 30.0

    # --- Retry and timing ---
    http_timeout_s: float = 120.0
    retry_max_attempts: int = Field(default=8, ge=1)
    retry_deadline_s: float = Field(default=900.0, gt=0)
    retry_initial_s: float = Field(default=2.0, gt=0)
    retry_max_wait_s: float = Field(default=300.0, gt=0)
    agent_timeout_s: float = Field(default=3600.0, gt=0)
    run_deadline_s: float | None = None

    # --- Run ---
    concurrency: int = Field(default=16, ge=1, le=512)
    output_dir: Path | None = None
    sim_time_scale: float = Field(default=0.02, gt=0, le=10)
    sim_seed: int = 1
    # A simulator already running (`sparc-cloud sim serve --write-creds DIR`) for --backend sim to use instead of
    # starting one in the process: its tasks outlive a killed run, so resumes re-attach to them.
    sim_url: str | None = None
    sim_creds: Path | None = None

    # --- Cost estimates: USD per million tokens (input, output); SPARC_PRICES='{"model": [in, out]}' ---
    prices: dict[str, tuple[float, float]] = Field(default_factory=lambda: dict(DEFAULT_PRICES))

    def gemini_creds_path(self) -> Path:
        """Where the Gemini OAuth credentials file is."""
        return self.gemini_creds or default_gemini_creds()

    def codex_auth_path(self) -> Path:
        """Where the Codex auth.json is."""
        return self.codex_auth or default_codex_auth()
