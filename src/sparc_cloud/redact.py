"""Masking of secrets in any text that may reach a log, a file, an event or an exception.

Two layers: exact values the process knows (tokens, keys, account ids read from credential files) and
patterns that look like secrets whatever their source (JWTs, Google OAuth tokens and API keys, bearer
headers, `key=` query parameters)."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from urllib.parse import unquote, urlsplit

MASK = "***"

_PATTERNS = [
    re.compile(r"eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*"),  # JWT
    re.compile(r"ya29\.[A-Za-z0-9_\-.]+"),  # Google OAuth access token
    re.compile(r"1//[A-Za-z0-9_\-]{20,}"),  # Google refresh token
    re.compile(r"AIza[0-9A-Za-z_\-]{20,}"),  # Google API key
    re.compile(r"(?i)(bearer\s+)[A-Za-z0-9_\-.=:/+]+"),
    re.compile(r"(?i)([?&](?:key|access_token|token)=)[^&\s\"']+"),
    re.compile(r"(?i)(\"(?:access_token|refresh_token|id_token|api_key|client_secret)\"\s*:\s*\")[^\"]+"),
    re.compile(r"(https://hooks\.slack\.com/services/)[^\s\"']+"),
    re.compile(r"(https://(?:discord(?:app)?\.com)/api/webhooks/)[^\s\"']+"),
]


def hide_userinfo(text: str) -> str:
    """`text` with the password of every `scheme://user:password@host` in it shown as `***` (`user:***@`), and a
    lone `scheme://token@host` userinfo as `***@`: the form of a URL that may be printed or written."""
    return _USERINFO.sub(lambda m: m.group(1) + (m.group(2) + ":" + MASK if m.group(3) is not None else MASK) + "@",
                         text)


def url_secrets(url: str) -> tuple[str, ...]:
    """The password in a URL's userinfo (as written and percent-decoded): for `SecretRegistry.add`."""
    try:
        password = urlsplit(url).password
    except ValueError:
        return ()
    if not password:
        return ()
    return tuple({password, unquote(password)})


_USERINFO = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://)([^\s/?#@:]*)(?::([^\s/?#@]*))?@")


def _longest_first(secrets: Iterable[str]) -> list[str]:
    return sorted({s for s in secrets if s and len(s) >= 4}, key=len, reverse=True)


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """Return `text` with every known secret and secret-looking string replaced by `***`."""
    return _redact(text, _longest_first(secrets))


def _redact(text: str, ordered: list[str]) -> str:
    for secret in ordered:
        if secret in text:
            text = text.replace(secret, MASK)
    for pattern in _PATTERNS:
        if pattern.groups:
            text = pattern.sub(lambda m: m.group(1) + MASK, text)
        else:
            text = pattern.sub(MASK, text)
    return text


class SecretRegistry:
    """The secrets one run knows about; passed explicitly to whatever writes text out."""

    def __init__(self) -> None:
        self._values: set[str] = set()
        self._ordered: list[str] = []  # longest first, so a secret containing another is masked whole

    def add(self, *values: str | None) -> None:
        """Remember values to mask (None and short strings are ignored)."""
        fresh = {v for v in values if v and len(v) >= 4} - self._values
        if fresh:
            self._values |= fresh
            self._ordered = _longest_first(self._values)  # replaced whole: readers on other threads see old or new

    def redact(self, text: str) -> str:
        """Mask the registered secrets and secret-looking patterns in `text`."""
        return _redact(text, self._ordered)

    def __repr__(self) -> str:
        return f"SecretRegistry({len(self._values)} values)"


class RedactingFilter(logging.Filter):
    """A logging filter that masks secrets in every record's final message."""

    def __init__(self, registry: SecretRegistry) -> None:
        super().__init__()
        self.registry = registry

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = self.registry.redact(record.getMessage())
        record.args = None
        return True
