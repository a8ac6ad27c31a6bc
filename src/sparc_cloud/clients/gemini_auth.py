"""Gemini's login: `~/.gemini/oauth_creds.json` (google-auth-library `Credentials`, `expiry_date` in epoch ms),
read, refreshed and rewritten (atomic, mode 0600) as google-auth-library does."""


import json
import logging
import shutil
import subprocess
import threading
from pathlib import Path
from typing import Any

import requests

from sparc_cloud.clients.auth import EAGER_REFRESH_S, check_token_fields, mode_warning, read_json
from sparc_cloud.errors import AuthError
from sparc_cloud.fsutil import atomic_write_text
from sparc_cloud.http.clock import Clock
from sparc_cloud.redact import SecretRegistry

log = logging.getLogger(__name__)

GEMINI_LOGIN_HINT = (
    "Log in once with the Gemini CLI (run `gemini` and choose 'Login with Google'), or set GEMINI_API_KEY "
    "to use the public Gemini API instead."
)

class GeminiOAuth:
    """The Code Assist OAuth token, refreshed when within 5 minutes of expiry or after a 401."""

    def __init__(
        self,
        path: Path,
        *,
        clock: Clock,
        secrets: SecretRegistry,
        session: requests.Session,
        client_id: str | None = None,
        client_secret: str | None = None,
        token_url: str = "https://oauth2.googleapis.com/token",
        refresh_command: str | None = "gemini",
        time_scale: float = 1.0,
        timeout_s: float = 60.0,
    ) -> None:
        self.path = path
        self.clock = clock
        self.secrets = secrets
        self.session = session
        self.client_id = client_id
        self.client_secret = client_secret
        self.token_url = token_url
        self.refresh_command = refresh_command
        self.eager_s = EAGER_REFRESH_S * time_scale
        self.timeout_s = timeout_s
        self._lock = threading.Lock()
        self._data = self._load()
        warning = mode_warning(path)
        if warning:
            log.warning(warning)

    def _load(self) -> dict[str, Any]:
        data = read_json(self.path, "Gemini OAuth credentials", GEMINI_LOGIN_HINT)
        check_token_fields(data, ("access_token", "refresh_token", "id_token"), where="Gemini OAuth credentials",
                           path=self.path, hint=GEMINI_LOGIN_HINT)
        if not data.get("access_token") and not data.get("refresh_token"):
            raise AuthError(f"Gemini OAuth credentials at {self.path} hold no token. {GEMINI_LOGIN_HINT}")
        self.secrets.add(data.get("access_token"), data.get("refresh_token"), data.get("id_token"))
        return data

    def id_token(self) -> str | None:
        """The OpenID token of the login, if the file has one (its `email` claim names the account)."""
        value = self._data.get("id_token")
        return value if isinstance(value, str) else None

    def _expires_in(self) -> float:
        expiry = self._data.get("expiry_date")
        if not isinstance(expiry, int | float):
            return float("inf") if self._data.get("access_token") else 0.0
        return expiry / 1000.0 - self.clock.wall()

    def token(self) -> str:
        """A usable access token, refreshed first when it expires within 5 minutes."""
        with self._lock:
            if not self._data.get("access_token") or self._expires_in() <= self.eager_s:
                self._refresh()
            return str(self._data["access_token"])

    def after_unauthorized(self, rejected: str) -> str:
        """A 401 came back for `rejected`: refresh once (unless another thread already did)."""
        with self._lock:
            if self._data.get("access_token") != rejected:
                return str(self._data["access_token"])
            self._refresh()
            return str(self._data["access_token"])

    def _refresh(self) -> None:
        if self.client_id and self.client_secret and self._data.get("refresh_token"):
            self._refresh_oauth()
        elif self.refresh_command and shutil.which(self.refresh_command):
            self._refresh_with_cli()
        else:
            raise AuthError(
                f"The Gemini token in {self.path} has expired and cannot be refreshed here: set "
                "SPARC_GEMINI_OAUTH_CLIENT_ID and SPARC_GEMINI_OAUTH_CLIENT_SECRET (the Gemini CLI's installed-app "
                "client) to refresh it directly, or run `gemini` once to refresh it."
            )

    def _refresh_oauth(self) -> None:
        form = {
            "refresh_token": str(self._data["refresh_token"]),
            "client_id": str(self.client_id),
            "client_secret": str(self.client_secret),
            "grant_type": "refresh_token",
        }
        try:
            resp = self.session.post(self.token_url, data=form, timeout=self.timeout_s)
        except requests.RequestException as exc:
            raise AuthError(f"Could not reach the Google token endpoint ({self.token_url}, "
                            f"SPARC_GEMINI_OAUTH_TOKEN_URL) to refresh the Gemini token: {type(exc).__name__}. Check "
                            "the network and try again.") from None
        try:
            body = resp.json()
        except ValueError:
            body = {}
        if resp.status_code != 200 or not isinstance(body, dict) or not body.get("access_token"):
            err = body.get("error", "") if isinstance(body, dict) else ""
            if isinstance(err, dict):  # a google.rpc envelope rather than an OAuth error
                code, desc = str(err.get("status", "")), str(err.get("message", ""))
            else:
                code, desc = str(err), str(body.get("error_description", "")) if isinstance(body, dict) else ""
            detail = ": ".join(part for part in (code, desc) if part)
            raise AuthError(
                f"Refreshing the Gemini token failed (HTTP {resp.status_code}{' ' + detail if detail else ''}). "
                f"{GEMINI_LOGIN_HINT}"
            )
        new = dict(self._data)
        new["access_token"] = body["access_token"]
        expires_in = float(body.get("expires_in", 3600))
        new["expiry_date"] = int((self.clock.wall() + expires_in) * 1000)
        for key in ("scope", "token_type", "id_token"):
            if body.get(key):
                new[key] = body[key]
        new["refresh_token"] = body.get("refresh_token") or self._data.get("refresh_token")
        self.secrets.add(new["access_token"], new.get("refresh_token"), new.get("id_token"))
        atomic_write_text(self.path, json.dumps(new, indent=2), mode=0o600)
        self._data = new
        log.info("refreshed the Gemini OAuth token (%s)", self.path)

    def _refresh_with_cli(self) -> None:
        assert self.refresh_command
        log.info("refreshing the Gemini token by running `%s` once", self.refresh_command)
        try:
            subprocess.run(  # noqa: S603 - fixed argv, no shell
                [self.refresh_command, "--prompt", "Reply with OK."],
                capture_output=True,
                timeout=180,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise AuthError(f"Running `{self.refresh_command}` to refresh the Gemini token failed ({exc}). "
                            f"{GEMINI_LOGIN_HINT}") from None
        self._data = self._load()
        if self._expires_in() <= 0:
            raise AuthError(f"The Gemini token in {self.path} is still expired after running "
                            f"`{self.refresh_command}`. {GEMINI_LOGIN_HINT}")
