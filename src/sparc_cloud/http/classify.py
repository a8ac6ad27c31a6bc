"""Reading error answers: google.rpc envelopes, Codex bodies, retry hints, and the classification that
decides retry / give up, following gemini-cli's order (utils/googleQuotaErrors.ts)."""

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
_LIMIT_ZERO = re.compile(r"limit:\s*0(?!\d|\.\d)")
# gemini-cli's capacity words (googleQuotaErrors.ts); "No capacity available" is not among them, so that text
# without details is plainly retryable. Capacity is not quota: retry.ts retries it quietly (gemini-cli utils/retry.ts).
_CAPACITY_WORDS = ("exhausted your capacity", "capacity exceeded", "model_capacity_exhausted")
_CAPACITY_REASONS = ("MODEL_CAPACITY_EXHAUSTED", "MODEL_CAPACITY_EXCEEDED")
_TERMINAL_REASONS = ("INSUFFICIENT_G1_CREDITS_BALANCE",)
# Codex usage limits (users' captures, e.g. badlogic/pi-mono issue 4172): no Retry-After; these headers and
# body fields say when it resets.
CODEX_RESET_HEADERS = ("x-codex-primary-reset-after-seconds",)


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


def parse_header_hint(headers: Mapping[str, str], now_wall: float | None = None) -> float | None:
    """Seconds from `retry-after-ms` or `Retry-After` (seconds or an HTTP date), else from Codex's
    `X-Codex-Primary-Reset-After-Seconds`."""
    lower = {k.lower(): v for k, v in headers.items()}
    hint = _retry_after(lower, now_wall)
    if hint is not None:
        return hint
    for name in CODEX_RESET_HEADERS:
        try:
            return max(0.0, float(lower[name]))
        except (KeyError, ValueError):
            continue
    return None


def is_challenge(status: int, headers: Mapping[str, str] | None) -> bool:
    """A Cloudflare challenge page (403 with `cf-mitigated: challenge`), not an answer of the API."""
    lower = {k.lower(): v for k, v in (headers or {}).items()}
    return status == 403 and lower.get("cf-mitigated", "").strip().lower() == "challenge"


def retry_after(headers: Mapping[str, str], now_wall: float | None = None) -> float | None:
    """Seconds from `retry-after-ms`, then `retry-after` (seconds or an HTTP date), as openai-python reads them."""
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
    codex_type: str = ""
    resets_at: float | None = None
    resets_in: float | None = None

    def detail(self, type_suffix: str) -> dict[str, Any] | None:
        """The first detail whose `@type` ends with `type_suffix`."""
        for item in self.details:
            if str(item.get("@type", "")).endswith(type_suffix):
                return item
        return None


def parse_error_body(text: str) -> ErrorBody:
    """Parse a google.rpc envelope (object or streaming array), a Codex body or plain text."""
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
            codex_type=next((v for v in (err.get("type"), err.get("code")) if isinstance(v, str)), ""),
            resets_at=float(resets) if isinstance(resets, int | float) and _number(resets) else None,
            resets_in=float(resets_in) if isinstance(resets_in, int | float) and _number(resets_in) else None,
        )
    if isinstance(err, str):
        return ErrorBody(message=str(data.get("error_description") or err), codex_type=err)
    detail = data.get("detail")
    if isinstance(detail, dict):
        return ErrorBody(message=str(detail.get("message") or detail), codex_type=str(detail.get("type") or ""))
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


def _delay_decision(delay: float, message: str) -> Classification:
    if delay > MAX_RETRYABLE_DELAY_S:
        return Classification("terminal", message, delay)
    return Classification("retryable", message, delay)


def classify(
    status: int, body: ErrorBody, headers: Mapping[str, str] | None = None, now_wall: float | None = None
) -> Classification:
    """Decide what an error answer means (gemini-cli's order, first match wins)."""
    message = body.message or f"HTTP {status}"
    header_hint = parse_header_hint(headers or {}, now_wall)
    if status == 401:
        return Classification("auth", message)
    if is_challenge(status, headers):
        return Classification("challenge", "the server answered with a Cloudflare challenge page (cf-mitigated: "
                                           "challenge), not with the API")
    if status == 404:
        return Classification("not_found", message)
    info = body.detail("google.rpc.ErrorInfo") or {}
    reason = str(info.get("reason", ""))
    domain = str(info.get("domain", ""))
    metadata = info.get("metadata") if isinstance(info.get("metadata"), dict) else {}
    assert isinstance(metadata, dict)
    if status == 403 and reason == "VALIDATION_REQUIRED" and "cloudcode-pa" in domain:
        help_ = body.detail("google.rpc.Help") or {}
        links = help_.get("links") or []
        url = links[0].get("url") if links and isinstance(links[0], dict) else None
        if not url and metadata.get("validation_link"):  # googleQuotaErrors.ts: no Help.links -> metadata
            url = str(metadata["validation_link"])
        return Classification("validation", message, validation_url=url)
    quota_status = status in RETRYABLE_QUOTA_STATUSES
    if quota_status and _LIMIT_ZERO.search(message):
        return Classification("terminal", message)
    lowered = message.lower()
    if quota_status and body.codex_type:
        return _classify_codex(body, message, header_hint, now_wall)
    if not body.details or not quota_status:
        hint = parse_message_hint(message)
        if hint is not None and quota_status:
            return _delay_decision(hint, message)
        if quota_status:
            if any(w in lowered for w in _CAPACITY_WORDS):
                return Classification("capacity", message, header_hint)
            return Classification("retryable", message, header_hint)
        return _classify_other(status, message, header_hint)
    failure = body.detail("google.rpc.QuotaFailure") or {}
    quota_ids = [str(v.get("quotaId", "")) for v in failure.get("violations") or [] if isinstance(v, dict)]
    if any("PerDay" in q or "Daily" in q for q in quota_ids):
        return Classification("terminal", f"You have exhausted your daily quota on this model. {message}")
    retry_info = body.detail("google.rpc.RetryInfo") or {}
    retry_delay = parse_duration(str(retry_info.get("retryDelay", ""))) if retry_info else None
    if reason in _CAPACITY_REASONS:
        return Classification("capacity", message, retry_delay if retry_delay is not None else header_hint)
    if reason in _TERMINAL_REASONS:
        return Classification("terminal", message)
    if "cloudcode-pa" in domain and reason:
        if reason == "RATE_LIMIT_EXCEEDED":
            delay = retry_delay
            if delay is None and metadata.get("quotaResetDelay"):
                delay = parse_duration(str(metadata["quotaResetDelay"]))
            if delay is None:
                return Classification("terminal", message)
            return _delay_decision(delay, message)
        if reason == "QUOTA_EXHAUSTED":
            return Classification("terminal", message)
    if retry_delay is not None:
        return _delay_decision(retry_delay, message)
    quota_limit = str(metadata.get("quota_limit", ""))
    if any("PerMinute" in q for q in quota_ids) or "PerMinute" in quota_limit:
        return Classification("retryable", message, 60.0)
    if "PerDay" in quota_limit or "Daily" in quota_limit:
        return Classification("terminal", f"You have exhausted your daily quota on this model. {message}")
    if any(w in lowered for w in _CAPACITY_WORDS):
        return Classification("capacity", message, header_hint)
    return Classification("retryable", message, header_hint or parse_message_hint(message))


def _classify_codex(
    body: ErrorBody, message: str, header_hint: float | None, now_wall: float | None
) -> Classification:
    if body.codex_type == "usage_not_included":
        return Classification("terminal", message)
    delay = header_hint
    if delay is None and body.resets_in is not None:
        delay = max(0.0, body.resets_in)
    if delay is None and body.resets_at is not None:
        delay = max(0.0, body.resets_at - (now_wall if now_wall is not None else time.time()))
    if delay is not None:
        if delay > MAX_RETRYABLE_DELAY_S and body.codex_type == "usage_limit_reached":
            message = f"{message}; it resets in {format_wait(delay)}"
        return _delay_decision(delay, message)
    return Classification("retryable", message)


def format_wait(seconds: float) -> str:
    """`3 h 51 min`, `12 min`, `40 s`."""
    if seconds >= 3600:
        return f"{int(seconds // 3600)} h {int(seconds % 3600 // 60)} min"
    if seconds >= 60:
        return f"{round(seconds / 60)} min"
    return f"{seconds:.0f} s"


def _classify_other(status: int, message: str, header_hint: float | None) -> Classification:
    if status in TRANSIENT_STATUSES or status >= 500:
        return Classification("transient", message, header_hint)
    return Classification("fatal", message)
