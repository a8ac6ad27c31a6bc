"""Error classification and retry-hint parsing, on the payload shapes gemini-cli and openai/codex users see."""

from __future__ import annotations

import json

import pytest

from sparc_cloud.clients import codex_errors
from sparc_cloud.clients.gemini_errors import classify
from sparc_cloud.http.classify import (
    classify_generic,
    parse_duration,
    parse_error_body,
    parse_header_hint,
    parse_message_hint,
)
from sparc_cloud.sim import codex_envelopes
from sparc_cloud.sim import gemini_envelopes as env
from sparc_cloud.sim.envelopes import BAD_GATEWAY_HTML

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


def _codex(status: int, body: object, headers: dict[str, str] | None = None) -> tuple[str, float | None]:
    decision = codex_errors.classify(status, parse_error_body(json.dumps(body)), headers)
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
    assert classify(502, parse_error_body(BAD_GATEWAY_HTML)).kind == "transient"
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
    assert _codex(429, codex_envelopes.codex_usage_limit(1.0), {"retry-after-ms": "1200"}) == ("retryable", 1.2)
    kind, _ = _codex(429, {"error": {"type": "usage_limit_reached", "resets_at": 4_000_000_000}})
    assert kind == "terminal"
    assert _codex(429, {"error": {"type": "usage_not_included"}})[0] == "terminal"


def test_no_capacity_text_without_details_is_retryable() -> None:
    """gemini.md section 6: gemini-cli's capacity regex does not match "No capacity available"."""
    body = env.google_error(503, "UNAVAILABLE", "No capacity available for model gemini-3.1-pro-preview on the server")
    assert _classify(503, body)[0] == "retryable"


def test_codex_usage_limit_as_users_captured_it_reads_the_reset_header() -> None:
    """codex.md section 8 (badlogic/pi-mono issue 4172): 429, no Retry-After, X-Codex-Primary-Reset-After-Seconds."""
    body = {"error": {"type": "usage_limit_reached", "message": "The usage limit has been reached", "plan_type": "plus",
                      "resets_at": 1777936568, "eligible_promo": None, "resets_in_seconds": 13872}}
    headers = {"X-Codex-Primary-Reset-After-Seconds": "13873", "X-Codex-Primary-Used-Percent": "100"}
    decision = codex_errors.classify(429, parse_error_body(json.dumps(body)), headers, now_wall=1777922696.0)
    assert decision.kind == "terminal" and decision.delay == 13873.0
    assert "resets in 3 h 51 min" in decision.message


@pytest.mark.parametrize(("error", "headers", "delay"), [
    ({"resets_in_seconds": 42}, {}, 42.0),  # the body's seconds when the header is missing
    ({"resets_at": 1_700_000_030}, {}, 30.0),  # else resets_at against the clock
    ({"resets_in_seconds": 42}, {"x-codex-primary-reset-after-seconds": "7"}, 7.0),  # the header first
])
def test_codex_usage_limit_reads_each_of_its_three_hints(error: dict[str, int], headers: dict[str, str],
                                                         delay: float) -> None:
    body = {"error": {"type": "usage_limit_reached", "message": "The usage limit has been reached", **error}}
    decision = codex_errors.classify(429, parse_error_body(json.dumps(body)), headers, now_wall=1_700_000_000.0)
    assert (decision.kind, decision.delay) == ("retryable", delay)


def test_a_cloudflare_challenge_is_recognised_not_parsed() -> None:
    """openai/codex issues 16052, 18456, 21735: 403, `cf-mitigated: challenge`, an HTML page."""
    html = "<!DOCTYPE html><html><head><title>Just a moment...</title></head><body>...</body></html>"
    for rules in (classify, codex_errors.classify, classify_generic):
        decision = rules(403, parse_error_body(html), {"cf-mitigated": "challenge", "Content-Type": "text/html"})
        assert decision.kind == "challenge" and "<html" not in decision.message.lower()


def test_unparsable_retry_after_dates_are_ignored() -> None:
    assert parse_header_hint({"Retry-After": "soon-ish"}) is None


def test_the_shared_rules_know_no_provider_but_read_every_hint() -> None:
    """`http/` alone: a provider's reset header means nothing to it; retry-after and message hints do."""
    body = parse_error_body(json.dumps({"error": {"type": "usage_limit_reached", "message": "slow down"}}))
    decision = classify_generic(429, body, {"x-codex-primary-reset-after-seconds": "7"})
    assert (decision.kind, decision.delay) == ("retryable", None)
    assert classify_generic(429, body, {"Retry-After": "3"}).delay == 3.0
    assert classify_generic(503, parse_error_body("Please retry in 2s")).delay == 2.0
    assert classify_generic(500, body).kind == "transient"
    assert classify_generic(400, body).kind == "fatal"
    assert parse_header_hint({"X-Reset": "9"}, extra=("x-reset",)) == 9.0
