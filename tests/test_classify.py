"""Error classification and retry-hint parsing, on the payload shapes of shared/api/gemini.md."""

from __future__ import annotations

import json

import pytest

from sparc_cloud.http.classify import (
    classify,
    parse_duration,
    parse_error_body,
    parse_header_hint,
    parse_message_hint,
)
from sparc_cloud.sim import envelopes as env

CLOUDCODE = "cloudcode-pa.googleapis.com"  # the ErrorInfo domain Code Assist reports (data, never contacted)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("0.539477544s", 0.539477544),
        ("56s", 56.0),
        ("539.477544ms", 0.539477544),
        ("4h30m28.06s", 4 * 3600 + 30 * 60 + 28.06),
        ("161h39m41.300432511s", 161 * 3600 + 39 * 60 + 41.300432511),
        ("9h22m20s", 9 * 3600 + 22 * 60 + 20),
        ("1.5", 1.5),
    ],
)
def test_parse_duration_reads_proto_and_go_styles(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


def test_parse_duration_rejects_garbage() -> None:
    assert parse_duration("soon") is None
    assert parse_duration("") is None


@pytest.mark.parametrize(
    ("message", "seconds"),
    [
        ("Quota exceeded ... limit: 2\nPlease retry in 44.097740004s.", 44.097740004),
        ("Please retry in 500ms", 0.5),
        ("You have exhausted your capacity on this model. Your quota will reset after 39s.", 39.0),
        ("Individual quota reached. Resets in 9h22m20s.", 9 * 3600 + 22 * 60 + 20),
    ],
)
def test_parse_message_hint_reads_every_text_form(message: str, seconds: float) -> None:
    assert parse_message_hint(message) == pytest.approx(seconds)


def test_header_hints_prefer_milliseconds_then_seconds_then_dates() -> None:
    assert parse_header_hint({"retry-after-ms": "1500", "Retry-After": "9"}) == 1.5
    assert parse_header_hint({"Retry-After": "7"}) == 7.0
    assert parse_header_hint({"Retry-After": "Wed, 21 Oct 2015 07:28:10 GMT"},
                             now_wall=1445412480.0) == pytest.approx(10.0)
    assert parse_header_hint({}) is None


def _classify(status: int, body: object, headers: dict[str, str] | None = None) -> tuple[str, float | None]:
    decision = classify(status, parse_error_body(json.dumps(body)), headers)
    return decision.kind, decision.delay


def test_code_assist_rate_limit_is_retryable_with_retry_info_delay() -> None:
    assert _classify(429, env.code_assist_rate_limit("gemini-2.5-pro", 0.539477544)) == pytest.approx(
        ("retryable", 0.539477544))


def test_public_api_per_minute_quota_uses_retry_info() -> None:
    kind, delay = _classify(429, env.public_rate_limit("gemini-2.5-flash", 44.09))
    assert kind == "retryable"
    assert delay == 44.0


def test_daily_quota_is_terminal_in_both_apis() -> None:
    assert _classify(429, env.daily_quota("gemini-2.5-pro", code_assist=True))[0] == "terminal"
    assert _classify(429, env.daily_quota("gemini-2.5-pro", code_assist=False))[0] == "terminal"


def test_capacity_exhausted_is_retried_not_terminal() -> None:
    """gemini.md section 6 (gemini-cli utils/retry.ts 346-395, issue 23520): capacity is not quota."""
    assert _classify(503, env.capacity("gemini-2.5-pro"))[0] == "capacity"


def test_limit_zero_is_terminal_but_limit_ten_is_not() -> None:
    zero = env.google_error(429, "RESOURCE_EXHAUSTED", "Quota exceeded for metric: x, limit: 0")
    ten = env.google_error(429, "RESOURCE_EXHAUSTED", "Quota exceeded for metric: x, limit: 10")
    assert _classify(429, zero)[0] == "terminal"
    assert _classify(429, ten)[0] == "retryable"


def test_delay_over_300_seconds_is_terminal() -> None:
    body = env.google_error(429, "RESOURCE_EXHAUSTED", "slow down",
                            [{"@type": env.RPC_TYPE + "RetryInfo", "retryDelay": "301s"}])
    assert _classify(429, body)[0] == "terminal"


def test_cloudcode_rate_limit_without_retry_info_is_terminal() -> None:
    body = env.google_error(429, "RESOURCE_EXHAUSTED", "rate limited", [
        {"@type": env.RPC_TYPE + "ErrorInfo", "reason": "RATE_LIMIT_EXCEEDED",
         "domain": CLOUDCODE, "metadata": {}}])
    assert _classify(429, body)[0] == "terminal"


def test_generic_resource_exhausted_is_retryable_with_header_hint() -> None:
    body = env.google_error(429, "RESOURCE_EXHAUSTED", "Resource has been exhausted (e.g. check quota).")
    assert _classify(429, body, {"Retry-After": "3"}) == ("retryable", 3.0)


def test_streaming_array_envelope_is_understood() -> None:
    body = [env.code_assist_rate_limit("gemini-2.5-flash", 2.0)]
    assert _classify(429, body) == pytest.approx(("retryable", 2.0))


def test_server_errors_are_transient_and_client_errors_fatal() -> None:
    assert _classify(500, env.google_simple(500))[0] == "transient"
    assert classify(502, parse_error_body(env.BAD_GATEWAY_HTML)).kind == "transient"
    assert _classify(504, env.google_simple(504))[0] == "transient"
    assert _classify(400, env.google_simple(400))[0] == "fatal"
    assert _classify(403, env.google_simple(403))[0] == "fatal"
    assert _classify(404, env.model_not_found("gemini-9"))[0] == "not_found"
    assert _classify(401, env.google_simple(401))[0] == "auth"


def test_validation_required_carries_its_url() -> None:
    body = env.google_error(403, "PERMISSION_DENIED", "Verify your account", [
        {"@type": env.RPC_TYPE + "ErrorInfo", "reason": "VALIDATION_REQUIRED",
         "domain": CLOUDCODE},
        {"@type": env.RPC_TYPE + "Help", "links": [{"description": "v", "url": "https://verify.example/x"}]},
    ])
    decision = classify(403, parse_error_body(json.dumps(body)))
    assert decision.kind == "validation"
    assert decision.validation_url == "https://verify.example/x"


def test_codex_usage_limit_uses_retry_after_or_resets_at() -> None:
    assert _classify(429, env.codex_usage_limit(1.0), {"retry-after-ms": "1200"}) == ("retryable", 1.2)
    kind, _ = _classify(429, {"error": {"type": "usage_limit_reached", "resets_at": 4_000_000_000}})
    assert kind == "terminal"
    assert _classify(429, {"error": {"type": "usage_not_included"}})[0] == "terminal"
