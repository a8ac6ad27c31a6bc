"""Gemini's error rules: google.rpc envelopes (ErrorInfo reasons, QuotaFailure, RetryInfo, Help) classified in
gemini-cli's order (utils/googleQuotaErrors.ts), first match wins. `http/` holds only what every API shares."""

from __future__ import annotations

import re
from collections.abc import Mapping

from sparc_cloud.http.classify import (
    RETRYABLE_QUOTA_STATUSES,
    Classification,
    ErrorBody,
    classify_common,
    classify_rest,
    delay_decision,
    parse_duration,
    parse_header_hint,
    parse_message_hint,
)

_LIMIT_ZERO = re.compile(r"limit:\s*0(?!\d|\.\d)")
# gemini-cli's capacity words (googleQuotaErrors.ts); "No capacity available" is not among them, so that text
# without details is plainly retryable. Capacity is not quota: retry.ts retries it quietly (gemini-cli utils/retry.ts).
_CAPACITY_WORDS = ("exhausted your capacity", "capacity exceeded", "model_capacity_exhausted")
_CAPACITY_REASONS = ("MODEL_CAPACITY_EXHAUSTED", "MODEL_CAPACITY_EXCEEDED")
_TERMINAL_REASONS = ("INSUFFICIENT_G1_CREDITS_BALANCE",)
_CODE_ASSIST_DOMAIN = "cloudcode-pa"
_DAILY = "You have exhausted your daily quota on this model."


def classify(
    status: int, body: ErrorBody, headers: Mapping[str, str] | None = None, now_wall: float | None = None
) -> Classification:
    """Decide what a Gemini error answer means (gemini-cli's order, first match wins)."""
    message = body.message or f"HTTP {status}"
    common = classify_common(status, headers, message)
    if common is not None:
        return common
    header_hint = parse_header_hint(headers or {}, now_wall)
    info = body.detail("google.rpc.ErrorInfo") or {}
    reason = str(info.get("reason", ""))
    domain = str(info.get("domain", ""))
    raw_metadata = info.get("metadata")
    metadata: dict[str, object] = raw_metadata if isinstance(raw_metadata, dict) else {}
    if status == 403 and reason == "VALIDATION_REQUIRED" and _CODE_ASSIST_DOMAIN in domain:
        return _validation(body, message, metadata)
    quota_status = status in RETRYABLE_QUOTA_STATUSES
    if quota_status and _LIMIT_ZERO.search(message):
        return Classification("terminal", message)
    if not body.details or not quota_status:
        if quota_status and parse_message_hint(message) is None and _capacity_words(message):
            return Classification("capacity", message, header_hint)
        return classify_rest(status, message, header_hint)
    return _classify_details(body, message, reason, domain, metadata, header_hint)


def _validation(body: ErrorBody, message: str, metadata: Mapping[str, object]) -> Classification:
    help_ = body.detail("google.rpc.Help") or {}
    links = help_.get("links") or []
    url = links[0].get("url") if links and isinstance(links[0], dict) else None
    if not url and metadata.get("validation_link"):  # googleQuotaErrors.ts: no Help.links -> metadata
        url = str(metadata["validation_link"])
    return Classification("validation", message, validation_url=url)


def _capacity_words(message: str) -> bool:
    lowered = message.lower()
    return any(w in lowered for w in _CAPACITY_WORDS)


def _classify_details(body: ErrorBody, message: str, reason: str, domain: str, metadata: Mapping[str, object],
                      header_hint: float | None) -> Classification:
    failure = body.detail("google.rpc.QuotaFailure") or {}
    quota_ids = [str(v.get("quotaId", "")) for v in failure.get("violations") or [] if isinstance(v, dict)]
    if any("PerDay" in q or "Daily" in q for q in quota_ids):
        return Classification("terminal", f"{_DAILY} {message}")
    retry_info = body.detail("google.rpc.RetryInfo") or {}
    retry_delay = parse_duration(str(retry_info.get("retryDelay", ""))) if retry_info else None
    if reason in _CAPACITY_REASONS:
        return Classification("capacity", message, retry_delay if retry_delay is not None else header_hint)
    if reason in _TERMINAL_REASONS:
        return Classification("terminal", message)
    if _CODE_ASSIST_DOMAIN in domain and reason:
        if reason == "RATE_LIMIT_EXCEEDED":
            delay = retry_delay
            if delay is None and metadata.get("quotaResetDelay"):
                delay = parse_duration(str(metadata["quotaResetDelay"]))
            if delay is None:
                return Classification("terminal", message)
            return delay_decision(delay, message)
        if reason == "QUOTA_EXHAUSTED":
            return Classification("terminal", message)
    if retry_delay is not None:
        return delay_decision(retry_delay, message)
    quota_limit = str(metadata.get("quota_limit", ""))
    if any("PerMinute" in q for q in quota_ids) or "PerMinute" in quota_limit:
        return Classification("retryable", message, 60.0)
    if "PerDay" in quota_limit or "Daily" in quota_limit:
        return Classification("terminal", f"{_DAILY} {message}")
    if _capacity_words(message):
        return Classification("capacity", message, header_hint)
    return Classification("retryable", message, header_hint or parse_message_hint(message))
