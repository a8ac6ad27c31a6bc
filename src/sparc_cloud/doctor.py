"""`sparc-cloud doctor`: what is set up, what is not, and the exact fix for each problem.

Each backend brings its own checks (its kind's `doctor`); this module runs those of the backends a project
uses (without a project: the default project's) and holds the helpers they share. Doctor makes one short
attempt per network check (no retries, a 10 s timeout): an address that cannot be reached is reported at
once with the URL and the setting it comes from."""

from __future__ import annotations

import json
import stat
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from sparc_cloud import defaults
from sparc_cloud.backends.base import DoctorContext
from sparc_cloud.backends.registry import DEFAULT_BACKENDS, kind_name, load_kind
from sparc_cloud.checks import Check
from sparc_cloud.clients.factory import ClientContext
from sparc_cloud.errors import Unreachable
from sparc_cloud.http.clock import RealClock
from sparc_cloud.redact import SecretRegistry, hide_userinfo
from sparc_cloud.settings import Settings

if TYPE_CHECKING:
    from sparc_cloud.project import Project


def duration(seconds: float) -> str:
    """A duration in words (min, h, days); negative: how long ago something expired."""
    if seconds < 0:
        return f"expired {duration(-seconds)} ago"
    if seconds < 3600:
        return f"{seconds / 60:.0f} min"
    if seconds < 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def file_checks(name: str, path: Path, hint: str) -> tuple[list[Check], dict[str, object] | None]:
    """A credential file's checks (exists, private mode, JSON) and its decoded object when it is one."""
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


def fix_for(exc: BaseException, otherwise: str) -> str:
    """The fix for a failed network check: the setting behind an unreachable address, else `otherwise`."""
    cause: BaseException | None = exc
    while cause is not None and not isinstance(cause, Unreachable):
        cause = cause.__cause__
    if isinstance(cause, Unreachable):
        return f"Check {cause.setting or 'the address'}{' (is the server running?)' if cause.loopback else ''} " \
               "and the network."
    return otherwise


def run_doctor(settings: Settings, environment: str | None = None, project: Project | None = None) -> list[Check]:
    """Every check of every backend the project uses, in order; read-only calls only, one short attempt each."""
    secrets = SecretRegistry()
    short = settings.model_copy(update={"retry_max_attempts": 1,
                                        "http_timeout_s": min(settings.http_timeout_s, defaults.DOCTOR_TIMEOUT_S)})
    ctx = ClientContext(settings=short, clock=RealClock(threading.Event()), secrets=secrets)
    dctx = DoctorContext(settings=settings, client=ctx, project=project, environment=environment)
    endpoints = project.endpoint_kinds() if project is not None else {}
    checks: list[Check] = []
    for name in (project.backends_used() if project is not None else DEFAULT_BACKENDS):
        kind = kind_name(name, endpoints)
        assert kind is not None, "project validation refuses unknown backend names"
        checks += load_kind(kind).doctor(dctx, name)
    for check in checks:
        check.detail = secrets.redact(hide_userinfo(check.detail))
        if check.fix:
            check.fix = secrets.redact(hide_userinfo(check.fix))
    return checks
