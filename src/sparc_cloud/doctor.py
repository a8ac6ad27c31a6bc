"""`sparc-cloud doctor`: what is set up, what is not, and the exact fix for each problem.

Doctor makes one short attempt per network check (no retries, a 10 s timeout): an address that cannot
be reached is reported at once with the URL and the setting it comes from."""

from __future__ import annotations

import json
import shutil
import stat
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from sparc_cloud import defaults
from sparc_cloud.clients.auth import CODEX_LOGIN_HINT, GEMINI_LOGIN_HINT, jwt_claims
from sparc_cloud.clients.factory import ClientContext, make_codex, make_gemini
from sparc_cloud.clients.gemini import NeedsOnboarding
from sparc_cloud.errors import SparcError, Unreachable
from sparc_cloud.http.clock import RealClock
from sparc_cloud.redact import SecretRegistry
from sparc_cloud.settings import Settings

Level = Literal["ok", "warn", "fail"]


@dataclass
class Check:
    """One finding."""

    name: str
    level: Level
    detail: str
    fix: str = ""


def _duration(seconds: float) -> str:
    if seconds < 0:
        return f"expired {_duration(-seconds)} ago"
    if seconds < 3600:
        return f"{seconds / 60:.0f} min"
    if seconds < 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def _file_checks(name: str, path: Path, hint: str) -> tuple[list[Check], dict[str, object] | None]:
    if not path.exists():
        return [Check(name, "fail", f"{path} does not exist", hint)], None
    checks = []
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        checks.append(Check(f"{name} mode", "warn", f"{path} is mode {mode:o}: other users can read it",
                            f"chmod 600 {path}"))
    else:
        checks.append(Check(f"{name} mode", "ok", f"{path} is mode {mode:o}"))
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        return [*checks, Check(name, "fail", f"{path} is not UTF-8 text (the file is damaged)", hint)], None
    except (OSError, ValueError) as exc:
        return [*checks, Check(name, "fail", f"{path} cannot be read as JSON ({exc})", hint)], None
    return checks, data if isinstance(data, dict) else None


def gemini_checks(settings: Settings, ctx: ClientContext) -> list[Check]:
    """API key or OAuth file, token expiry, refresh ability, project id."""
    if settings.gemini_api_key:
        checks = [Check("Gemini credentials", "ok", "GEMINI_API_KEY is set: the public Gemini API is used")]
    else:
        path = settings.gemini_creds_path()
        checks, data = _file_checks("Gemini credentials", path, GEMINI_LOGIN_HINT)
        if data is None:
            return checks
        expiry = data.get("expiry_date")
        left = float(expiry) / 1000 - time.time() if isinstance(expiry, int | float) else None
        can_refresh = bool(settings.gemini_oauth_client_id and settings.gemini_oauth_client_secret) or bool(
            settings.gemini_refresh_command and shutil.which(settings.gemini_refresh_command))
        if left is None:
            checks.append(Check("Gemini token", "warn", "the file has no expiry_date", "Run `gemini` once to refresh it."))
        elif left > 300:
            checks.append(Check("Gemini token", "ok", f"valid for {_duration(left)}"))
        elif can_refresh:
            checks.append(Check("Gemini token", "ok", f"{_duration(left)}; it will be refreshed before use"))
        else:
            checks.append(Check("Gemini token", "fail", f"{_duration(left)} and no way to refresh it here",
                                "Run `gemini` once, or set SPARC_GEMINI_OAUTH_CLIENT_ID and "
                                "SPARC_GEMINI_OAUTH_CLIENT_SECRET."))
    try:
        client = make_gemini(ctx)
        if client.config.mode == "code-assist":
            offered = settings.google_cloud_project
            project = client.project_id(onboard=False)
            source = "from loadCodeAssist" + (f"; GOOGLE_CLOUD_PROJECT={offered} was offered" if offered else "")
            checks.append(Check("Gemini project", "ok", f"{project} ({source}) at {client.config.base_url}"))
    except NeedsOnboarding as exc:
        checks.append(Check("Gemini project", "warn", str(exc), "Nothing to do: `sparc-cloud run` or `gemini` sets it up."))
    except SparcError as exc:
        checks.append(Check("Gemini project", "fail", str(exc),
                            _fix(exc, "See the message; GOOGLE_CLOUD_PROJECT offers a project.")))
    return checks


def _fix(exc: BaseException, otherwise: str) -> str:
    """The fix for a failed network check: the setting behind an unreachable address, else `otherwise`."""
    cause: BaseException | None = exc
    while cause is not None and not isinstance(cause, Unreachable):
        cause = cause.__cause__
    if isinstance(cause, Unreachable):
        return f"Check {cause.setting or 'the address'}{' (is the server running?)' if cause.loopback else ''} " \
               "and the network."
    return otherwise


def codex_checks(settings: Settings, ctx: ClientContext, environment: str | None) -> list[Check]:
    """auth.json, token expiry, account, environment."""
    path = settings.codex_auth_path()
    checks, data = _file_checks("Codex credentials", path, CODEX_LOGIN_HINT)
    if data is None:
        return checks
    raw_tokens = data.get("tokens")
    tokens: dict[str, object] = raw_tokens if isinstance(raw_tokens, dict) else {}
    if not tokens.get("access_token"):
        return [*checks, Check("Codex credentials", "fail", "no ChatGPT tokens (API-key login?)", CODEX_LOGIN_HINT)]
    exp = jwt_claims(str(tokens["access_token"])).get("exp")
    if isinstance(exp, int | float):
        left = float(exp) - time.time()
        level: Level = "ok" if left > 0 else ("ok" if settings.codex_refresh else "fail")
        fix = "" if level == "ok" else "Run any `codex` command (it refreshes the token) or `codex login`."
        checks.append(Check("Codex token", level, f"valid for {_duration(left)}" if left > 0 else _duration(left), fix))
    checks.append(Check("Codex account", "ok" if tokens.get("account_id") or exp else "warn",
                        "account id present" if tokens.get("account_id") else "account id from the token"))
    try:
        client = make_codex(ctx)
        envs = client.environments()
        if environment:
            env = client.resolve_environment(environment)
            checks.append(Check("Codex environment", "ok", f"{env.label or '?'} ({env.id}) is reachable"))
        else:
            names = ", ".join(f"{e.label} ({e.id})" for e in envs) or "none"
            checks.append(Check("Codex environment", "warn", f"none configured; yours: {names}",
                                "Set SPARC_CODEX_ENVIRONMENT or pass --codex-env NAME."))
    except SparcError as exc:
        checks.append(Check("Codex environment", "fail", str(exc), _fix(exc, "See the message.")))
    return checks


def run_doctor(settings: Settings, environment: str | None = None) -> list[Check]:
    """Every check, in order; read-only calls only (loadCodeAssist, the environments list), one short attempt
    each."""
    secrets = SecretRegistry()
    short = settings.model_copy(update={"retry_max_attempts": 1,
                                        "http_timeout_s": min(settings.http_timeout_s, defaults.DOCTOR_TIMEOUT_S)})
    ctx = ClientContext(settings=short, clock=RealClock(threading.Event()), secrets=secrets)
    checks = gemini_checks(settings, ctx) + codex_checks(settings, ctx, environment or settings.codex_environment)
    for check in checks:
        check.detail = secrets.redact(check.detail)
    return checks
