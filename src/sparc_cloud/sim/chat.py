"""The simulator's OpenAI-compatible routes: `POST /v1/chat/completions` and `GET /v1/models`.

Answers with the real envelopes: a `chat.completion` object with `usage` (and its `*_details`), errors as
`{"error": {"message", "type", "param", "code"}}`, and `x-ratelimit-*` headers from a sliding one-minute
window per model (`chat_limit` in the scenario). A refinement prompt that asks for a unified diff gets one
(the `bad-diff` fault makes it unusable once). Routes return (status, body, headers); the server sends them."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

from sparc_cloud.sim import answers, routing
from sparc_cloud.sim.content import task_result, text_answer, text_kind
from sparc_cloud.sim.envelopes import go_duration
from sparc_cloud.sim.state import SimState

SIM_CHAT_KEY = "sk-sim-openai-0000"  # what the simulator accepts as an OpenAI-compatible API key
DIFF_WORDS = "unified diff"  # a refinement prompt that asks for this gets a diff in a ```diff fence
Reply = tuple[int, Any, dict[str, str]]


def openai_error(status: int, message: str, kind: str, code: str | None, param: str | None = None,
                 headers: dict[str, str] | None = None) -> Reply:
    """An error in OpenAI's envelope."""
    return status, {"error": {"message": message, "type": kind, "param": param, "code": code}}, headers or {}


def _window(state: SimState, model: str) -> tuple[int, float, int]:
    """Admit one request of `model` into its one-minute window: (limit, seconds until a slot frees, remaining).
    Remaining < 0 means refused (nothing admitted)."""
    limit = int(state.config.chat_limit.per_minute)
    span = 60.0 * state.config.time_scale
    now = time.monotonic()
    with state.lock:
        window = [t for t in state.chat_windows.get(model, []) if now - t < span]
        reset = (window[0] + span - now) if window else 0.0
        if state.config.enforce_limits and len(window) >= limit:
            state.chat_windows[model] = window
            return limit, reset, -1
        window.append(now)
        state.chat_windows[model] = window
        return limit, (window[0] + span - now), limit - len(window)


def _rate_headers(limit: int, remaining: int, reset_s: float, tokens: int) -> dict[str, str]:
    token_limit = limit * 1000
    return {
        "x-ratelimit-limit-requests": str(limit),
        "x-ratelimit-remaining-requests": str(max(0, remaining)),
        "x-ratelimit-reset-requests": go_duration(max(0.001, reset_s)),
        "x-ratelimit-limit-tokens": str(token_limit),
        "x-ratelimit-remaining-tokens": str(max(0, token_limit - tokens)),
        "x-ratelimit-reset-tokens": go_duration(max(0.001, reset_s / 10)),
    }


def models(state: SimState, authorization: str | None) -> Reply:
    """`GET /v1/models`."""
    if authorization != f"Bearer {SIM_CHAT_KEY}":
        return _bad_key()
    data = [{"id": m, "object": "model", "created": 1700000000, "owned_by": "sparc-sim"}
            for m in state.config.chat_models]
    return 200, {"object": "list", "data": data}, {}


def _bad_key() -> Reply:
    return openai_error(401, "Incorrect API key provided. You can find your API key at "
                        "https://platform.openai.com/account/api-keys.", "invalid_request_error", "invalid_api_key")


def completions(state: SimState, authorization: str | None, raw: bytes) -> Reply:
    """`POST /v1/chat/completions`: validate, apply a scripted fault or the rate limit, then answer."""
    with state.lock:
        state.counters.requests["openai.chat"] += 1
    if authorization != f"Bearer {SIM_CHAT_KEY}":
        with state.lock:
            state.counters.unauthorized += 1
        return _bad_key()
    try:
        body = json.loads(raw) if raw else None
    except ValueError:
        body = None
    if not isinstance(body, dict):
        return openai_error(400, "We could not parse the JSON body of your request.", "invalid_request_error", None)
    model, messages = body.get("model"), body.get("messages")
    if not isinstance(model, str) or not model:
        return openai_error(400, "you must provide a model parameter", "invalid_request_error", None, "model")
    if not isinstance(messages, list) or not messages or not all(
            isinstance(m, dict) and isinstance(m.get("content"), str) for m in messages):
        return openai_error(400, "'messages' must be a non-empty array of messages with text content",
                            "invalid_request_error", None, "messages")
    with state.lock:
        state.counters.requests[f"openai.chat:{model}"] += 1
    prompt = "\n\n".join(str(m["content"]) for m in messages)
    users = [str(m["content"]) for m in messages if m.get("role") == "user"]
    asked = users[0] if users else prompt  # what the first user turn asks for decides the kind of answer
    fmt = body.get("response_format")
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    if fmt is not None and (kind not in ("text", "json_object", "json_schema") or (kind == "json_schema" and not (
            isinstance(fmt.get("json_schema"), dict) and isinstance(fmt["json_schema"].get("schema"), dict)
            and fmt["json_schema"].get("name")))):
        return openai_error(400, "Invalid value for 'response_format': expected text, json_object, or json_schema "
                            "with a name and a schema.", "invalid_request_error", None, "response_format")
    if kind == "json_object" and "json" not in prompt.lower():  # as OpenAI refuses it
        return openai_error(400, "'messages' must contain the word 'json' in some form, to use 'response_format' of "
                            "type 'json_object'.", "invalid_request_error", None, "messages")
    fault = state.next_fault("openai.chat", model)
    if fault == "schema-400" and kind == "json_schema":  # a server without structured outputs
        return openai_error(400, "Invalid parameter: 'response_format' of type 'json_schema' is not supported "
                            "with this model.", "invalid_request_error", None, "response_format")
    bad_diff = fault == "bad-diff"
    if fault is not None and fault not in ("bad-diff", "bad-json", "schema-400"):
        return _fault(state, fault, model)
    limit, reset_s, remaining = _window(state, model)
    tokens = max(1, len(prompt) // 4)
    if remaining < 0:
        with state.lock:
            state.counters.rate_limited[f"openai:{model}"] += 1
        headers = {**_rate_headers(limit, 0, reset_s, tokens), "retry-after-ms": str(int(reset_s * 1000) + 1)}
        return openai_error(429, f"Rate limit reached for {model} in organization org-sim on requests per min "
                            f"(RPM): Limit {limit}, Used {limit}, Requested 1. Please try again in "
                            f"{reset_s:.3f}s.", "requests", "rate_limit_exceeded", headers=headers)
    state.serve("openai", model, prompt)
    if kind in ("json_object", "json_schema") or answers.wants_json(asked):
        text = answers.structured_text(asked, state.config.seed, broken=fault == "bad-json")
    else:
        text = answer(asked, state.config.seed, broken=bad_diff)
    output = max(1, len(text) // 4)
    usage = {"prompt_tokens": tokens, "completion_tokens": output, "total_tokens": tokens + output,
             "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
             "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0}}
    with state.lock:
        ident = f"chatcmpl-sim{state.rng.getrandbits(64):016x}"
    completion = {"id": ident, "object": "chat.completion", "created": int(time.time()), "model": model,
                  "choices": [{"index": 0, "message": {"role": "assistant", "content": text, "refusal": None},
                               "logprobs": None, "finish_reason": "stop"}],
                  "usage": usage, "system_fingerprint": "fp_sim"}
    return 200, completion, _rate_headers(limit, remaining, reset_s, tokens)


def answer(prompt: str, seed: int, *, broken: bool = False) -> str:
    """The text of an answer: a diff in a fence when a refinement prompt asks for one, else Markdown."""
    if text_kind(prompt) in ("refinement", "integration") and DIFF_WORDS in prompt.lower():
        summary, diff, _ = task_result(prompt, seed)
        if broken:  # a hunk that claims more lines than it has: `git apply --check` refuses it
            diff = diff.replace("@@ -0,0 +1,", "@@ -0,0 +1,9", 1)
        return f"{summary}\n\n```diff\n{diff}```\n"
    return text_answer(prompt, seed)


def _fault(state: SimState, fault: str, model: str) -> Reply:
    base, _, arg = fault.partition(":")
    scale = state.config.time_scale
    if base == "429":
        delay = (float(arg.rstrip("s")) if arg else 2.0) * scale
        return openai_error(429, f"Rate limit reached for {model}. Please try again in {delay:.3f}s.", "requests",
                            "rate_limit_exceeded", headers={"retry-after-ms": str(int(delay * 1000))})
    if base == "quota-daily":
        return openai_error(429, "You exceeded your current quota, please check your plan and billing details.",
                            "insufficient_quota", "insufficient_quota")
    if base == "400":
        return openai_error(400, "This model's maximum context length is 8192 tokens. However, your messages "
                            "resulted in 9000 tokens.", "invalid_request_error", "context_length_exceeded",
                            "messages")
    if base == "401":
        return _bad_key()
    if base == "404":
        return openai_error(404, f"The model `{model}` does not exist or you do not have access to it.",
                            "invalid_request_error", "model_not_found")
    if base in ("malformed", "truncated", "empty", "error-200", "reset"):
        return -1, base, {}  # the server answers these with its shared plumbing
    code = int(base) if base.isdigit() else 503
    return openai_error(code, "The server had an error while processing your request. Sorry about that!",
                        "server_error", None)


def _route(h: routing.SimHandler, method: str, path: str) -> None:
    auth = h.headers.get("Authorization")
    if path == "/v1/models" and method == "GET":
        status, body, headers = models(h.state, auth)
    elif path == "/v1/chat/completions" and method == "POST":
        status, body, headers = completions(h.state, auth, h.body())
    else:
        status, body, headers = openai_error(405, f"{method} is not allowed on {path}", "invalid_request_error", None)
    if status < 0:  # a transport-level fault the shared plumbing answers
        h.answer_fault(str(body), "chat", routing.PLAIN)
    raise routing.Reply(status, body, headers)


NAME = "openai"
ROUTES = (routing.Route(None, re.compile(r"^/v1/(?:chat/completions|models)$"), lambda h, m: _route(h, h.command, m.group(0))),)


def serve_lines(url: str, creds: Path | None) -> list[str]:
    """What `sim serve` prints for OpenAI-compatible clients: the base URL and the key the simulator accepts."""
    return [f"OPENAI_BASE_URL={url}/v1 (any OpenAI-compatible client; OPENAI_API_KEY={SIM_CHAT_KEY})"]
