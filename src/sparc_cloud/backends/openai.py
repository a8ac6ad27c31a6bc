"""The OpenAI-compatible backend: any Chat Completions server, one request per agent.

Built in as `openai` (OPENAI_API_KEY, OPENAI_BASE_URL defaulting to https://api.openai.com/v1, as the
official SDK reads them); more endpoints by name with `[backends.NAME]` tables of kind "openai" (Ollama,
vLLM, llama.cpp, LiteLLM, OpenRouter). In a `--backend sim` run every such endpoint is the simulator's
`/v1`. Refinement agents on a chat model return a unified diff, checked before it is accepted
(`backends/diffs.py`)."""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from sparc_cloud import defaults
from sparc_cloud.backends import diffs
from sparc_cloud.backends.base import AgentCall, BackendKind, BuildContext, DoctorContext, RunHooks
from sparc_cloud.bundle import AgentRecord, Usage
from sparc_cloud.checks import Check
from sparc_cloud.clients import openai_defaults
from sparc_cloud.clients.openai import ChatClient, ChatConfig, ChatResult
from sparc_cloud.doctor import fix_for
from sparc_cloud.errors import ApiError, ConfigError, DiffRejected, SparcError
from sparc_cloud.http.ratelimit import Key, RateLimit
from sparc_cloud.http.transport import is_loopback
from sparc_cloud.project import Endpoint
from sparc_cloud.redact import hide_userinfo
from sparc_cloud.sim.chat import SIM_CHAT_KEY as SIM_API_KEY

log = logging.getLogger("sparc_cloud")
KEY_ENV = openai_defaults.KEY_ENV
BASE_ENV = openai_defaults.BASE_ENV
# USD per million tokens (input, output), OpenAI's list prices; used only for estimates.
PRICES: dict[str, tuple[float, float]] = {
    "gpt-4.1": (2.0, 8.0),
    "gpt-4.1-mini": (0.40, 1.60),
    "gpt-4.1-nano": (0.10, 0.40),
    "gpt-4o": (2.50, 10.0),
    "gpt-4o-mini": (0.15, 0.60),
}


# Variables that hold some other service's credentials: their value must not become a Bearer token by a typo.
_FOREIGN_PREFIXES = ("AWS_", "AZURE_", "GOOGLE_APPLICATION", "GITHUB_", "GH_", "GITLAB_", "CI_", "ACTIONS_", "NPM_",
                     "PYPI_", "TWINE_", "DOCKER_", "SSH_", "GPG_", "SLACK_", "STRIPE_", "DATABASE_", "MYSQL_")
_FOREIGN_WORDS = ("SECRET_ACCESS", "PRIVATE", "PASSWORD", "PASSWD", "SESSION_TOKEN")
_KEY_SUFFIXES = ("_KEY", "_TOKEN", "_APIKEY")
# Well-known provider keys no registered kind reads itself, guarded like the registered kinds' own variables.
_OTHER_PROVIDER_KEYS: dict[str, tuple[str, ...]] = {"GOOGLE_API_KEY": ("generativelanguage.googleapis.com",)}
ALLOW_ENV = "SPARC_ALLOW_KEY_VARS"  # NAME,...: key variables the user lets `[backends.NAME]` tables send anywhere


def guarded_key_vars() -> dict[str, tuple[str, ...]]:
    """The variables a backend kind reads for its own key -> the hosts that key belongs to (where a table may
    send it without the user's say-so): this kind's own (OPENAI_API_KEY for api.openai.com) and, from the
    registry's settings modules, every secret setting's variables with the hosts of that module's default URLs."""
    from sparc_cloud.backends.registry_fields import SETTINGS_MODULES
    from sparc_cloud.settings import Settings
    from sparc_cloud.settings_fields import env_names_in

    out: dict[str, tuple[str, ...]] = {KEY_ENV: (urlsplit(openai_defaults.BASE).hostname or "",),
                                       **_OTHER_PROVIDER_KEYS}
    for module in SETTINGS_MODULES:
        hosts = tuple(sorted({urlsplit(str(Settings.model_fields[f].default)).hostname or ""
                              for f in getattr(module, "URL_FIELDS", ()) if f in Settings.model_fields
                              and isinstance(Settings.model_fields[f].default, str)} - {""}))
        for field_name in getattr(module, "SECRET_FIELDS", ()):
            for variable in env_names_in(getattr(module, "ALIASES", {}), field_name):
                out[variable] = hosts
    return out


def allowed_key_vars() -> set[str]:
    """The variables the user lets any table send (SPARC_ALLOW_KEY_VARS=NAME,...; the environment only, never a
    project file, since a project file may come from someone else)."""
    return {v.strip().upper() for v in os.environ.get(ALLOW_ENV, "").split(",") if v.strip()}


def _refuse_borrowed_key(name: str, variable: str, base_url: str) -> None:
    """A `[backends.NAME]` table may not send another backend's own key (GEMINI_API_KEY, OPENAI_API_KEY, ...) to
    a host that is not that key's, unless the user names the variable in SPARC_ALLOW_KEY_VARS."""
    guarded = guarded_key_vars()
    upper = variable.upper()
    if upper not in guarded or upper in allowed_key_vars():
        return
    parts = urlsplit(base_url)
    if parts.scheme == "https" and (parts.hostname or "").lower() in guarded[upper]:
        return
    shown = hide_userinfo(base_url)
    own = f" (its own server is {', '.join(guarded[upper])})" if guarded[upper] else ""
    raise EndpointConfigError(
        f"[backends.{name}] api_key_env = {variable!r} would send the key of another backend{own} to {shown}. "
        "A project file may come from someone else's repository, so it may not borrow such a key. Set api_key_env "
        f"to a variable holding this server's own key (e.g. {_suggested_var(name)}) and export it; or, if you "
        f"trust {shown} with this key, allow it yourself: export {ALLOW_ENV}={upper}.",
        f"Set [backends.{name}] api_key_env to this server's own key variable (e.g. {_suggested_var(name)}), or "
        f"export {ALLOW_ENV}={upper} if you trust {shown} with it.")


def _suggested_var(name: str) -> str:
    return re.sub(r"[^A-Z0-9_]", "_", name.upper()) + "_API_KEY"


class EndpointConfigError(ConfigError):
    """A `[backends.NAME]` table (or OPENAI_*) that cannot be used as it is; `fix` says what to change."""

    def __init__(self, message: str, fix: str) -> None:
        super().__init__(message)
        self.fix = fix


def key_name_warning(name: str, variable: str, base_url: str) -> str | None:
    """Why `api_key_env = variable` looks like a mistake (None when it looks like an API key's variable): a
    name that does not end in _KEY / _TOKEN, or one that holds another service's credentials."""
    upper = variable.upper()
    foreign = upper.startswith(_FOREIGN_PREFIXES) or any(w in upper for w in _FOREIGN_WORDS)
    if upper.endswith(_KEY_SUFFIXES) and not foreign:
        return None
    why = "holds another service's credentials" if foreign else "does not look like an API key's variable"
    return (f"[backends.{name}] api_key_env = {variable!r} {why}; its value is sent as a Bearer token to "
            f"{hide_userinfo(base_url)}. If that is not meant, set api_key_env to the variable holding this server's "
            "key (e.g. "
            f"{_suggested_var(name)}), or remove it when the server needs no key.")


def _refuse_plain_http(name: str, base_url: str, setting: str, key_setting: str) -> None:
    """A key is never sent in the clear off this machine."""
    if base_url.startswith("http://") and not is_loopback(base_url):
        raise EndpointConfigError(
            f"Backend {name!r} would send the key from {key_setting} over plain http:// to {hide_userinfo(base_url)}, "
            f"which is not this machine: anyone on the way could read it. Use an https:// URL in {setting}, or run the "
            "server on this machine (localhost), or send no key to it.",
            f"Change {setting} to https://, or to a localhost address.")


def chat_config(name: str, endpoint: Endpoint | None, *, sim_url: str | None, timeout_s: float) -> ChatConfig:
    """Where the backend `name` sends its requests, with which key (ConfigError when a needed key is missing,
    or a key would cross the network in the clear)."""
    if sim_url is not None:
        return ChatConfig(name, f"{sim_url}/v1", SIM_API_KEY, "the simulator", "the simulator's key", timeout_s)
    if endpoint is not None:
        key = None
        setting = f"[backends.{name}] base_url"
        if endpoint.api_key_env:
            _refuse_borrowed_key(name, endpoint.api_key_env, endpoint.base_url)
            key = os.environ.get(endpoint.api_key_env) or None
            if key is None:
                raise EndpointConfigError(
                    f"[backends.{name}] reads its API key from {endpoint.api_key_env}, which is not set. Export "
                    f"{endpoint.api_key_env}=<key>, or remove api_key_env if {hide_userinfo(endpoint.base_url)} "
                    "needs no key.",
                    f"Export {endpoint.api_key_env}=<key>, or remove api_key_env from [backends.{name}].")
            _refuse_plain_http(name, endpoint.base_url, setting, endpoint.api_key_env)
        return ChatConfig(name, endpoint.base_url, key, setting, endpoint.api_key_env or "(no key)", timeout_s)
    base = (os.environ.get(BASE_ENV) or openai_defaults.BASE).rstrip("/")
    if not base.startswith(("http://", "https://")):
        raise EndpointConfigError(f"{BASE_ENV}={base} is not an http(s) URL. Set it to a server's /v1 base "
                                  f"(default {openai_defaults.BASE}) or unset it.",
                                  f"Set {BASE_ENV} to an http(s) /v1 base, or unset it.")
    key = os.environ.get(KEY_ENV) or None
    if key is None:
        raise EndpointConfigError(
            f"The project runs agents on backend {name!r}, which needs {KEY_ENV}. Export {KEY_ENV}=<your key> "
            "(https://platform.openai.com/api-keys), or point the phase at another backend, or try it with "
            "--backend sim.", f"Export {KEY_ENV}=<your key>, or run with --backend sim.")
    _refuse_plain_http(name, base, BASE_ENV, KEY_ENV)
    return ChatConfig(name, base, key, BASE_ENV if os.environ.get(BASE_ENV) else f"the default ({BASE_ENV})",
                      KEY_ENV, timeout_s)


def _endpoint_warning(name: str, endpoint: Endpoint | None) -> str | None:
    if endpoint is None or not endpoint.api_key_env:
        return None
    return key_name_warning(name, endpoint.api_key_env, endpoint.base_url)


class OpenAIBackend:
    """Agents as chat completions on one OpenAI-compatible endpoint."""

    def __init__(self, name: str, client: ChatClient, *, diff_base: Path | None = None,
                 warning: str | None = None) -> None:
        self.name = name
        self.client = client
        self.diff_base = diff_base
        self.warning = warning  # said before the first call (a key variable that looks wrong)

    def run(self, call: AgentCall, hooks: RunHooks) -> None:
        """One completion; text, usage (with the server's details), attempts and the completion id.

        Refinement agents answer with a unified diff, checked with `git apply --check`; one repair turn
        sends back git's error; a second refusal fails the agent with both answers kept."""
        if call.contract is not None:
            self._run_for_contract(call)
            return
        if not diffs.wants_diff(call.agent.template):
            result = self.client.complete(call.prompt, model=call.agent.model, system=call.system,
                                          on_retry=call.on_retry, on_wait=call.on_wait)
            fill_record(call.record, result)
            return
        self._run_for_diff(call)

    def _run_for_contract(self, call: AgentCall) -> None:
        """Ask for the contract's JSON with `response_format` json_schema; a server that refuses it (400) gets
        `json_object` with the schema in the prompt, and one that refuses that too the prompt alone."""
        ask, record = call.contract, call.record
        assert ask is not None
        modes = list(FORMATS)
        for mode in modes[modes.index(record.schema_fallback or "json_schema"):]:
            fmt: dict[str, Any] | None = {"type": "json_schema", "json_schema": {
                "name": ask.name, "schema": ask.schema, "strict": False}} if mode == "json_schema" else (
                {"type": "json_object"} if mode == "json_object" else None)
            prompt = call.prompt if mode == "json_schema" else call.prompt + ask.instruction
            try:
                result = self.client.complete(prompt, model=call.agent.model, system=call.system,
                                              on_retry=call.on_retry, on_wait=call.on_wait, response_format=fmt)
            except ApiError as exc:
                if fmt is None or exc.status != 400 or not _format_refused(exc):
                    raise
                record.schema_fallback = modes[modes.index(mode) + 1]
                continue
            fill_record(record, result)
            return

    def _run_for_diff(self, call: AgentCall) -> None:
        record = call.record
        messages = [{"role": "system", "content": call.system},
                    {"role": "user", "content": call.prompt + diffs.INSTRUCTION}]
        first = self.client.complete("", model=call.agent.model, messages=messages, on_retry=call.on_retry,
                                     on_wait=call.on_wait)
        fill_record(record, first)
        diff = diffs.extract_diff(first.text)
        error = diffs.check_diff(diff, self.diff_base)
        if error is None:
            record.diff = diff
            return
        messages += [{"role": "assistant", "content": first.text},
                     {"role": "user", "content": diffs.repair_request(error)}]
        second = self.client.complete("", model=call.agent.model, messages=messages, on_retry=call.on_retry,
                                      on_wait=call.on_wait)
        fill_record(record, second, attempts_before=record.attempts)
        record.outputs = [first.text, second.text]
        diff = diffs.extract_diff(second.text)
        second_error = diffs.check_diff(diff, self.diff_base)
        if second_error is None:
            record.diff = diff
            return
        raise DiffRejected(f"{self.name} {call.agent.model}: the diff was refused twice by `git apply --check` "
                           f"(first: {_first_line(error)}; after the repair turn: {_first_line(second_error)}). Both "
                           "answers are kept in the record's `outputs`. Try a stronger model for refinement.")

    def same_place(self, earlier: AgentRecord) -> bool:
        """A completion is reusable wherever it came from."""
        return True

    def preflight(self) -> None:
        """Nothing to look up before the first call (the key was read when the backend was built)."""

    def describe(self) -> list[str]:
        """Where the calls go and which key they carry (by name, never its value)."""
        cfg = self.client.config
        lines = [f"{self.name}: OpenAI-compatible chat/completions at {cfg.shown_url} ({cfg.base_setting}), "
                 f"key: {cfg.key_setting}"]
        return [*lines, f"warning: {self.warning}"] if self.warning else lines


FORMATS = ("json_schema", "json_object", "prompt")


def _format_refused(exc: ApiError) -> bool:
    """A 400 about the response format or its schema (not, say, a prompt that is too long)."""
    text = str(exc).lower()
    return any(word in text for word in ("response_format", "schema", "json_object", "json mode"))


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else text


def fill_record(record: AgentRecord, result: ChatResult, *, attempts_before: int = 0) -> None:
    """Write one completion into the record (a repair turn adds its usage to the first turn's)."""
    record.output_text = result.text
    before = record.usage if attempts_before else Usage()
    record.usage = Usage(prompt_tokens=before.prompt_tokens + result.usage.prompt_tokens,
                         output_tokens=before.output_tokens + result.usage.completion_tokens,
                         total_tokens=before.total_tokens + result.usage.total_tokens)
    if result.usage.details:
        details = dict(record.usage_details or {}) if attempts_before else {}
        for k, v in result.usage.details.items():
            details[k] = details.get(k, 0) + v
        record.usage_details = details
    record.attempts = attempts_before + result.attempts
    record.request_id = result.request_id


def _build(ctx: BuildContext, name: str) -> OpenAIBackend:
    cfg = chat_config(name, ctx.project.backends.get(name), sim_url=ctx.sim_url,
                      timeout_s=ctx.settings.http_timeout_s)
    client_ctx = ctx.client
    assert client_ctx.limiters is not None and client_ctx.session is not None
    client = ChatClient(cfg, session=client_ctx.session, limiters=client_ctx.limiters, policy=client_ctx.policy(),
                        clock=client_ctx.clock, secrets=client_ctx.secrets, on_retry=client_ctx.on_retry)
    warning = None if ctx.sim_url is not None else _endpoint_warning(name, ctx.project.backends.get(name))
    if warning:
        log.warning("%s", warning)
    return OpenAIBackend(name, client, diff_base=ctx.diff_base, warning=warning)


def _limits(name: str, endpoint: Endpoint | None) -> dict[Key, RateLimit]:
    """requests_per_minute on (NAME, generate, *); tokens_per_minute in thousands on (NAME, tokens, *)."""
    rpm, burst = openai_defaults.LIMIT if endpoint is None else openai_defaults.LOCAL_LIMIT
    if endpoint is not None and endpoint.requests_per_minute:
        rpm, burst = endpoint.requests_per_minute, max(1, int(endpoint.requests_per_minute // 10))
    out: dict[Key, RateLimit] = {(name, "generate", "*"): RateLimit(per_minute=rpm, burst=burst)}
    if endpoint is not None and endpoint.tokens_per_minute:
        units = endpoint.tokens_per_minute / defaults.TOKENS_PER_UNIT
        out[(name, "tokens", "*")] = RateLimit(per_minute=units, burst=max(1, int(units // 10)))
    return out


def _doctor(dctx: DoctorContext, name: str) -> list[Check]:
    """The key (by its variable's name), then one short `GET /models` to see the server answers."""
    endpoint = dctx.project.backends.get(name) if dctx.project is not None else None
    try:
        cfg = chat_config(name, endpoint, sim_url=None, timeout_s=dctx.client.settings.http_timeout_s)
    except EndpointConfigError as exc:
        return [Check(f"{name} credentials", "fail", str(exc), exc.fix)]
    checks = [Check(f"{name} credentials", "ok", f"key from {cfg.key_setting}" if cfg.api_key else
                    "no key is sent (the table names no api_key_env)")]
    warning = _endpoint_warning(name, endpoint)
    if warning:
        checks.append(Check(f"{name} key variable", "warn", warning,
                            f"Set [backends.{name}] api_key_env to the variable that holds this server's key."))
    assert dctx.client.session is not None and dctx.client.limiters is not None
    client = ChatClient(cfg, session=dctx.client.session, limiters=dctx.client.limiters,
                        policy=dctx.client.policy(), clock=dctx.client.clock, secrets=dctx.client.secrets)
    try:
        models = client.models()
        checks.append(Check(f"{name} server", "ok", f"{cfg.shown_url} answers and lists {len(models)} model(s)"))
    except SparcError as exc:
        checks.append(Check(f"{name} server", "fail", str(exc), fix_for(exc, f"Check {cfg.base_setting}.")))
    return checks


KIND = BackendKind(
    name="openai",
    summary="any OpenAI-compatible Chat Completions server (OpenAI, Ollama, vLLM, llama.cpp, LiteLLM, OpenRouter)",
    build=_build,
    doctor=_doctor,
    limits=_limits,
    prices=PRICES,
)
