"""Credential files, whoever's they are: reading them as JSON, checking their fields and mode, decoding a JWT's
claims. Each provider's login (its file, refresh and rewrite) lives in `clients/<provider>_auth.py`."""


import base64
import json
import logging
import stat
from pathlib import Path
from typing import Any

from sparc_cloud import defaults
from sparc_cloud.errors import AuthError

log = logging.getLogger(__name__)

EAGER_REFRESH_S = defaults.EAGER_REFRESH_S


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


def read_json(path: Path, what: str, hint: str) -> dict[str, Any]:
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
