"""The Gemini backend: Code Assist (the gemini CLI's login) or the public Gemini API (an API key).

Runs one agent as one generateContent call; reports usage as the server counts it, and the model that
answered when `[gemini] fallback` moved a call from pro to flash."""

from __future__ import annotations

import shutil
import time

from sparc_cloud.backends.base import AgentCall, BackendKind, BuildContext, DoctorContext, RunHooks
from sparc_cloud.bundle import AgentRecord, Usage
from sparc_cloud.checks import Check
from sparc_cloud.clients import gemini_settings
from sparc_cloud.clients.auth import jwt_claims
from sparc_cloud.clients.gemini import GeminiClient, NeedsOnboarding, make_gemini
from sparc_cloud.clients.gemini_auth import GEMINI_LOGIN_HINT
from sparc_cloud.doctor import duration, file_checks, fix_for
from sparc_cloud.errors import ApiError, RetriesExhausted, SparcError
from sparc_cloud.http.ratelimit import Key, RateLimit
from sparc_cloud.redact import hide_userinfo
from sparc_cloud.settings import Settings

FALLBACK = {"gemini-2.5-pro": "gemini-2.5-flash"}
# The runbook's measured limits: flash ~10 in a burst then ~1/s; pro ~3/min.
MODEL_LIMITS = {"gemini-2.5-flash": RateLimit(*gemini_settings.FLASH_LIMIT), "gemini-2.5-pro": RateLimit(*gemini_settings.PRO_LIMIT)}
# How Gemini refuses a schema (the documented answers: 400 INVALID_ARGUMENT "Unknown name ... Cannot find field", "exceeds
# the maximum allowed nesting depth", "too many states for serving"; through Code Assist a 500 "Failed to parse
# responseJsonSchema field").
_SCHEMA_REFUSALS = ("responsejsonschema", "response_json_schema", "responseschema", "nesting depth",
                    "too many states", "schema")


def schema_refused(exc: SparcError) -> bool:
    """Whether an error is the server refusing the JSON Schema of the request (not the model failing)."""
    status = getattr(exc, "status", None)
    text = str(exc).lower()
    if isinstance(exc, ApiError) and status == 400:
        return any(word in text for word in _SCHEMA_REFUSALS)
    return status == 500 and "responsejsonschema" in text


def _limits(name: str, endpoint: object) -> dict[Key, RateLimit]:
    return {(name, "generate", model): limit for model, limit in MODEL_LIMITS.items()}


class GeminiBackend:
    """Agents on Gemini (one generateContent call each)."""

    def __init__(self, name: str, client: GeminiClient, generation_config: dict[str, object]) -> None:
        self.name = name
        self.client = client
        self.generation_config = generation_config

    def run(self, call: AgentCall, hooks: RunHooks) -> None:
        """One generateContent call; text, usage, attempts, request id and any fallback into the record."""
        record = call.record
        config, prompt = dict(self.generation_config), call.prompt
        ask = call.contract
        if ask is not None and record.schema_fallback is None:  # as gemini-cli's generateJson asks
            config.update(responseMimeType="application/json", responseJsonSchema=ask.schema)
        elif ask is not None:
            prompt += ask.instruction
        try:
            result = self.client.generate(prompt, model=call.agent.model, system=call.system,
                                          generation_config=config, on_retry=call.on_retry, on_wait=call.on_wait)
        except (ApiError, RetriesExhausted) as exc:
            if ask is None or record.schema_fallback is not None or not schema_refused(exc):
                raise
            # The server refused the schema itself (not the model's fault): the schema goes in the prompt only.
            record.schema_fallback = "prompt"
            config = {k: v for k, v in config.items() if k not in ("responseMimeType", "responseJsonSchema")}
            result = self.client.generate(call.prompt + ask.instruction, model=call.agent.model, system=call.system,
                                          generation_config=config, on_retry=call.on_retry, on_wait=call.on_wait)
        record.output_text = result.text
        record.usage = Usage(prompt_tokens=result.usage.prompt_tokens, output_tokens=result.usage.output_tokens,
                             total_tokens=result.usage.total_tokens)
        record.attempts = result.attempts
        record.request_id = result.request_id
        record.fallback_from = result.fallback_from
        if result.fallback_from:
            record.model = result.model

    def same_place(self, earlier: AgentRecord) -> bool:
        """A Gemini answer is reusable wherever it came from."""
        return True

    def preflight(self) -> None:
        """Code Assist: find (or onboard) the Cloud project before the first call."""
        if self.client.config.mode == "code-assist":
            self.client.project_id()

    def describe(self) -> list[str]:
        """Where the calls go: URL, account, project."""
        cfg = self.client.config
        if cfg.mode == "api-key":
            return [f"gemini: public Gemini API at {hide_userinfo(cfg.api_base_url)} ({cfg.api_setting}), account: the API key "
                    "in GEMINI_API_KEY"]
        assert self.client.oauth is not None
        claims = jwt_claims(str(self.client.oauth.id_token() or ""))
        account = str(claims.get("email") or f"the login in {self.client.oauth.path}")
        project = (f"GOOGLE_CLOUD_PROJECT={cfg.project}, confirmed with loadCodeAssist" if cfg.project
                   else "found with loadCodeAssist")
        return [f"gemini: Code Assist at {hide_userinfo(cfg.base_url)} ({cfg.base_setting}), account {account}, project: {project}"]


def _build(ctx: BuildContext, name: str) -> GeminiBackend:
    """Credentials are read now, so a missing login stops the run before any call."""
    use_fallback = ctx.project.gemini.fallback or ctx.settings.gemini_fallback
    client = make_gemini(ctx.client, fallback=FALLBACK if use_fallback else None)
    return GeminiBackend(name, client, ctx.project.gemini.generation_config)


def _doctor(dctx: DoctorContext, name: str) -> list[Check]:
    """API key or OAuth file, token expiry, refresh ability, project id."""
    settings, ctx = dctx.settings, dctx.client
    if settings.gemini_api_key:
        checks = [Check("Gemini credentials", "ok", "GEMINI_API_KEY is set: the public Gemini API is used")]
    else:
        path = settings.gemini_creds_path()
        checks, data = file_checks("Gemini credentials", path, GEMINI_LOGIN_HINT)
        if data is None:
            return checks
        expiry = data.get("expiry_date")
        left = float(expiry) / 1000 - time.time() if isinstance(expiry, int | float) else None
        can_refresh = bool(settings.gemini_oauth_client_id and settings.gemini_oauth_client_secret) or bool(
            settings.gemini_refresh_command and shutil.which(settings.gemini_refresh_command))
        if left is None:
            checks.append(Check("Gemini token", "warn", "the file has no expiry_date", "Run `gemini` once to refresh it."))
        elif left > 300:
            checks.append(Check("Gemini token", "ok", f"valid for {duration(left)}"))
        elif can_refresh:
            checks.append(Check("Gemini token", "ok", f"{duration(left)}; it will be refreshed before use"))
        else:
            checks.append(Check("Gemini token", "fail", f"{duration(left)} and no way to refresh it here",
                                "Run `gemini` once, or set SPARC_GEMINI_OAUTH_CLIENT_ID and "
                                "SPARC_GEMINI_OAUTH_CLIENT_SECRET."))
    try:
        client = make_gemini(ctx)
        if client.config.mode == "code-assist":
            offered = settings.google_cloud_project
            project = client.project_id(onboard=False)
            source = "from loadCodeAssist" + (f"; GOOGLE_CLOUD_PROJECT={offered} was offered" if offered else "")
            checks.append(Check("Gemini project", "ok", f"{project} ({source}) at {client.config.base_url}"))
    except NeedsOnboarding as exc:
        checks.append(Check("Gemini project", "warn", str(exc), "Nothing to do: `sparc-cloud run` or `gemini` sets it up."))
    except SparcError as exc:
        checks.append(Check("Gemini project", "fail", str(exc),
                            fix_for(exc, "See the message; GOOGLE_CLOUD_PROJECT offers a project.")))
    return checks


def _login_state(settings: Settings) -> str:
    if settings.gemini_api_key is not None:
        return "Gemini: an API key is set (GEMINI_API_KEY)"
    if settings.gemini_creds_path().is_file():
        return f"Gemini: logged in ({settings.gemini_creds_path()})"
    return "Gemini: not logged in"


KIND = BackendKind(
    name="gemini",
    summary="Gemini through Code Assist (the gemini CLI's login) or the public API (GEMINI_API_KEY)",
    build=_build,
    doctor=_doctor,
    limits=_limits,
    prices=gemini_settings.PRICES,
    billing_note="Code Assist bills through a subscription",
    login_state=_login_state,
)
