"""Gemini's settings fragment, project table and defaults: Code Assist and public API URLs, the OAuth file, the
API key, list prices, and the `[gemini]` table of a project file. The registry composes the fragment into
`settings.Settings` (every field a `SPARC_*` setting as before: `SPARC_GEMINI_API_KEY`, `GEMINI_API_KEY`, ...)
and the table into `project.Project`. Import-free beyond pydantic: settings and projects load it early."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from sparc_cloud.settings_fields import aliased, check_url, setting_name_in

# --- defaults (gemini-cli code_assist/server.ts and setup.ts; googleapis/js-genai) ---
CODE_ASSIST_ENDPOINT = "https://cloudcode-pa.googleapis.com"  # gemini-cli: CODE_ASSIST_ENDPOINT (host only)
CODE_ASSIST_API_VERSION = "v1internal"  # gemini-cli: CODE_ASSIST_API_VERSION (the path)
CODE_ASSIST_BASE = f"{CODE_ASSIST_ENDPOINT}/{CODE_ASSIST_API_VERSION}"
API_BASE = "https://generativelanguage.googleapis.com"
TOKEN_URL = "https://oauth2.googleapis.com/token"
ONBOARD_POLL_S = 5.0  # gemini-cli polls the onboardUser operation every 5 s (setup.ts)
ONBOARD_MAX_POLLS = 60
# The runbook's measured limits (requests per minute, burst): flash ~10 in a burst then ~1/s; pro ~3/min.
FLASH_LIMIT = (60.0, 10)
PRO_LIMIT = (3.0, 3)

# Public list prices, USD per million tokens (input, output), used only for estimates (Code Assist is billed
# through a subscription; these show what the same work costs at API prices).
PRICES: dict[str, tuple[float, float]] = {
    "gemini-2.5-pro": (1.25, 10.0),
    "gemini-2.5-flash": (0.30, 2.50),
    "gemini-2.5-flash-lite": (0.10, 0.40),
}

# Settings read from more than their `SPARC_` name (gemini-cli's own variables), in precedence order.
ALIASES: dict[str, tuple[str, ...]] = {
    "gemini_api_key": ("SPARC_GEMINI_API_KEY", "GEMINI_API_KEY"),
    "gemini_api_base_url": ("SPARC_GEMINI_API_BASE_URL", "GOOGLE_GEMINI_BASE_URL"),
    "code_assist_endpoint": ("SPARC_CODE_ASSIST_ENDPOINT", "CODE_ASSIST_ENDPOINT"),
    "code_assist_api_version": ("SPARC_CODE_ASSIST_API_VERSION", "CODE_ASSIST_API_VERSION"),
    "google_cloud_project": ("SPARC_GOOGLE_CLOUD_PROJECT", "GOOGLE_CLOUD_PROJECT", "GOOGLE_CLOUD_PROJECT_ID"),
}
URL_FIELDS = ("gemini_base_url", "gemini_api_base_url", "code_assist_endpoint", "gemini_oauth_token_url")
SECRET_FIELDS = ("gemini_api_key", "gemini_oauth_client_secret")


def default_creds() -> Path:
    """`$GEMINI_CLI_HOME/.gemini/oauth_creds.json`, else `~/.gemini/oauth_creds.json`."""
    home = os.environ.get("GEMINI_CLI_HOME") or os.environ.get("HOME") or str(Path.home())
    return Path(home) / ".gemini" / "oauth_creds.json"


class GeminiSettingsFields(BaseModel):
    """Gemini's settings (composed into `settings.Settings`)."""

    settings_aliases: ClassVar[dict[str, tuple[str, ...]]] = ALIASES

    # The Code Assist base URL. Unset: CODE_ASSIST_ENDPOINT + "/" + CODE_ASSIST_API_VERSION (gemini-cli's two
    # variables); a value with no path gets "/" + the API version.
    gemini_base_url: str | None = None
    code_assist_endpoint: str = aliased(ALIASES["code_assist_endpoint"], CODE_ASSIST_ENDPOINT)
    code_assist_api_version: str = aliased(ALIASES["code_assist_api_version"], CODE_ASSIST_API_VERSION)
    gemini_api_base_url: str = aliased(ALIASES["gemini_api_base_url"], API_BASE)
    gemini_api_key: SecretStr | None = aliased(ALIASES["gemini_api_key"])
    gemini_creds: Path | None = None
    gemini_oauth_client_id: str | None = None
    gemini_oauth_client_secret: SecretStr | None = None
    gemini_oauth_token_url: str = TOKEN_URL
    gemini_refresh_command: str = "gemini"
    google_cloud_project: str | None = aliased(ALIASES["google_cloud_project"])
    gemini_fallback: bool = False

    @field_validator(*URL_FIELDS)
    @classmethod
    def _gemini_url(cls, value: str | None) -> str | None:
        return None if value is None else check_url(value)

    @field_validator("code_assist_api_version")
    @classmethod
    def _version(cls, value: str) -> str:
        text = value.strip().strip("/")
        if not text or any(c in text for c in "/:?# "):
            raise ValueError(f"{value!r} is not an API version (a single path part such as v1internal)")
        return text

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
        return (f"{setting_name_in(ALIASES, 'code_assist_endpoint')} / "
                f"{setting_name_in(ALIASES, 'code_assist_api_version')}")

    def gemini_creds_path(self) -> Path:
        """Where the Gemini OAuth credentials file is."""
        return self.gemini_creds or default_creds()


class GeminiProjectTable(BaseModel):
    """A project file's `[gemini]` table (the registry composes it into `project.Project` as `project.gemini`)."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    fallback: bool = False
    generation_config: dict[str, Any] = Field(default_factory=lambda: {"temperature": 0.4})
