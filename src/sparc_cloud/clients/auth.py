"""Credential files: reading, expiry, refresh, rewriting (atomic, mode 0600), and their secrets.

Gemini: `~/.gemini/oauth_creds.json` (google-auth-library `Credentials`, `expiry_date` in epoch ms).
Codex: `~/.codex/auth.json` (`tokens.{access_token, refresh_token, account_id, id_token}`).
As google-auth-library and openai/codex `login` (storage.rs, manager.rs) write and refresh them."""

from __future__ import annotations

import base64
import json
import logging
import os
import platform
import shutil
import stat
import subprocess
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import requests

from sparc_cloud import defaults
from sparc_cloud.errors import AuthError
from sparc_cloud.fsutil import atomic_write_text
from sparc_cloud.http.classify import is_challenge
from sparc_cloud.http.clock import Clock
from sparc_cloud.redact import SecretRegistry

log = logging.getLogger(__name__)

GEMINI_LOGIN_HINT = (
    "Log in once with the Gemini CLI (run `gemini` and choose 'Login with Google'), or set GEMINI_API_KEY "
    "to use the public Gemini API instead."
)
CODEX_LOGIN_HINT = "Run `codex login` (Codex CLI) to sign in with ChatGPT."
EAGER_REFRESH_S = defaults.EAGER_REFRESH_S


def codex_user_agent() -> str:
    """The official Codex client's User-Agent shape: `codex_cli_rs/<version> (<os> <release>; <arch>) <terminal>`
    (openai/codex login `default_client.rs`); auth.openai.com challenges generic HTTP clients (openai/codex
    issues 16052, 18456, 21735)."""
    term = os.environ.get("TERM_PROGRAM") or os.environ.get("TERM") or "unknown"
    term = "".join(c for c in term if c.isalnum() or c in "._-/") or "unknown"
    return (f"{defaults.CODEX_ORIGINATOR}/{defaults.CODEX_CLI_VERSION} ({platform.system()} {platform.release()}; "
            f"{platform.machine()}) {term}")


def check_token_fields(data: dict[str, Any], fields: tuple[str, ...], *, where: str, path: Path, hint: str,
                       required: tuple[str, ...] = ()) -> None:
    """Each of `fields` is absent, null or text that can go in an HTTP header; else an AuthError naming the file
    and the field (never the value)."""
    for name in fields:
        value = data.get(name)
        if value is None:
            if name in required:
                raise AuthError(f"{where} at {path} has no {name}. {hint}")
            continue
        if not isinstance(value, str):
            kind = "a number" if isinstance(value, int | float) else f"a JSON {type(value).__name__}"
            raise AuthError(f"{where} at {path}: {name} is {kind}, not text; the file is damaged. {hint}")
        if any(c in "\r\n\0\t" for c in value) or value != value.strip():
            raise AuthError(f"{where} at {path}: {name} contains a line break or spaces; the file is damaged. {hint}")
        try:
            value.encode("latin-1")
        except UnicodeEncodeError:
            raise AuthError(f"{where} at {path}: {name} contains characters that cannot be sent in an HTTP header; "
                            f"the file is damaged. {hint}") from None


def _read_json(path: Path, what: str, hint: str) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise AuthError(f"{what} not found at {path}. {hint}") from None
    except UnicodeDecodeError:
        raise AuthError(f"{what} at {path} is not UTF-8 text; the file is damaged. {hint}") from None
    except OSError as exc:
        raise AuthError(f"{what} at {path} cannot be read ({exc.strerror}). Check its owner and mode.") from None
    try:
        data = json.loads(text)
    except ValueError:
        raise AuthError(f"{what} at {path} is not valid JSON. {hint}") from None
    if not isinstance(data, dict):
        raise AuthError(f"{what} at {path} is not a JSON object. {hint}")
    return data


def mode_warning(path: Path) -> str | None:
    """A warning when a credential file can be read by group or others."""
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except OSError:
        return None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        return f"{path} is readable by other users (mode {mode:o}); run `chmod 600 {path}`."
    return None


def jwt_claims(token: str) -> dict[str, Any]:
    """The payload of a JWT, unverified ({} if it is not one)."""
    parts = token.split(".")
    if len(parts) < 2:
        return {}
    try:
        padded = parts[1] + "=" * (-len(parts[1]) % 4)
        data = json.loads(base64.urlsafe_b64decode(padded.encode()))
    except (ValueError, TypeError):
        return {}
    return data if isinstance(data, dict) else {}


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
        data = _read_json(self.path, "Gemini OAuth credentials", GEMINI_LOGIN_HINT)
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


class CodexAuth:
    """The ChatGPT tokens of the Codex CLI: bearer token, account id, and the 401 recovery."""

    def __init__(
        self,
        path: Path,
        *,
        clock: Clock,
        secrets: SecretRegistry,
        session: requests.Session,
        refresh: bool = False,
        refresh_url: str = "https://auth.openai.com/oauth/token",
        client_id: str = "",
        timeout_s: float = 60.0,
    ) -> None:
        self.path = path
        self.clock = clock
        self.secrets = secrets
        self.session = session
        self.refresh_enabled = refresh
        self.refresh_url = refresh_url
        self.client_id = client_id
        self.timeout_s = timeout_s
        self._lock = threading.Lock()
        self._data = self._load()
        warning = mode_warning(path)
        if warning:
            log.warning(warning)

    def _load(self) -> dict[str, Any]:
        data = _read_json(self.path, "Codex credentials (auth.json)", CODEX_LOGIN_HINT)
        tokens = data.get("tokens")
        if not isinstance(tokens, dict) or not tokens.get("access_token"):
            mode = "an API key" if data.get("OPENAI_API_KEY") else "no ChatGPT tokens"
            raise AuthError(
                f"Codex credentials at {self.path} hold {mode}; Codex Cloud tasks need a ChatGPT sign-in. "
                f"{CODEX_LOGIN_HINT}"
            )
        check_token_fields(tokens, ("access_token", "refresh_token", "id_token", "account_id"),
                           where="Codex credentials (auth.json)", path=self.path, hint=CODEX_LOGIN_HINT)
        if not isinstance(data.get("OPENAI_API_KEY"), str | None):
            data = {**data, "OPENAI_API_KEY": None}
        self.secrets.add(tokens.get("access_token"), tokens.get("refresh_token"), tokens.get("id_token"),
                         tokens.get("account_id"), data.get("OPENAI_API_KEY"))
        self.secrets.add(self._account_from(tokens))
        return data

    @staticmethod
    def _account_from(tokens: dict[str, Any]) -> str | None:
        account = tokens.get("account_id")
        if account:
            return str(account)
        claims = jwt_claims(str(tokens.get("access_token", "")))
        auth = claims.get("https://api.openai.com/auth")
        if isinstance(auth, dict) and auth.get("chatgpt_account_id"):
            return str(auth["chatgpt_account_id"])
        return None

    @property
    def _tokens(self) -> dict[str, Any]:
        tokens = self._data["tokens"]
        assert isinstance(tokens, dict)
        return tokens

    def id_token(self) -> str | None:
        """The OpenID token of the ChatGPT login (its claims name the e-mail and plan)."""
        with self._lock:
            value = self._tokens.get("id_token")
            return value if isinstance(value, str) else None

    def account_id(self) -> str | None:
        """`tokens.account_id`, else the access token's `chatgpt_account_id` claim."""
        with self._lock:
            return self._account_from(self._tokens)

    def _expired(self) -> bool:
        exp = jwt_claims(str(self._tokens.get("access_token", ""))).get("exp")
        return isinstance(exp, int | float) and exp <= self.clock.wall()

    def token(self) -> str:
        """A usable access token: re-read from disk, or refreshed (when enabled), if it has expired."""
        with self._lock:
            if self._expired():
                self._data = self._load()
                if self._expired():
                    self._refresh()
            return str(self._tokens["access_token"])

    def after_unauthorized(self, rejected: str) -> str:
        """A 401 came back: re-read auth.json (the codex CLI may have refreshed it), else refresh."""
        with self._lock:
            if self._tokens.get("access_token") != rejected:
                return str(self._tokens["access_token"])
            self._data = self._load()
            if self._tokens.get("access_token") != rejected:
                return str(self._tokens["access_token"])
            self._refresh()
            return str(self._tokens["access_token"])

    def _refresh(self) -> None:
        if not self.refresh_enabled:
            raise AuthError(
                f"The Codex token in {self.path} was rejected or has expired. Run `codex login` (or any "
                "`codex` command, which refreshes it), or set SPARC_CODEX_REFRESH=true to let sparc-cloud "
                "refresh it."
            )
        refresh_token = self._tokens.get("refresh_token")
        if not refresh_token:
            raise AuthError(f"The Codex credentials at {self.path} have no refresh token. {CODEX_LOGIN_HINT}")
        body = {"client_id": self.client_id, "grant_type": "refresh_token", "refresh_token": refresh_token}
        # The official client's identity: auth.openai.com answers generic HTTP clients with a Cloudflare challenge.
        headers = {"User-Agent": codex_user_agent(), "originator": defaults.CODEX_ORIGINATOR}
        try:
            resp = self.session.post(self.refresh_url, json=body, headers=headers, timeout=self.timeout_s)
        except requests.RequestException as exc:
            raise AuthError(f"Could not reach the OpenAI token endpoint ({self.refresh_url}, SPARC_CODEX_REFRESH_URL) "
                            f"to refresh the Codex token: {type(exc).__name__}. Check the network and try "
                            "again.") from None
        if is_challenge(resp.status_code, resp.headers):
            raise AuthError(
                "Refreshing the Codex token was blocked: auth.openai.com answered with a Cloudflare challenge "
                "(HTTP 403, cf-mitigated: challenge) instead of a token. Run any `codex` command (it refreshes "
                f"{self.path}) or `codex login`, then run again; or set SPARC_CODEX_REFRESH=false."
            )
        try:
            answer = resp.json()
        except ValueError:
            answer = {}
        if resp.status_code != 200 or not isinstance(answer, dict):
            err = answer.get("error") if isinstance(answer, dict) else None
            code = (err.get("code") if isinstance(err, dict) else err) or (
                answer.get("code") if isinstance(answer, dict) else "")
            raise AuthError(
                f"Refreshing the Codex token failed (HTTP {resp.status_code}{': ' + str(code) if code else ''}). "
                "Please log out and sign in again: `codex logout && codex login`."
            )
        tokens = dict(self._tokens)
        for key in ("id_token", "access_token", "refresh_token"):
            if answer.get(key):
                tokens[key] = answer[key]
        new = dict(self._data)
        new["tokens"] = tokens
        new["last_refresh"] = datetime.fromtimestamp(self.clock.wall(), UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        self.secrets.add(tokens.get("access_token"), tokens.get("refresh_token"), tokens.get("id_token"))
        atomic_write_text(self.path, json.dumps(new, indent=2), mode=0o600)
        self._data = new
        log.info("refreshed the Codex token (%s)", self.path)
