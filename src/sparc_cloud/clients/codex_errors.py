"""Codex Cloud's error rules: usage limits (`usage_limit_reached`, `usage_not_included`) with their reset hints
(users' captures, e.g. badlogic/pi-mono issue 4172: no Retry-After; a reset header and body fields say when)."""

from __future__ import annotations

import time
from collections.abc import Mapping

from sparc_cloud.http.classify import (
    MAX_RETRYABLE_DELAY_S,
    RETRYABLE_QUOTA_STATUSES,
    Classification,
    ErrorBody,
    classify_common,
    classify_rest,
    delay_decision,
    format_wait,
    parse_header_hint,
)

RESET_HEADERS = ("x-codex-primary-reset-after-seconds",)


def classify(
    status: int, body: ErrorBody, headers: Mapping[str, str] | None = None, now_wall: float | None = None
) -> Classification:
    """Decide what a Codex error answer means: the shared rules, with its usage limits and reset hints."""
    message = body.message or f"HTTP {status}"
    common = classify_common(status, headers, message)
    if common is not None:
        return common
    header_hint = parse_header_hint(headers or {}, now_wall, RESET_HEADERS)
    if status in RETRYABLE_QUOTA_STATUSES and body.error_type:
        return _usage_limit(body, message, header_hint, now_wall)
    return classify_rest(status, message, header_hint)


def _usage_limit(body: ErrorBody, message: str, header_hint: float | None, now_wall: float | None) -> Classification:
    if body.error_type == "usage_not_included":
        return Classification("terminal", message)
    delay = header_hint
    if delay is None and body.resets_in is not None:
        delay = max(0.0, body.resets_in)
    if delay is None and body.resets_at is not None:
        delay = max(0.0, body.resets_at - (now_wall if now_wall is not None else time.time()))
    if delay is not None:
        if delay > MAX_RETRYABLE_DELAY_S and body.error_type == "usage_limit_reached":
            message = f"{message}; it resets in {format_wait(delay)}"
        return delay_decision(delay, message)
    return Classification("retryable", message)
