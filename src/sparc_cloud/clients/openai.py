"""A client of any OpenAI-compatible Chat Completions server (OpenAI, Ollama, vLLM, llama.cpp, LiteLLM,
OpenRouter): `POST {base}/chat/completions` with a system and a user message.

Its error rules are its own, as openai-python decides them (`_client.py` `_make_status_error`,
`_base_client.py` `_should_retry` / `_parse_retry_after_header`): `x-should-retry` first; 408, 409, 429
and 5xx retried, after `retry-after-ms`, then `retry-after` (seconds or an HTTP date) when 0-60 s, else
backoff; `insufficient_quota` is terminal; `context_length_exceeded`, 400, 401, 403 and 404 are fatal
with a message saying what to change. The `x-ratelimit-remaining-*` / `x-ratelimit-reset-*` headers
pause the shared limiter before the server would answer 429; servers that send none (Ollama, vLLM,
llama.cpp) are paced by the configured limits only."""

from __future__ import annotations

import json
import math
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import requests

from sparc_cloud.errors import (
    ApiError,
    AuthError,
    MalformedResponse,
    ModelNotFound,
    RateLimited,
    SparcError,
    TerminalQuota,
    TransientError,
)
from sparc_cloud.http.classify import parse_duration, retry_after
from sparc_cloud.http.clock import Clock
from sparc_cloud.http.ratelimit import Key, RateLimiters
from sparc_cloud.http.retry import RetryNotice, RetryPolicy, call_with_retry
from sparc_cloud.http.transport import exchange
from sparc_cloud.redact import SecretRegistry, hide_userinfo, url_secrets

MAX_HINT_S = 60.0  # openai-python honours retry-after only up to 60 s; longer (or none) means its own backoff
TOKENS_PER_UNIT = 1000


@dataclass(frozen=True)
class ChatConfig:
    """One OpenAI-compatible endpoint."""

    name: str  # the backend name: limiter keys and messages
    base_url: str
    api_key: str | None
    base_setting: str  # where the URL comes from (OPENAI_BASE_URL, or `[backends.NAME] base_url`)
    key_setting: str  # where the key comes from (OPENAI_API_KEY, or the table's api_key_env)
    timeout_s: float = 120.0

    @property
    def shown_url(self) -> str:
        """`base_url` as it may be printed: a password in it shown as `***`."""
        return hide_userinfo(self.base_url)


@dataclass
class ChatUsage:
    """Tokens as the server counts them."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    details: dict[str, int] = field(default_factory=dict)  # cached_tokens, reasoning_tokens, ...


@dataclass
class ChatResult:
    """One completion."""

    text: str
    model: str
    usage: ChatUsage
    attempts: int
    request_id: str | None


def _error_fields(text: str) -> tuple[str, str | None, str | None]:
    """(message, type, code) of an `{"error": {"message", "type", "param", "code"}}` body (or any body)."""
    try:
        data = json.loads(text)
    except ValueError:
        return (text.strip()[:300] or "no message"), None, None
    err = data.get("error") if isinstance(data, dict) else None
    if isinstance(err, dict):
        code = err.get("code")
        return str(err.get("message") or "no message"), _str(err.get("type")), _str(code)
    if isinstance(err, str):  # Ollama and llama.cpp send {"error": "..."}
        return err, None, None
    if isinstance(data, dict) and data.get("message"):
        return str(data["message"]), None, None
    return text.strip()[:300] or "no message", None, None


def _str(value: object) -> str | None:
    return None if value is None else str(value)


def classify_error(status: int, text: str, headers: Mapping[str, str], *, endpoint: str, config: ChatConfig,
                   model: str, secrets: SecretRegistry, now_wall: float) -> SparcError:
    """The error to raise for one non-2xx answer (openai-python's rules; see the module docstring)."""
    message, kind, code = _error_fields(text)
    msg = secrets.redact(f"{endpoint}: HTTP {status}: {message}")
    lower = {k.lower(): v for k, v in headers.items()}
    hint = retry_after(lower, now_wall)
    delay = hint if hint is not None and 0 < hint <= MAX_HINT_S else None
    if code == "insufficient_quota" or kind == "insufficient_quota":
        return TerminalQuota(f"{msg} (the account has no credit left; add some, or point {config.base_setting} at "
                             "another server; not retried)", status=status, endpoint=endpoint)
    if code == "context_length_exceeded":
        return ApiError(f"{msg}. The prompt is longer than {model}'s context: pick a model with a longer context "
                        "in the project file, or shorten the inputs (fewer research topics or components).",
                        status=status, endpoint=endpoint)
    should = lower.get("x-should-retry", "").strip().lower()
    retry = should == "true" or (should != "false" and (status in (408, 409, 429) or status >= 500))
    if retry:
        if status == 429:
            return RateLimited(msg, status=status, endpoint=endpoint, delay=delay)
        return TransientError(msg, status=status, endpoint=endpoint, delay=delay)
    if status == 401:
        return AuthError(f"{msg}. The server refused the API key: check {config.key_setting} (a key for "
                         f"{config.shown_url}).")
    if status == 403:
        return ApiError(f"{msg}. The key may not use {model} here: check the model name and the key's permissions.",
                        status=status, endpoint=endpoint)
    if status == 404:
        return ModelNotFound(f"{msg}. No model {model!r} (or no chat/completions) at {config.shown_url}: check the "
                             f"model name in the project file and {config.base_setting}.", status=status,
                             endpoint=endpoint)
    if status == 400:
        return ApiError(f"{msg}. The server refused the request: check the model name ({model}) and that "
                        f"{config.shown_url} speaks the OpenAI Chat Completions API.", status=status,
                        endpoint=endpoint)
    return ApiError(msg, status=status, endpoint=endpoint)


@dataclass
class RateHeaders:
    """What `x-ratelimit-*` headers say: requests and tokens left, and seconds until each resets."""

    remaining_requests: int | None = None
    remaining_tokens: int | None = None
    reset_requests_s: float | None = None
    reset_tokens_s: float | None = None

    @classmethod
    def parse(cls, headers: Mapping[str, str]) -> RateHeaders:
        """Read the headers ("6m0s", "1s", "20ms" durations); absent or unreadable ones stay None."""
        lower = {k.lower(): v for k, v in headers.items()}

        def number(name: str) -> int | None:
            try:
                return int(float(lower[name]))
            except (KeyError, ValueError):
                return None

        def seconds(name: str) -> float | None:
            return parse_duration(lower[name]) if name in lower else None

        return cls(number("x-ratelimit-remaining-requests"), number("x-ratelimit-remaining-tokens"),
                   seconds("x-ratelimit-reset-requests"), seconds("x-ratelimit-reset-tokens"))

    def pause_s(self, next_tokens: int) -> float:
        """How long the next request (of about `next_tokens` tokens) should wait: 0 while there is room."""
        waits = [0.0]
        if self.remaining_requests is not None and self.remaining_requests <= 0 and self.reset_requests_s:
            waits.append(self.reset_requests_s)
        if self.remaining_tokens is not None and self.remaining_tokens < next_tokens and self.reset_tokens_s:
            waits.append(self.reset_tokens_s)
        return max(waits)


class ChatClient:
    """Chat Completions on one endpoint, paced by the shared limiters."""

    def __init__(self, config: ChatConfig, *, session: requests.Session, limiters: RateLimiters,
                 policy: RetryPolicy, clock: Clock, secrets: SecretRegistry,
                 on_retry: Callable[[RetryNotice], None] | None = None) -> None:
        self.config = config
        self.session = session
        self.limiters = limiters
        self.policy = policy
        self.clock = clock
        self.secrets = secrets
        self.on_retry = on_retry
        secrets.add(config.api_key, *url_secrets(config.base_url))
        self._jitter = random.Random()  # noqa: S311 - jitter, not crypto

    def _headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self.config.api_key:
            headers["Authorization"] = f"Bearer {self.config.api_key}"
        return headers

    def key(self, model: str) -> Key:
        """The limiter key of this endpoint's requests for `model`."""
        return (self.config.name, "generate", model)

    def _pace_tokens(self, tokens: int, on_wait: Callable[[float, str], None] | None) -> None:
        """With `tokens_per_minute` configured, take one slot per started thousand tokens."""
        key: Key = (self.config.name, "tokens", "*")
        if key not in self.limiters.limits:
            return
        for _ in range(max(1, math.ceil(tokens / TOKENS_PER_UNIT))):
            self.limiters.acquire(key, on_wait)

    def complete(self, prompt: str, *, model: str, system: str | None = None,
                 on_retry: Callable[[RetryNotice], None] | None = None,
                 on_wait: Callable[[float, str], None] | None = None,
                 messages: list[dict[str, str]] | None = None,
                 response_format: dict[str, Any] | None = None) -> ChatResult:
        """One chat completion (retried under the policy). `messages` replaces system + prompt when given;
        `response_format` asks for JSON (`json_schema` or `json_object`)."""
        url = f"{self.config.base_url}/chat/completions"
        endpoint = f"{self.config.name} chat/completions ({model})"
        if messages is None:
            messages = ([{"role": "system", "content": system}] if system else []) + \
                       [{"role": "user", "content": prompt}]
        body: dict[str, Any] = {"model": model, "messages": messages}
        if response_format is not None:
            body["response_format"] = response_format
        key = self.key(model)
        estimate = sum(len(m["content"]) for m in messages) // 4

        def steer(headers: Mapping[str, str]) -> None:
            wait = RateHeaders.parse(headers).pause_s(estimate)
            if wait > 0:
                self.limiters.pause(key, wait)

        def attempt() -> Any:
            self._pace_tokens(estimate, on_wait)
            self.limiters.acquire(key, on_wait)
            data = exchange(
                self.session, "POST", url, endpoint=endpoint, secrets=self.secrets, now_wall=self.clock.wall(),
                timeout_s=self.config.timeout_s, headers=self._headers(), json_body=body,
                origin=self.config.base_setting, on_headers=steer,
                classify_error=lambda status, text, headers: classify_error(
                    status, text, headers, endpoint=endpoint, config=self.config, model=model, secrets=self.secrets,
                    now_wall=self.clock.wall()),
            )
            return _parse_completion(data, endpoint)

        result, attempts = call_with_retry(
            attempt, policy=self.policy, clock=self.clock, endpoint=endpoint, on_retry=on_retry or self.on_retry,
            rng=self._jitter, on_rate_limited=lambda s: self.limiters.pause(key, s),
        )
        text, answered_by, usage, request_id = result
        return ChatResult(text=text, model=answered_by or model, usage=usage, attempts=attempts,
                          request_id=request_id)

    def models(self) -> list[str]:
        """The model ids `GET {base}/models` lists (one short attempt; doctor's reachability check)."""
        data = exchange(self.session, "GET", f"{self.config.base_url}/models", endpoint=f"{self.config.name} models",
                        secrets=self.secrets, now_wall=self.clock.wall(), timeout_s=self.config.timeout_s,
                        headers=self._headers(), origin=self.config.base_setting,
                        classify_error=lambda status, text, headers: classify_error(
                            status, text, headers, endpoint=f"{self.config.name} models", config=self.config,
                            model="(any)", secrets=self.secrets, now_wall=self.clock.wall()))
        items = data.get("data") if isinstance(data, dict) else None
        return [str(m.get("id")) for m in items or [] if isinstance(m, dict) and m.get("id")]


def _parse_completion(data: Any, endpoint: str) -> tuple[str, str | None, ChatUsage, str | None]:
    """(text, model, usage, id) of a chat.completion object; a wrong shape is a MalformedResponse."""
    if not isinstance(data, dict):
        raise MalformedResponse(f"{endpoint}: the answer is not a JSON object", endpoint=endpoint)
    choices = data.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise MalformedResponse(f"{endpoint}: the answer has no choices", endpoint=endpoint)
    message = choices[0].get("message")
    content = message.get("content") if isinstance(message, dict) else None
    if not isinstance(content, str):
        refusal = message.get("refusal") if isinstance(message, dict) else None
        if refusal:
            raise ApiError(f"{endpoint}: the model refused: {refusal}", endpoint=endpoint)
        raise MalformedResponse(f"{endpoint}: the answer's message has no text content", endpoint=endpoint)
    found = data.get("usage")
    raw: dict[str, Any] = found if isinstance(found, dict) else {}
    usage = ChatUsage(prompt_tokens=_int(raw.get("prompt_tokens")), completion_tokens=_int(raw.get("completion_tokens")))
    usage.total_tokens = _int(raw.get("total_tokens")) or usage.prompt_tokens + usage.completion_tokens
    for group in ("prompt_tokens_details", "completion_tokens_details"):
        details = raw.get(group)
        if isinstance(details, dict):
            usage.details.update({k: int(v) for k, v in details.items() if isinstance(v, int) and v})
    model = data.get("model")
    return content, str(model) if model else None, usage, _str(data.get("id"))


def _int(value: object) -> int:
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0
