"""Reading error answers, provider-agnostic: durations, retry hints, error envelopes, and the generic
classification that decides retry / give up.

Each client brings its own rules (`clients/*_errors.py`, or a `classify_error` of its own) and falls back on
`classify_common` / `classify_generic` here for what every HTTP API means the same way."""

from __future__ import annotations

import email.utils
import json
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

MAX_RETRYABLE_DELAY_S = 300.0
RETRYABLE_QUOTA_STATUSES = (429, 499, 503)
TRANSIENT_STATUSES = (500, 502, 504)

_GO_PART = re.compile(r"(\d+(?:\.\d+)?)(h|ms|m|s|us|µs|ns)")
_UNIT_S = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}
_PLEASE_RETRY = re.compile(r"Please retry in ([0-9.]+(?:ms|s))", re.IGNORECASE)
_RESET_AFTER = re.compile(r"(?:reset after|resets in)\s+((?:\d+(?:\.\d+)?(?:h|ms|m|s))+)", re.IGNORECASE)


def parse_duration(text: str) -> float | None:
    """Seconds from a proto duration (`"0.539s"`) or a Go duration (`"4h30m28.06s"`, `"539.4ms"`)."""
    text = text.strip()
    if not text:
        return None
    pos, total = 0, 0.0
    for match in _GO_PART.finditer(text):
        if match.start() != pos:
            return None
        total += float(match.group(1)) * _UNIT_S[match.group(2)]
        pos = match.end()
    if pos != len(text):
        try:
            return float(text)  # a bare number of seconds
        except ValueError:
            return None
    return total


def parse_header_hint(
    headers: Mapping[str, str], now_wall: float | None = None, extra: tuple[str, ...] = ()
) -> float | None:
    """Seconds from `retry-after-ms` or `Retry-After` (seconds or an HTTP date), else from the first of the
    `extra` headers (a provider's own reset header, in seconds) that holds a number."""
    lower = {k.lower(): v for k, v in headers.items()}
    hint = _retry_after(lower, now_wall)
    if hint is not None:
        return hint
    for name in extra:
        try:
            return max(0.0, float(lower[name.lower()]))
        except (KeyError, ValueError):
            continue
    return None


def is_challenge(status: int, headers: Mapping[str, str] | None) -> bool:
    """A Cloudflare challenge page (403 with `cf-mitigated: challenge`), not an answer of the API."""
    lower = {k.lower(): v for k, v in (headers or {}).items()}
    return status == 403 and lower.get("cf-mitigated", "").strip().lower() == "challenge"


def retry_after(headers: Mapping[str, str], now_wall: float | None = None) -> float | None:
    """Seconds from `retry-after-ms`, then `retry-after` (seconds or an HTTP date), as the official SDKs read them."""
    return _retry_after({k.lower(): v for k, v in headers.items()}, now_wall)


def _retry_after(lower: Mapping[str, str], now_wall: float | None) -> float | None:
    if "retry-after-ms" in lower:
        try:
            return max(0.0, float(lower["retry-after-ms"]) / 1000.0)
        except ValueError:
            pass
    value = lower.get("retry-after")
    if value:
        try:
            return max(0.0, float(value))
        except ValueError:
            try:
                parsed = email.utils.parsedate_to_datetime(value)
            except (TypeError, ValueError):
                return None
            if parsed is not None:
                return max(0.0, parsed.timestamp() - (now_wall if now_wall is not None else time.time()))
    return None


def parse_message_hint(message: str) -> float | None:
    """Seconds from "Please retry in 44.09s" or "reset after 39s" / "Resets in 9h22m20s"."""
    match = _PLEASE_RETRY.search(message) or _RESET_AFTER.search(message)
    return parse_duration(match.group(1)) if match else None


@dataclass
class ErrorBody:
    """What an error answer says, whatever its envelope."""

    message: str = ""
    status_text: str = ""
    details: list[dict[str, Any]] = field(default_factory=list)
    error_type: str = ""  # the envelope's `type` (or string `code`)
    resets_at: float | None = None  # a wall-clock time the limit resets at (`resets_at`)
    resets_in: float | None = None  # seconds until it resets (`resets_in_seconds`)

    def detail(self, type_suffix: str) -> dict[str, Any] | None:
        """The first detail whose `@type` ends with `type_suffix`."""
        for item in self.details:
            if str(item.get("@type", "")).endswith(type_suffix):
                return item
        return None


def parse_error_body(text: str) -> ErrorBody:
    """Parse an error envelope: `{"error": {...}}` (object or streaming array, with google.rpc `details`,
    `type`/`code` strings and reset fields), `{"error": "...", "error_description"}`, `{"detail": ...}` or
    plain text."""
    try:
        data: Any = json.loads(text) if text.strip() else None
    except ValueError:
        return ErrorBody(message=text.strip()[:500])
    if isinstance(data, list) and data:
        data = data[0]
    if not isinstance(data, dict):
        return ErrorBody(message=str(data)[:500] if data is not None else "")
    err = data.get("error")
    if isinstance(err, dict):
        details = [d for d in err.get("details") or [] if isinstance(d, dict)]
        resets, resets_in = err.get("resets_at"), err.get("resets_in_seconds")
        return ErrorBody(
            message=str(err.get("message") or err.get("type") or ""),
            status_text=str(err.get("status") or ""),
            details=details,
            error_type=next((v for v in (err.get("type"), err.get("code")) if isinstance(v, str)), ""),
            resets_at=float(resets) if isinstance(resets, int | float) and _number(resets) else None,
            resets_in=float(resets_in) if isinstance(resets_in, int | float) and _number(resets_in) else None,
        )
    if isinstance(err, str):
        return ErrorBody(message=str(data.get("error_description") or err), error_type=err)
    detail = data.get("detail")
    if isinstance(detail, dict):
        return ErrorBody(message=str(detail.get("message") or detail), error_type=str(detail.get("type") or ""))
    if detail is not None:
        return ErrorBody(message=str(detail))
    return ErrorBody(message=json.dumps(data)[:500])


def _number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


Kind = Literal["retryable", "capacity", "terminal", "not_found", "validation", "auth", "transient", "fatal",
               "challenge"]


@dataclass
class Classification:
    """The decision for one error answer."""

    kind: Kind
    message: str
    delay: float | None = None
    validation_url: str | None = None


def delay_decision(delay: float, message: str) -> Classification:
    """Retry after `delay`, or give up when the server asks for more than `MAX_RETRYABLE_DELAY_S`."""
    if delay > MAX_RETRYABLE_DELAY_S:
        return Classification("terminal", message, delay)
    return Classification("retryable", message, delay)


CHALLENGE_MESSAGE = ("the server answered with a Cloudflare challenge page (cf-mitigated: challenge), not with "
                     "the API")


def classify_common(status: int, headers: Mapping[str, str] | None, message: str) -> Classification | None:
    """What every API means the same way: 401, a challenge page, 404; None for the rest."""
    if status == 401:
        return Classification("auth", message)
    if is_challenge(status, headers):
        return Classification("challenge", CHALLENGE_MESSAGE)
    if status == 404:
        return Classification("not_found", message)
    return None


def classify_generic(
    status: int, body: ErrorBody, headers: Mapping[str, str] | None = None, now_wall: float | None = None
) -> Classification:
    """The rules of no provider in particular: 401/challenge/404, then 429/499/503 retried after the message's
    or the headers' hint, other 5xx transient, the rest fatal."""
    message = body.message or f"HTTP {status}"
    common = classify_common(status, headers, message)
    if common is not None:
        return common
    header_hint = parse_header_hint(headers or {}, now_wall)
    return classify_rest(status, message, header_hint)


def classify_rest(status: int, message: str, header_hint: float | None) -> Classification:
    """The tail every rule set ends with: a quota status is retried (after the message's hint when it gives
    one, else the headers'), other 5xx are transient, the rest fatal."""
    if status in RETRYABLE_QUOTA_STATUSES:
        hint = parse_message_hint(message)
        if hint is not None:
            return delay_decision(hint, message)
        return Classification("retryable", message, header_hint)
    if status in TRANSIENT_STATUSES or status >= 500:
        return Classification("transient", message, header_hint)
    return Classification("fatal", message)


def format_wait(seconds: float) -> str:
    """`3 h 51 min`, `12 min`, `40 s`."""
    if seconds >= 3600:
        return f"{int(seconds // 3600)} h {int(seconds % 3600 // 60)} min"
    if seconds >= 60:
        return f"{round(seconds / 60)} min"
    return f"{seconds:.0f} s"
