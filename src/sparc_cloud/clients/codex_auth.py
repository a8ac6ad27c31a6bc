"""Codex's login: `~/.codex/auth.json` (`tokens.{access_token, refresh_token, account_id, id_token}`), read,
refreshed and rewritten (atomic, mode 0600) as openai/codex `login` (storage.rs, manager.rs) does."""


import json
import logging
import os
import platform
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import requests

from sparc_cloud.clients import codex_settings
from sparc_cloud.clients.auth import check_token_fields, jwt_claims, mode_warning, read_json
from sparc_cloud.errors import AuthError
from sparc_cloud.fsutil import atomic_write_text
from sparc_cloud.http.classify import is_challenge
from sparc_cloud.http.clock import Clock
from sparc_cloud.redact import SecretRegistry

log = logging.getLogger(__name__)

CODEX_LOGIN_HINT = "Run `codex login` (Codex CLI) to sign in with ChatGPT."


def codex_user_agent() -> str:
    """The official Codex client's User-Agent shape: `codex_cli_rs/<version> (<os> <release>; <arch>) <terminal>`
    (openai/codex login `default_client.rs`); auth.openai.com challenges generic HTTP clients (openai/codex
    issues 16052, 18456, 21735)."""
    term = os.environ.get("TERM_PROGRAM") or os.environ.get("TERM") or "unknown"
    term = "".join(c for c in term if c.isalnum() or c in "._-/") or "unknown"
    return (f"{codex_settings.ORIGINATOR}/{codex_settings.CLI_VERSION} ({platform.system()} {platform.release()}; "
            f"{platform.machine()}) {term}")


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
        data = read_json(self.path, "Codex credentials (auth.json)", CODEX_LOGIN_HINT)
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
        headers = {"User-Agent": codex_user_agent(), "originator": codex_settings.ORIGINATOR}
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
