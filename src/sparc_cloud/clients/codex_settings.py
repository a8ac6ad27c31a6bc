"""Codex Cloud's settings fragment, project table and defaults: the backend URL and path style, auth.json, token
refresh, the environment and branch of a run, the poll budget and pacing, list prices, and the `[codex]` table of a project
file. The registry composes the fragment into `settings.Settings` (`SPARC_CODEX_*`) and the table into
`project.Project`. Import-free beyond pydantic: settings and projects load it early."""

from __future__ import annotations

import os
from pathlib import Path
from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from sparc_cloud.settings_fields import check_url

# --- defaults (openai/codex backend-client, cloud-tasks, cloud-tasks-client and login) ---
BASE = "https://chatgpt.com/backend-api"
REFRESH_URL = "https://auth.openai.com/oauth/token"
CLIENT_ID = "app_EMoamEEZ73f0CkXaXp7hrann"  # the Codex CLI's published OAuth client id
ORIGINATOR = "codex_cli_rs"  # the official client's `originator` header and User-Agent prefix
CLI_VERSION = "0.104.0"  # the Codex CLI version our Codex-style User-Agent names (any recent one works)
DEFAULT_BRANCH = "main"  # upstream's last resort when no git ref can be found
# The runbook's measured limits: task creation 10/min (burst 10); status polls 30/min per account (burst 5).
CREATE_LIMIT = (10.0, 10)
POLLS_PER_MINUTE = 30.0
POLL_BURST = 5
LIST_PAGE = 20  # tasks per task list page (`codex cloud list`'s page size)
# Task poll pacing (clients/codex_polling.py): the early look, the least gap between polls of one task, the relative
# back-off, and the range a task's duration is expected in.
POLL_INITIAL_S = 2.0
POLL_MIN_INTERVAL_S = 2.0
POLL_RELATIVE = 0.05
POLL_EXPECTED_MIN_S = 30.0
POLL_EXPECTED_MAX_S = 90.0

# List price, USD per million tokens (input, output), for estimates only (Codex Cloud bills through a plan).
PRICES: dict[str, tuple[float, float]] = {"codex": (1.25, 10.0)}

PathStyle = Literal["auto", "wham", "api-codex", "runbook"]
ALIASES: dict[str, tuple[str, ...]] = {}
URL_FIELDS = ("codex_base_url", "codex_refresh_url")
SECRET_FIELDS: tuple[str, ...] = ()


def default_auth() -> Path:
    """`$CODEX_HOME/auth.json`, else `~/.codex/auth.json`."""
    codex_home = os.environ.get("CODEX_HOME")
    if codex_home:
        return Path(codex_home) / "auth.json"
    home = os.environ.get("HOME") or str(Path.home())
    return Path(home) / ".codex" / "auth.json"


class CodexSettingsFields(BaseModel):
    """Codex Cloud's settings (composed into `settings.Settings`)."""

    settings_aliases: ClassVar[dict[str, tuple[str, ...]]] = ALIASES

    codex_base_url: str = BASE
    codex_path_style: PathStyle = "auto"
    codex_auth: Path | None = None
    codex_refresh: bool = False
    codex_refresh_url: str = REFRESH_URL
    codex_oauth_client_id: str = CLIENT_ID
    codex_environment: str | None = None
    codex_branch: str | None = None
    # Unset: the default (POLLS_PER_MINUTE), or the project's [limits."codex.poll"].
    codex_polls_per_minute: float | None = Field(default=None, gt=0)

    @field_validator(*URL_FIELDS)
    @classmethod
    def _codex_url(cls, value: str) -> str:
        return check_url(value)

    def codex_auth_path(self) -> Path:
        """Where the Codex auth.json is."""
        return self.codex_auth or default_auth()


class CodexProjectTable(BaseModel):
    """A project file's `[codex]` table: where Codex tasks run (composed into `project.Project` as `project.codex`)."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    environment: str | None = None
    branch: str | None = None  # unset: --branch, else this checkout's current or default branch, else main
