"""Gemini: Code Assist (`cloudcode-pa`, OAuth file, default) and the public Gemini API (API key).

Wire formats: shared/api/gemini.md sections 1 (Code Assist), 4 (public API), 3 (errors)."""

from __future__ import annotations

import platform
import random
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import requests

from sparc_cloud import __version__
from sparc_cloud.clients.auth import GeminiOAuth
from sparc_cloud.errors import AuthError, ConfigError, MalformedResponse, TerminalQuota, Unauthorized
from sparc_cloud.http.clock import Clock
from sparc_cloud.http.ratelimit import RateLimiters
from sparc_cloud.http.retry import RetryNotice, RetryPolicy, call_with_retry
from sparc_cloud.http.transport import exchange
from sparc_cloud.redact import SecretRegistry

GENERATION_CONFIG_KEYS = {
    "temperature", "topP", "topK", "candidateCount", "maxOutputTokens", "stopSequences", "responseLogprobs",
    "logprobs", "presencePenalty", "frequencyPenalty", "seed", "responseMimeType", "responseSchema",
    "responseJsonSchema", "routingConfig", "modelSelectionConfig", "responseModalities", "mediaResolution",
    "speechConfig", "audioTimestamp", "thinkingConfig",
}
# Code Assist only (shared/api/gemini.md 1.1): gemini-3.5-flash is sent as gemini-3-flash.
CODE_ASSIST_MODEL_ALIASES = {"gemini-3.5-flash": "gemini-3-flash"}
DEFAULT_FALLBACK = {"gemini-2.5-pro": "gemini-2.5-flash"}


@dataclass(frozen=True)
class Usage:
    """Token counts of one call."""

    prompt_tokens: int = 0
    output_tokens: int = 0
    total_tokens: int = 0


@dataclass(frozen=True)
class GenerateResult:
    """What one generateContent call produced."""

    text: str
    model: str
    usage: Usage
    latency_s: float
    attempts: int
    request_id: str | None
    fallback_from: str | None = None


@dataclass
class GeminiConfig:
    """Where and how to call Gemini."""

    mode: Literal["code-assist", "api-key"] = "code-assist"
    base_url: str = "https://cloudcode-pa.googleapis.com/v1internal"
    api_base_url: str = "https://generativelanguage.googleapis.com"
    project: str | None = None
    timeout_s: float = 120.0
    fallback: dict[str, str] | None = None  # model -> next model on terminal quota; None = off
    generation_config: dict[str, Any] = field(default_factory=lambda: {"temperature": 0.4})


def extract_text(response: dict[str, Any]) -> str:
    """Text of the first candidate: parts with `text` and not `thought`, joined."""
    candidates = response.get("candidates") or []
    if not candidates or not isinstance(candidates[0], dict):
        return ""
    content = candidates[0].get("content") or {}
    parts = content.get("parts") or [] if isinstance(content, dict) else []
    return "".join(
        str(p["text"]) for p in parts if isinstance(p, dict) and p.get("text") and not p.get("thought")
    )


def extract_usage(response: dict[str, Any]) -> Usage:
    """`usageMetadata` as prompt/output/total; thoughts count as output tokens."""
    meta = response.get("usageMetadata") or {}
    prompt = int(meta.get("promptTokenCount") or 0)
    output = int(meta.get("candidatesTokenCount") or 0) + int(meta.get("thoughtsTokenCount") or 0)
    total = int(meta.get("totalTokenCount") or prompt + output)
    return Usage(prompt_tokens=prompt, output_tokens=output, total_tokens=total)


class GeminiClient:
    """generateContent over Code Assist or the public API, under the shared retry and limit layer."""

    def __init__(
        self,
        config: GeminiConfig,
        *,
        session: requests.Session,
        limiters: RateLimiters,
        policy: RetryPolicy,
        clock: Clock,
        secrets: SecretRegistry,
        oauth: GeminiOAuth | None = None,
        api_key: str | None = None,
    ) -> None:
        if config.mode == "code-assist" and oauth is None:
            raise ConfigError("Code Assist mode needs OAuth credentials.")
        if config.mode == "api-key" and not api_key:
            raise ConfigError("API-key mode needs GEMINI_API_KEY.")
        self.config = config
        self.session = session
        self.limiters = limiters
        self.policy = policy
        self._jitter = random.Random()  # noqa: S311 - retry jitter, not crypto
        self.clock = clock
        self.secrets = secrets
        self.oauth = oauth
        self.api_key = api_key
        secrets.add(api_key)
        self.session_id = str(uuid.uuid4())
        self._project: str | None = None
        self._project_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"GeminiClient(mode={self.config.mode!r})"

    # ----------------------------------------------------------------- public

    def generate(
        self,
        prompt: str,
        *,
        model: str,
        system: str | None = None,
        generation_config: dict[str, Any] | None = None,
        on_retry: Callable[[RetryNotice], None] | None = None,
        on_wait: Callable[[float, str], None] | None = None,
    ) -> GenerateResult:
        """One prompt -> one answer. Terminal quota falls back to the next model when enabled.

        `on_retry` hears of every retry, `on_wait` of every wait for a rate-limit slot."""
        first_model = model
        while True:
            try:
                result = self._generate_once(prompt, model, system, generation_config, on_retry, on_wait)
            except TerminalQuota:
                nxt = (self.config.fallback or {}).get(model)
                if not nxt or nxt == first_model:
                    raise
                model = nxt
                continue
            if model != first_model:
                return GenerateResult(**{**result.__dict__, "fallback_from": first_model})
            return result

    def project_id(self) -> str:
        """The Code Assist project: configured, else discovered once with loadCodeAssist."""
        with self._project_lock:
            configured = self.config.project
            if configured and configured.isdigit():
                raise ConfigError(f"GOOGLE_CLOUD_PROJECT is set to a project number ({configured}); set it to the "
                                  "project id instead.")
            if self._project is None:
                self._project = configured or self._discover_project()
            return self._project

    # ---------------------------------------------------------------- details

    def _user_agent(self, model: str) -> str:
        return f"SparcCloud/{__version__}/{model} ({platform.system().lower()}; {platform.machine()}; cli)"

    def _headers(self, model: str) -> tuple[dict[str, str], str]:
        headers = {"Content-Type": "application/json", "User-Agent": self._user_agent(model)}
        if self.config.mode == "api-key":
            assert self.api_key
            headers["x-goog-api-key"] = self.api_key
            return headers, ""
        assert self.oauth
        token = self.oauth.token()
        headers["Authorization"] = f"Bearer {token}"
        return headers, token

    def _post(self, url: str, body: dict[str, Any], *, endpoint: str, model: str) -> Any:
        """POST once; on 401 refresh the token once and send again."""
        headers, token = self._headers(model)
        try:
            return self._exchange(url, body, headers, endpoint)
        except Unauthorized as exc:
            if self.oauth is None:
                raise AuthError(f"{exc}. The Gemini API key was rejected: check GEMINI_API_KEY.") from None
            headers["Authorization"] = f"Bearer {self.oauth.after_unauthorized(token)}"
            try:
                return self._exchange(url, body, headers, endpoint)
            except Unauthorized as again:
                raise AuthError(
                    f"{again}. The refreshed Gemini token was rejected too: log in again with `gemini`."
                ) from None

    def _exchange(self, url: str, body: dict[str, Any], headers: dict[str, str], endpoint: str) -> Any:
        return exchange(
            self.session, "POST", url, endpoint=endpoint, secrets=self.secrets, now_wall=self.clock.wall(),
            timeout_s=self.config.timeout_s, headers=headers, json_body=body,
        )

    def _request_body(
        self, prompt: str, system: str | None, generation_config: dict[str, Any] | None
    ) -> dict[str, Any]:
        gen = {**self.config.generation_config, **(generation_config or {})}
        unknown = set(gen) - GENERATION_CONFIG_KEYS
        if unknown:
            raise ConfigError(f"Unknown generationConfig key(s): {', '.join(sorted(unknown))}.")
        request: dict[str, Any] = {"contents": [{"role": "user", "parts": [{"text": prompt}]}]}
        if system:
            request["systemInstruction"] = {"role": "user", "parts": [{"text": system}]}
        request["generationConfig"] = gen
        return request

    def _generate_once(
        self,
        prompt: str,
        model: str,
        system: str | None,
        generation_config: dict[str, Any] | None,
        on_retry: Callable[[RetryNotice], None] | None,
        on_wait: Callable[[float, str], None] | None = None,
    ) -> GenerateResult:
        request = self._request_body(prompt, system, generation_config)
        if self.config.mode == "api-key":
            url = f"{self.config.api_base_url.rstrip('/')}/v1beta/models/{model}:generateContent"
            body = request
        else:
            url = f"{self.config.base_url.rstrip('/')}:generateContent"
            body = {
                "model": CODE_ASSIST_MODEL_ALIASES.get(model, model),
                "project": self.project_id(),
                "user_prompt_id": uuid.uuid4().hex,
                "request": {**request, "session_id": self.session_id},
            }
        endpoint = f"gemini generateContent ({model})"
        key = ("gemini", "generate", model)
        started = self.clock.now()

        def attempt() -> dict[str, Any]:
            self.limiters.acquire(key, on_wait)
            data = self._post(url, body, endpoint=endpoint, model=model)
            if not isinstance(data, dict):
                raise MalformedResponse(f"{endpoint}: the answer is not a JSON object", endpoint=endpoint)
            inner = data if self.config.mode == "api-key" else data.get("response") or {}
            if not isinstance(inner, dict) or not inner.get("candidates"):
                raise MalformedResponse(f"{endpoint}: the answer has no candidates", endpoint=endpoint)
            return data

        data, attempts = call_with_retry(
            attempt, policy=self.policy, clock=self.clock, endpoint=endpoint, on_retry=on_retry, rng=self._jitter,
            on_rate_limited=lambda s: self.limiters.pause(key, s),
        )
        inner = data if self.config.mode == "api-key" else data["response"]
        request_id = data.get("responseId") if self.config.mode == "api-key" else data.get("traceId")
        return GenerateResult(
            text=extract_text(inner),
            model=str(inner.get("modelVersion") or model),
            usage=extract_usage(inner),
            latency_s=round(self.clock.now() - started, 3),
            attempts=attempts,
            request_id=str(request_id) if request_id else None,
        )

    def _discover_project(self) -> str:
        env_project = self.config.project
        if env_project and env_project.isdigit():
            raise ConfigError(
                f"GOOGLE_CLOUD_PROJECT is set to a project number ({env_project}); set it to the project id."
            )
        body: dict[str, Any] = {
            "metadata": {"ideType": "IDE_UNSPECIFIED", "platform": "PLATFORM_UNSPECIFIED", "pluginType": "GEMINI"}
        }
        if env_project:
            body["cloudaicompanionProject"] = env_project
            body["metadata"]["duetProject"] = env_project
        url = f"{self.config.base_url.rstrip('/')}:loadCodeAssist"
        endpoint = "gemini loadCodeAssist"
        data, _ = call_with_retry(
            lambda: self._post(url, body, endpoint=endpoint, model="loadCodeAssist"),
            policy=self.policy, clock=self.clock, endpoint=endpoint, rng=self._jitter,
        )
        if not isinstance(data, dict):
            raise MalformedResponse(f"{endpoint}: the answer is not a JSON object", endpoint=endpoint)
        ineligible = [t for t in data.get("ineligibleTiers") or [] if isinstance(t, dict)]
        if data.get("currentTier"):
            project = data.get("cloudaicompanionProject") or env_project
            if project:
                return str(project)
            if ineligible:
                reasons = "; ".join(str(t.get("reasonMessage", "")) for t in ineligible if t.get("reasonMessage"))
                raise ConfigError(f"Your account is not eligible for Gemini Code Assist: {reasons}. "
                                  "Set GOOGLE_CLOUD_PROJECT to a project with Code Assist, or use GEMINI_API_KEY.")
            raise ConfigError("Gemini Code Assist needs a Google Cloud project for this account: set "
                              "GOOGLE_CLOUD_PROJECT to its id (or use GEMINI_API_KEY).")
        for tier in ineligible:
            if tier.get("reasonCode") == "VALIDATION_REQUIRED":
                url_ = tier.get("validationUrl")
                raise ConfigError(f"Google asks you to verify your account before using Code Assist: open "
                                  f"{url_} and follow the steps, then run again.")
        if ineligible:
            reasons = "; ".join(str(t.get("reasonMessage", "")) for t in ineligible if t.get("reasonMessage"))
            raise ConfigError(f"Your account is not eligible for Gemini Code Assist: {reasons}.")
        raise ConfigError("This Google account has not been set up for Gemini Code Assist yet: run `gemini` once "
                          "and finish the login, or set GOOGLE_CLOUD_PROJECT, or use GEMINI_API_KEY.")
