"""ChatClient against `responses` mocks: the Chat Completions wire format, usage, and openai-python's retry rules."""

from __future__ import annotations

import json

import pytest
import requests
import responses

from sparc_cloud.clients.openai import ChatClient, ChatConfig, RateHeaders
from sparc_cloud.errors import ApiError, AuthError, ModelNotFound, RetriesExhausted, TerminalQuota
from sparc_cloud.http.clock import FakeClock
from sparc_cloud.http.ratelimit import RateLimit, RateLimiters
from sparc_cloud.http.retry import RetryPolicy
from sparc_cloud.redact import SecretRegistry

BASE = "https://api.openai.example/v1"
URL = f"{BASE}/chat/completions"
KEY = "sk-MARKER-OPENAI-KEY-0001"


def completion(text: str = "Hello", **usage: object) -> dict[str, object]:
    return {"id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "gpt-4.1-2025-04-14",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18,
                      "prompt_tokens_details": {"cached_tokens": 3},
                      "completion_tokens_details": {"reasoning_tokens": 2}, **usage}}


def error(message: str, kind: str, code: str | None) -> dict[str, object]:
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}


def client(clock: FakeClock | None = None, limits: dict[tuple[str, str, str], RateLimit] | None = None,
           attempts: int = 4) -> tuple[ChatClient, FakeClock, SecretRegistry]:
    clock = clock or FakeClock()
    secrets = SecretRegistry()
    cfg = ChatConfig("openai", BASE, KEY, "OPENAI_BASE_URL", "OPENAI_API_KEY", 30.0)
    chat = ChatClient(cfg, session=requests.Session(), limiters=RateLimiters(clock, limits or {}),
                      policy=RetryPolicy(max_attempts=attempts, jitter=0.0, initial_s=0.1), clock=clock, secrets=secrets)
    return chat, clock, secrets


@responses.activate
def test_a_completion_sends_system_and_user_messages_and_reads_usage_with_details() -> None:
    responses.post(URL, json=completion("The answer"))
    chat, _, _ = client()
    result = chat.complete("the prompt", model="gpt-4.1", system="be brief")
    sent = responses.calls[0].request
    assert json.loads(sent.body or b"") == {"model": "gpt-4.1", "messages": [
        {"role": "system", "content": "be brief"}, {"role": "user", "content": "the prompt"}]}
    assert sent.headers["Authorization"] == f"Bearer {KEY}"
    assert result.text == "The answer" and result.model == "gpt-4.1-2025-04-14" and result.attempts == 1
    assert (result.usage.prompt_tokens, result.usage.completion_tokens, result.usage.total_tokens) == (11, 7, 18)
    assert result.usage.details == {"cached_tokens": 3, "reasoning_tokens": 2}
    assert result.request_id == "chatcmpl-1"


@responses.activate
def test_retry_after_ms_wins_over_retry_after_and_429_is_retried() -> None:
    responses.post(URL, status=429, json=error("Rate limit reached", "requests", "rate_limit_exceeded"),
                   headers={"retry-after-ms": "1500", "retry-after": "30"})
    responses.post(URL, json=completion())
    chat, clock, _ = client()
    assert chat.complete("p", model="gpt-4.1").attempts == 2
    assert max(clock.sleeps) == pytest.approx(1.5, abs=0.16)  # retry-after-ms, not retry-after's 30 s


@responses.activate
@pytest.mark.parametrize("status", [408, 409, 500, 502, 503])
def test_408_409_and_5xx_are_retried(status: int) -> None:
    responses.post(URL, status=status, json=error("try again", "server_error", None), headers={"retry-after": "2"})
    responses.post(URL, json=completion("ok"))
    chat, _, _ = client()
    result = chat.complete("p", model="gpt-4.1")
    assert result.text == "ok" and result.attempts == 2


@responses.activate
def test_x_should_retry_false_stops_a_5xx_and_true_retries_a_400() -> None:
    responses.post(URL, status=500, json=error("do not retry", "server_error", None),
                   headers={"x-should-retry": "false"})
    chat, _, _ = client()
    with pytest.raises(ApiError, match="do not retry"):
        chat.complete("p", model="gpt-4.1")
    assert len(responses.calls) == 1
    responses.reset()
    responses.post(URL, status=400, json=error("flaky", "invalid_request_error", None),
                   headers={"x-should-retry": "true"})
    responses.post(URL, json=completion("second"))
    assert chat.complete("p", model="gpt-4.1").text == "second"


@responses.activate
def test_insufficient_quota_is_terminal_with_its_message() -> None:
    responses.post(URL, status=429, json=error("You exceeded your current quota, please check your plan.",
                                               "insufficient_quota", "insufficient_quota"))
    chat, _, _ = client()
    with pytest.raises(TerminalQuota, match="You exceeded your current quota") as info:
        chat.complete("p", model="gpt-4.1")
    assert "not retried" in str(info.value) and len(responses.calls) == 1


@responses.activate
@pytest.mark.parametrize(("status", "body", "kind", "says"), [
    (400, error("This model's maximum context length is 8192 tokens.", "invalid_request_error",
                "context_length_exceeded"), ApiError, "pick a model with a longer context"),
    (400, error("Unrecognized request argument", "invalid_request_error", None), ApiError, "check the model name"),
    (401, error("Incorrect API key provided", "invalid_request_error", "invalid_api_key"), AuthError,
     "check OPENAI_API_KEY"),
    (404, error("The model `gpt-9` does not exist", "invalid_request_error", "model_not_found"), ModelNotFound,
     "check the model name in the project file and OPENAI_BASE_URL"),
])
def test_fatal_answers_say_what_to_change(status: int, body: dict[str, object], kind: type[Exception],
                                         says: str) -> None:
    responses.post(URL, status=status, json=body)
    chat, _, _ = client()
    with pytest.raises(kind, match=says):
        chat.complete("p", model="gpt-9")
    assert len(responses.calls) == 1


@responses.activate
def test_retries_give_up_after_the_policy_and_the_key_never_shows() -> None:
    responses.post(URL, status=503, json=error(f"upstream echoed {KEY}", "server_error", None))
    chat, _, _ = client(attempts=3)
    with pytest.raises(RetriesExhausted) as info:
        chat.complete("p", model="gpt-4.1")
    assert len(responses.calls) == 3 and KEY not in str(info.value) and "***" in str(info.value)


def test_rate_limit_headers_parse_go_durations() -> None:
    parsed = RateHeaders.parse({"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "6m0s",
                                "x-ratelimit-remaining-tokens": "120", "x-ratelimit-reset-tokens": "20ms"})
    assert (parsed.remaining_requests, parsed.reset_requests_s, parsed.remaining_tokens) == (0, 360.0, 120)
    assert parsed.reset_tokens_s == pytest.approx(0.02)
    assert parsed.pause_s(10) == 360.0
    assert RateHeaders.parse({"x-ratelimit-remaining-requests": "5", "x-ratelimit-reset-requests": "1s",
                              "x-ratelimit-remaining-tokens": "100", "x-ratelimit-reset-tokens": "2s"}
                             ).pause_s(500) == 2.0
    assert RateHeaders.parse({}).pause_s(10**9) == 0.0


@responses.activate
def test_exhausted_request_headers_pause_the_limiter_until_the_reset() -> None:
    responses.post(URL, json=completion(), headers={"x-ratelimit-remaining-requests": "0",
                                                    "x-ratelimit-reset-requests": "1s"})
    responses.post(URL, json=completion())
    chat, clock, _ = client(limits={("openai", "generate", "*"): RateLimit(per_minute=6000, burst=100)})
    chat.complete("p", model="gpt-4.1")
    assert clock.sleeps == []
    chat.complete("p", model="gpt-4.1")
    assert sum(clock.sleeps) >= 1.0  # the second request waited for the reset the server announced


@responses.activate
def test_without_headers_the_configured_limit_paces_requests() -> None:
    for _ in range(3):
        responses.post(URL, json=completion())
    chat, clock, _ = client(limits={("openai", "generate", "*"): RateLimit(per_minute=60, burst=1)})
    for _ in range(3):
        chat.complete("p", model="llama3")
    assert sum(clock.sleeps) >= 1.9  # 60/min, burst 1: a second between requests


@responses.activate
def test_a_200_without_choices_is_malformed_and_retried_once() -> None:
    responses.post(URL, json={"object": "chat.completion", "choices": []})
    responses.post(URL, json=completion("fine"))
    chat, _, _ = client()
    assert chat.complete("p", model="gpt-4.1").text == "fine"


@responses.activate
def test_ollama_style_error_strings_are_read() -> None:
    responses.post(URL, status=404, json={"error": "model \"llama9\" not found, try pulling it first"})
    chat, _, _ = client()
    with pytest.raises(ModelNotFound, match="try pulling it first"):
        chat.complete("p", model="llama9")


@responses.activate
def test_tokens_per_minute_paces_requests_by_their_size() -> None:
    for _ in range(2):
        responses.post(URL, json=completion())
    limits = {("openai", "generate", "*"): RateLimit(per_minute=6000, burst=100),
              ("openai", "tokens", "*"): RateLimit(per_minute=60, burst=1)}  # 60 000 tokens a minute
    chat, clock, _ = client(limits=limits)
    chat.complete("x" * 4000, model="gpt-4.1")  # about 1 000 tokens: one unit
    assert clock.sleeps == []
    chat.complete("x" * 4000, model="gpt-4.1")
    assert sum(clock.sleeps) >= 0.9  # the next thousand tokens wait for the token budget, not the request one
