"""Gemini: Code Assist (`cloudcode-pa`, OAuth file, default) and the public Gemini API (API key).

Wire formats as gemini-cli speaks them (code_assist/server.ts, converter.ts, setup.ts; utils/googleQuotaErrors.ts,
retry.ts) and googleapis/js-genai for the public API: the project always comes from `loadCodeAssist`
(onboarding the account when it has no tier yet), capacity errors are retried and then fall back, and an
answer without candidates is reported with its block reason instead of being sent again."""

from __future__ import annotations

import logging
import platform
import random
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import requests

from sparc_cloud import __version__, defaults
from sparc_cloud.clients import gemini_errors, gemini_settings
from sparc_cloud.clients.factory import ClientContext
from sparc_cloud.clients.gemini_auth import GeminiOAuth
from sparc_cloud.errors import (
    AuthError,
    CapacityExhausted,
    ConfigError,
    MalformedResponse,
    PromptBlocked,
    RetriesExhausted,
    SparcError,
    TerminalQuota,
    Unauthorized,
)
from sparc_cloud.http.clock import Clock
from sparc_cloud.http.ratelimit import RateLimiters
from sparc_cloud.http.retry import RetryNotice, RetryPolicy, call_with_retry
from sparc_cloud.http.transport import exchange
from sparc_cloud.redact import SecretRegistry
from sparc_cloud.settings import setting_name

GENERATION_CONFIG_KEYS = {
    "temperature", "topP", "topK", "candidateCount", "maxOutputTokens", "stopSequences", "responseLogprobs",
    "logprobs", "presencePenalty", "frequencyPenalty", "seed", "responseMimeType", "responseSchema",
    "responseJsonSchema", "routingConfig", "modelSelectionConfig", "responseModalities", "mediaResolution",
    "speechConfig", "audioTimestamp", "thinkingConfig",
}
# Code Assist only (gemini-cli config/models.ts): gemini-3.5-flash is sent as gemini-3-flash.
CODE_ASSIST_MODEL_ALIASES = {"gemini-3.5-flash": "gemini-3-flash"}
DEFAULT_FALLBACK = {"gemini-2.5-pro": "gemini-2.5-flash"}
log = logging.getLogger(__name__)


class NeedsOnboarding(ConfigError):
    """The account has no Code Assist tier yet and the caller asked not to onboard it (doctor is read-only)."""


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
    base_url: str = gemini_settings.CODE_ASSIST_BASE  # {endpoint}/{version}
    api_base_url: str = gemini_settings.API_BASE
    project: str | None = None  # GOOGLE_CLOUD_PROJECT: offered to loadCodeAssist, used when it names none
    timeout_s: float = defaults.HTTP_TIMEOUT_S
    fallback: dict[str, str] | None = None  # model -> next model on terminal quota or lasting capacity; None = off
    generation_config: dict[str, Any] = field(default_factory=lambda: {"temperature": 0.4})
    base_setting: str = "SPARC_GEMINI_BASE_URL"  # the setting(s) base_url comes from, for messages
    api_setting: str = "SPARC_GEMINI_API_BASE_URL"
    onboard_poll_s: float = gemini_settings.ONBOARD_POLL_S
    onboard_max_polls: int = gemini_settings.ONBOARD_MAX_POLLS


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
        on_retry: Callable[[RetryNotice], None] | None = None,
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
        self.on_retry = on_retry  # hears of retries of calls made without their own listener
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
        """One prompt -> one answer. Terminal quota, and capacity that outlasts the retries, fall back to the
        next model when enabled; when that fails too, the error names both models.

        `on_retry` hears of every retry, `on_wait` of every wait for a rate-limit slot."""
        first_model = model
        failures: list[tuple[str, SparcError]] = []
        while True:
            try:
                result = self._generate_once(prompt, model, system, generation_config, on_retry, on_wait)
            except TerminalQuota as exc:
                failures.append((model, exc))
            except RetriesExhausted as exc:
                if not isinstance(exc.__cause__, CapacityExhausted):
                    raise
                failures.append((model, exc))
            else:
                if model != first_model:
                    return GenerateResult(**{**result.__dict__, "fallback_from": first_model})
                return result
            nxt = (self.config.fallback or {}).get(model)
            if not nxt or nxt in {m for m, _ in failures}:
                raise self._give_up(failures)
            model = nxt

    def _give_up(self, failures: list[tuple[str, SparcError]]) -> SparcError:
        """The error after the last model failed: alone, or naming every model tried and why."""
        model, last = failures[-1]
        capacity = isinstance(last, RetriesExhausted)
        if len(failures) == 1:
            if not capacity:
                return last
            assert isinstance(last, RetriesExhausted)
            hint = ("" if self.config.fallback is not None else
                    " Try again later, or let it fall back to another model (SPARC_GEMINI_FALLBACK=true, "
                    "--fallback, or [gemini] fallback = true in the project).")
            return RetriesExhausted(f"{model} has no capacity on the server: {last}{hint}", attempts=last.attempts,
                                    status=last.status)
        tried = "; then ".join(f"{m}: {e}" for m, e in failures)
        message = f"Every model tried failed: {tried}"
        if isinstance(last, RetriesExhausted):
            return RetriesExhausted(message, attempts=last.attempts, status=last.status)
        return TerminalQuota(message, status=getattr(last, "status", None), endpoint=getattr(last, "endpoint", ""))

    def project_id(self, *, onboard: bool = True) -> str:
        """The Code Assist project, set up once as gemini-cli's `setupUser` does: `loadCodeAssist` is always
        called (with GOOGLE_CLOUD_PROJECT offered), its project wins, the configured one is used only when
        it names none, and an account without a tier is onboarded first (unless `onboard` is False: then
        NeedsOnboarding)."""
        with self._project_lock:
            configured = self.config.project
            if configured and configured.isdigit():
                raise ConfigError(f"GOOGLE_CLOUD_PROJECT is set to a project number ({configured}); set it to the "
                                  "project id instead.")
            if self._project is None:
                self._project = self._discover_project(onboard)
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

    def _post(self, url: str, body: dict[str, Any] | None, *, endpoint: str, model: str) -> Any:
        """POST once (GET when there is no body); on 401 refresh the token once and send again."""
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

    def _exchange(self, url: str, body: dict[str, Any] | None, headers: dict[str, str], endpoint: str) -> Any:
        origin = self.config.api_setting if self.config.mode == "api-key" else self.config.base_setting
        return exchange(
            self.session, "POST" if body is not None else "GET", url, endpoint=endpoint, secrets=self.secrets,
            now_wall=self.clock.wall(), timeout_s=self.config.timeout_s, headers=headers, json_body=body,
            origin=origin, rules=gemini_errors.classify,
        )

    def method_url(self, method: str) -> str:
        """`{endpoint}/{version}:{method}` (gemini-cli server.ts)."""
        return f"{self.config.base_url.rstrip('/')}:{method}"

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
            url = self.method_url("generateContent")
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
            if not isinstance(inner, dict):
                raise MalformedResponse(f"{endpoint}: the answer's response is not a JSON object", endpoint=endpoint)
            if not inner.get("candidates"):
                raise self._empty_answer(inner, endpoint)
            return data

        data, attempts = call_with_retry(
            attempt, policy=self.policy, clock=self.clock, endpoint=endpoint, on_retry=on_retry or self.on_retry,
            rng=self._jitter, on_rate_limited=lambda s: self.limiters.pause(key, s),
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

    @staticmethod
    def _empty_answer(inner: dict[str, Any], endpoint: str) -> PromptBlocked:
        """No candidates: an empty answer (converter.ts), with `promptFeedback.blockReason` saying why."""
        feedback = inner.get("promptFeedback") if isinstance(inner.get("promptFeedback"), dict) else {}
        reason = str((feedback or {}).get("blockReason") or "") or None
        detail = str((feedback or {}).get("blockReasonMessage") or "")
        if reason:
            why = f"the prompt was blocked ({reason}{': ' + detail if detail else ''})"
            hint = "Change the prompt (the project's templates or inputs); sending it again gives the same answer."
        else:
            why = "the answer has no candidates (an empty answer)"
            hint = "Sending the same prompt again is unlikely to help; check the prompt and the model."
        return PromptBlocked(f"{endpoint}: {why}. {hint}", reason=reason, endpoint=endpoint)

    def _call(self, method: str, body: dict[str, Any] | None, endpoint: str, url: str | None = None) -> Any:
        """A Code Assist call outside generateContent (setup), under the shared retry policy."""
        target = url or self.method_url(method)
        data, _ = call_with_retry(
            lambda: self._post(target, body, endpoint=endpoint, model=method),
            policy=self.policy, clock=self.clock, endpoint=endpoint, rng=self._jitter, on_retry=self.on_retry,
        )
        if not isinstance(data, dict):
            raise MalformedResponse(f"{endpoint}: the answer is not a JSON object", endpoint=endpoint)
        return data

    def _discover_project(self, onboard: bool = True) -> str:
        """gemini-cli `setupUser` (code_assist/setup.ts)."""
        env_project = self.config.project
        metadata: dict[str, Any] = {"ideType": "IDE_UNSPECIFIED", "platform": "PLATFORM_UNSPECIFIED",
                                    "pluginType": "GEMINI"}
        body: dict[str, Any] = {"metadata": dict(metadata)}
        if env_project:
            body["cloudaicompanionProject"] = env_project
            body["metadata"]["duetProject"] = env_project
        data = self._call("loadCodeAssist", body, "gemini loadCodeAssist")
        ineligible = [t for t in data.get("ineligibleTiers") or [] if isinstance(t, dict)]
        if not data.get("currentTier"):
            for tier in ineligible:
                if tier.get("reasonCode") == "VALIDATION_REQUIRED" and tier.get("validationUrl"):
                    raise ConfigError(f"Google asks you to verify your account before using Code Assist: open "
                                      f"{tier['validationUrl']} and follow the steps, then run again.")
            if not onboard:
                raise NeedsOnboarding("This Google account has no Gemini Code Assist tier yet; the first run sets "
                                      "it up (onboardUser, as `gemini` does on first use).")
            return self._onboard(data, metadata, env_project, ineligible)
        project = data.get("cloudaicompanionProject") or env_project
        if project:
            return str(project)
        raise self._no_project(ineligible)

    def _onboard(self, load: dict[str, Any], metadata: dict[str, Any], env_project: str | None,
                 ineligible: list[dict[str, Any]]) -> str:
        """No tier yet: onboardUser with the default tier, then poll its long-running operation until done."""
        tiers = [t for t in load.get("allowedTiers") or [] if isinstance(t, dict)]
        tier = next((t for t in tiers if t.get("isDefault")), {"id": "legacy-tier"})
        body: dict[str, Any] = {"tierId": tier.get("id"), "metadata": dict(metadata)}
        if tier.get("id") != "free-tier" and env_project:  # the free tier's project is managed by Google
            body["cloudaicompanionProject"] = env_project
            body["metadata"]["duetProject"] = env_project
        log.info("onboarding this Google account to Gemini Code Assist (%s)", tier.get("id"))
        lro = self._call("onboardUser", body, "gemini onboardUser")
        polls = 0
        while not lro.get("done") and lro.get("name"):
            if polls >= self.config.onboard_max_polls:
                raise ConfigError("Onboarding this Google account to Gemini Code Assist did not finish in "
                                  f"{polls * self.config.onboard_poll_s:.0f} s. Run `gemini` once to finish it, "
                                  "then run again.")
            self.clock.sleep(self.config.onboard_poll_s * self.policy.time_scale)
            url = f"{self.config.base_url.rstrip('/')}/{lro['name']}"
            lro = self._call("getOperation", None, "gemini onboardUser operation", url=url)
            polls += 1
        response = lro.get("response") if isinstance(lro.get("response"), dict) else {}
        project = (response or {}).get("cloudaicompanionProject")
        project_id = project.get("id") if isinstance(project, dict) else None
        if project_id or env_project:
            return str(project_id or env_project)
        raise self._no_project(ineligible)

    @staticmethod
    def _no_project(ineligible: list[dict[str, Any]]) -> ConfigError:
        if ineligible:
            reasons = "; ".join(str(t.get("reasonMessage", "")) for t in ineligible if t.get("reasonMessage"))
            return ConfigError(f"Your account is not eligible for Gemini Code Assist: {reasons}. Set "
                               "GOOGLE_CLOUD_PROJECT to a project with Code Assist, or use GEMINI_API_KEY.")
        return ConfigError("Gemini Code Assist needs a Google Cloud project for this account: set "
                           "GOOGLE_CLOUD_PROJECT to its id (or use GEMINI_API_KEY).")


def make_gemini(ctx: ClientContext, *, fallback: dict[str, str] | None = None) -> GeminiClient:
    """A Gemini client: API-key mode when a key is configured, else Code Assist with the OAuth file."""
    s = ctx.settings
    assert ctx.limiters is not None and ctx.session is not None
    api_key = s.gemini_api_key.get_secret_value() if s.gemini_api_key else None
    use_fallback = fallback if fallback is not None else (DEFAULT_FALLBACK if s.gemini_fallback else None)
    config = GeminiConfig(
        mode="api-key" if api_key else "code-assist",
        base_url=s.code_assist_base(),
        api_base_url=s.gemini_api_base_url,
        project=s.google_cloud_project,
        timeout_s=s.http_timeout_s,
        fallback=use_fallback,
        base_setting="SPARC_SIM_URL" if s.sim_url else s.code_assist_source(),
        api_setting=setting_name("gemini_api_base_url"),
    )
    oauth = None
    if not api_key:
        secret = s.gemini_oauth_client_secret.get_secret_value() if s.gemini_oauth_client_secret else None
        ctx.secrets.add(secret)
        oauth = GeminiOAuth(
            s.gemini_creds_path(), clock=ctx.clock, secrets=ctx.secrets, session=ctx.session,
            client_id=s.gemini_oauth_client_id, client_secret=secret, token_url=s.gemini_oauth_token_url,
            refresh_command=s.gemini_refresh_command or None, time_scale=ctx.time_scale,
            timeout_s=s.http_timeout_s,
        )
    return GeminiClient(config, session=ctx.session, limiters=ctx.limiters, policy=ctx.policy(), clock=ctx.clock,
                        secrets=ctx.secrets, oauth=oauth, api_key=api_key, on_retry=ctx.on_retry)
