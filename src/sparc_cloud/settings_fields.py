"""What every settings fragment shares: URL checking and fields read from more than their `SPARC_` name.

The core settings (`settings.py`) and each provider's fragment (`clients/<provider>_settings.py`, which the
registry composes into `Settings`) build their fields with these, so no fragment imports `settings.py`."""

from __future__ import annotations

import os
from typing import Any
from urllib.parse import urlsplit

from pydantic import AliasChoices, Field


def check_url(value: str, *, base: bool = True) -> str:
    """`value` if it can be an http(s) URL with a host and a valid port; else ValueError saying why."""
    text = value.strip()
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"{text!r} is not a URL ({exc})") from None
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"{text!r} is not an http(s) URL: it needs to start with https:// (or http://)")
    if not parts.hostname:
        raise ValueError(f"{text!r} has no host name")
    if port == 0:
        raise ValueError(f"{text!r} has port 0")
    if base and (parts.query or parts.fragment):
        raise ValueError(f"{text!r} is a base URL and must not carry a query or fragment")
    return text.rstrip("/") if base else text


def aliased(names: tuple[str, ...], default: Any = None) -> Any:
    """A field read from any of `names` (in precedence order), e.g. an official CLI's own variable."""
    return Field(default=default, validation_alias=AliasChoices(*names))


def env_names_in(aliases: dict[str, tuple[str, ...]], field: str) -> tuple[str, ...]:
    """The environment variables that set a settings field (its aliases, else its `SPARC_` name)."""
    return aliases.get(field, ("SPARC_" + field.upper(),))


def setting_name_in(aliases: dict[str, tuple[str, ...]], field: str) -> str:
    """The variable that set `field` in this environment (else its first name)."""
    names = env_names_in(aliases, field)
    return next((n for n in names if os.environ.get(n)), names[0])
