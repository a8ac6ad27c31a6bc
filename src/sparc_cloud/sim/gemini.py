"""The simulator's Gemini routes: Code Assist (`/v1internal:generateContent`, `:loadCodeAssist`, `:onboardUser`,
`/v1internal/operations/...`), the public API (`/v1beta/models/{model}:generateContent`) and Google's token
endpoint (`/token`), with their real envelopes, plus the OAuth credential file `sim serve --write-creds` writes."""

from __future__ import annotations

import json
import re
import secrets as pysecrets
import time
import urllib.parse
from pathlib import Path
from typing import Any

from sparc_cloud.fsutil import atomic_write_text
from sparc_cloud.sim import answers
from sparc_cloud.sim import gemini_envelopes as env
from sparc_cloud.sim.content import text_answer
from sparc_cloud.sim.routing import FaultStyle, Reply, Route, SimHandler, huge_text
from sparc_cloud.sim.state import SIM_OAUTH_CLIENT_ID, SIM_OAUTH_CLIENT_SECRET, SimState, b64

NAME = "gemini"
CREDENTIALS = Path(".gemini") / "oauth_creds.json"  # under the folder `--write-creds` names
BASE_PATH = "/v1internal"  # the Code Assist base under the simulator's URL
API_KEY = "sim-gemini-api-key-0000"  # what the public API routes accept as `x-goog-api-key`
REFRESH_PREFIX = "1//sim-"  # the simulator's Google-style refresh tokens
_LEEWAY_S = 0.002


def issue_token(state: SimState) -> dict[str, Any]:
    """A fresh Google-style token answer."""
    token = "ya29.sim-" + pysecrets.token_hex(16)
    state.remember_token(NAME, token)
    life = state.config.gemini_token_life_s * state.config.time_scale
    return {"access_token": token, "expires_in": life, "token_type": "Bearer",
            "scope": "https://www.googleapis.com/auth/cloud-platform"}


def id_token() -> str:
    """An OpenID token like the one google-auth-library stores (`email` claim), unsigned."""
    claims = {"iss": "https://accounts.google.com", "email": "sim@example.invalid", "email_verified": True,
              "iat": int(time.time()), "exp": int(time.time()) + 3600}
    return f"{b64({'alg': 'none', 'typ': 'JWT'})}.{b64(claims)}.sig"


def _huge(model: str, code_assist: bool) -> dict[str, Any]:
    text = huge_text()
    usage = {"promptTokenCount": 10, "candidatesTokenCount": len(text) // 4, "totalTokenCount": 10 + len(text) // 4}
    inner = {"candidates": [{"content": {"role": "model", "parts": [{"text": text}]}, "finishReason": "STOP",
                             "index": 0}], "usageMetadata": usage, "modelVersion": model}
    return {"response": inner, "traceId": "sim-huge"} if code_assist else inner


def _style(code_assist: bool) -> FaultStyle:
    return FaultStyle(
        error=lambda code, model: env.model_not_found(model) if code == 404 else env.google_simple(code),
        unauthorized=lambda: env.google_simple(401),
        rate_limited=lambda model, delay, scale: (
            env.code_assist_rate_limit(model, delay) if code_assist else env.public_rate_limit(model, delay), {}),
        daily_quota=lambda model: (env.daily_quota(model, code_assist), {}),
        bad_json=lambda: env.google_simple(400, "Invalid JSON payload received. Unexpected token."),
        capacity=env.capacity,
        huge=lambda model: _huge(model, code_assist),
    )


CODE_ASSIST = _style(True)
PUBLIC = _style(False)


def _auth(h: SimHandler, code_assist: bool) -> None:
    if code_assist:
        why = h.state.check_token(NAME, h.headers.get("Authorization"), h.state.config.gemini_token_life_s)
    else:
        why = None if h.headers.get("x-goog-api-key") == API_KEY else "bad api key"
        if why:
            raise Reply(400, env.google_error(400, "INVALID_ARGUMENT", "API key not valid. Please pass a valid API key."))
    if why:
        with h.state.lock:
            h.state.counters.unauthorized += 1
        raise Reply(401, env.google_simple(401))


def _generate(h: SimHandler, *, code_assist: bool, model: str | None) -> None:
    state = h.state
    with state.lock:
        state.counters.requests["gemini.generate"] += 1
    _auth(h, code_assist)
    style = CODE_ASSIST if code_assist else PUBLIC
    body = h.json_body(style)
    if not isinstance(body, dict):
        raise Reply(400, env.google_simple(400, "Invalid JSON payload received. Expected an object."))
    if code_assist:
        model = body.get("model")
        request = body.get("request")
        if not isinstance(model, str) or not isinstance(request, dict) or not body.get("project"):
            raise Reply(400, env.google_simple(400, "Request contains an invalid argument: model, project "
                                                    "and request are required."))
        if body["project"] != state.config.project_id:
            raise Reply(403, env.service_disabled(str(body["project"])))
        unknown = set(body) - {"model", "project", "user_prompt_id", "request", "enabled_credit_types"}
    else:
        request = body
        unknown = set()
    assert model is not None
    contents = request.get("contents")
    if unknown or not isinstance(contents, list) or not contents:
        raise Reply(400, env.google_simple(400, "Invalid JSON payload received. Unknown or missing field."))
    if model not in state.config.models:
        raise Reply(404, env.model_not_found(model))
    with state.lock:
        state.counters.requests[f"gemini.generate:{model}"] += 1
    gen = request.get("generationConfig") or {}
    if not isinstance(gen, dict) or not isinstance(gen.get("responseJsonSchema", {}), dict):
        raise Reply(400, env.google_simple(400, "Invalid JSON payload received. Invalid generationConfig."))
    fault = state.next_fault("gemini.generate", model)
    if fault == "schema-400" and "responseJsonSchema" in gen:  # a server that refuses the schema itself
        raise Reply(400, env.google_error(400, "INVALID_ARGUMENT", "Invalid JSON payload received. Unknown "
                                          "name \"responseJsonSchema\" at 'generation_config': Cannot find field."))
    if fault is not None and fault not in ("schema-400", "bad-json"):
        h.answer_fault(fault, model, style)
    if state.config.enforce_limits:
        wait = state.limiters.try_acquire(("gemini", "generate", model), leeway_s=_LEEWAY_S)
        if wait > 0:
            with state.lock:
                state.counters.rate_limited[f"gemini:{model}"] += 1
                state.rate_limited_log.append((state.clock.now() - state.started, model, wait))
            body_ = env.code_assist_rate_limit(model, wait) if code_assist else env.public_rate_limit(model, wait)
            raise Reply(429, body_)
    prompt = "".join(
        str(p.get("text", "")) for c in contents if isinstance(c, dict)
        for p in c.get("parts") or [] if isinstance(p, dict)
    )
    state.serve("gemini", model, prompt)
    if gen.get("responseMimeType") == "application/json" or answers.wants_json(prompt):
        text = answers.structured_text(prompt, state.config.seed, broken=fault == "bad-json")
    else:
        text = text_answer(prompt, state.config.seed)
    prompt_tokens = max(1, len(prompt) // 4)
    output_tokens = max(1, len(text) // 4)
    inner = {
        "candidates": [{"content": {"role": "model", "parts": [{"text": text}]}, "finishReason": "STOP",
                        "index": 0}],
        "usageMetadata": {"promptTokenCount": prompt_tokens, "candidatesTokenCount": output_tokens,
                          "totalTokenCount": prompt_tokens + output_tokens},
        "modelVersion": model,
    }
    trace = f"sim-{state.rng.getrandbits(64):016x}"
    if code_assist:
        raise Reply(200, {"response": inner, "traceId": trace})
    raise Reply(200, {**inner, "responseId": trace})


def _load_code_assist(h: SimHandler) -> None:
    state = h.state
    with state.lock:
        state.counters.requests["gemini.load"] += 1
    _auth(h, True)
    body = h.json_body(CODE_ASSIST)
    if not isinstance(body, dict) or not isinstance(body.get("metadata"), dict):
        raise Reply(400, env.google_simple(400))
    h.apply_fault("gemini.load", "", CODE_ASSIST)
    free = {"id": "free-tier", "name": "Gemini Code Assist for individuals (simulated)", "isDefault": True}
    standard = {"id": "standard-tier", "name": "Gemini Code Assist (simulated)", "isDefault": False,
                "userDefinedCloudaicompanionProject": True}
    if not state.onboarded:
        raise Reply(200, {"allowedTiers": [free, standard]})
    # The account's own (managed) project wins over the one the client offers, as for a free-tier user.
    raise Reply(200, {"currentTier": free, "allowedTiers": [free, standard],
                      "cloudaicompanionProject": state.config.project_id})


def _onboard_user(h: SimHandler) -> None:
    state = h.state
    with state.lock:
        state.counters.requests["gemini.onboard"] += 1
    _auth(h, True)
    body = h.json_body(CODE_ASSIST)
    if not isinstance(body, dict) or not body.get("tierId") or not isinstance(body.get("metadata"), dict):
        raise Reply(400, env.google_simple(400, "Request contains an invalid argument: tierId and metadata "
                                                "are required."))
    if body["tierId"] == "free-tier" and body.get("cloudaicompanionProject"):
        raise Reply(400, env.google_error(400, "FAILED_PRECONDITION", "Precondition Failed"))
    name = "operations/onboard-" + pysecrets.token_hex(8)
    with state.lock:
        state.operations[name] = state.config.onboard_polls
    raise Reply(200, _lro(h, name))


def _operation(h: SimHandler, name: str) -> None:
    _auth(h, True)
    with h.state.lock:
        if name not in h.state.operations:
            raise Reply(404, env.google_error(404, "NOT_FOUND", f"Operation {name} not found."))
        h.state.operations[name] = max(0, h.state.operations[name] - 1)
    raise Reply(200, _lro(h, name))


def _lro(h: SimHandler, name: str) -> dict[str, Any]:
    with h.state.lock:
        if h.state.operations[name] > 0:
            return {"name": name, "done": False}
        h.state.onboarded = True
    project = h.state.config.project_id
    return {"name": name, "done": True, "response": {"cloudaicompanionProject": {"id": project, "name": project}}}


def _token(h: SimHandler) -> None:
    form = urllib.parse.parse_qs(h.body().decode("utf-8", "replace"))
    h.apply_fault("oauth.token", "gemini", CODE_ASSIST)
    get = {k: v[0] for k, v in form.items()}
    if get.get("client_id") != SIM_OAUTH_CLIENT_ID or get.get("client_secret") != SIM_OAUTH_CLIENT_SECRET:
        raise Reply(401, {"error": "invalid_client", "error_description": "The OAuth client was not found."})
    if get.get("grant_type") != "refresh_token" or h.state.refresh_tokens.get(get.get("refresh_token", "")) != "gemini":
        raise Reply(400, {"error": "invalid_grant", "error_description": "Token has been expired or revoked."})
    raise Reply(200, issue_token(h.state))


ROUTES = (
    Route("POST", re.compile(r"^/v1internal:generateContent$"), lambda h, m: _generate(h, code_assist=True, model=None)),
    Route("POST", re.compile(r"^/v1internal:loadCodeAssist$"), lambda h, m: _load_code_assist(h)),
    Route("POST", re.compile(r"^/v1internal:onboardUser$"), lambda h, m: _onboard_user(h)),
    Route("GET", re.compile(r"^/v1internal/(operations/[A-Za-z0-9_-]+)$"), lambda h, m: _operation(h, m.group(1))),
    Route("POST", re.compile(r"^/v1beta/models/([^/:]+):generateContent$"),
          lambda h, m: _generate(h, code_assist=False, model=urllib.parse.unquote(m.group(1)))),
    Route("POST", re.compile(r"^/token$"), lambda h, m: _token(h)),
)


def written_by_simulator(data: dict[str, Any]) -> bool:
    """Whether a credential file's JSON holds the simulator's fake tokens (so writing over it loses nothing)."""
    return str(data.get("refresh_token") or "").startswith(REFRESH_PREFIX)


def write_credentials(state: SimState, path: Path) -> None:
    """The OAuth file the gemini CLI writes, with tokens the simulator accepts."""
    issued = issue_token(state)
    atomic_write_text(path, json.dumps({
        "access_token": issued["access_token"], "refresh_token": state.new_refresh_token(NAME, REFRESH_PREFIX),
        "scope": issued["scope"], "token_type": "Bearer", "id_token": id_token(),
        "expiry_date": int((time.time() + float(issued["expires_in"])) * 1000),
    }, indent=2), mode=0o600)


def client_settings(url: str, creds: Path) -> dict[str, Any]:
    """Settings values that aim the Gemini client at the simulator at `url`, with its credential file."""
    return {"gemini_base_url": url + BASE_PATH, "gemini_api_base_url": url, "gemini_oauth_token_url": url + "/token",
            "gemini_creds": creds, "gemini_oauth_client_id": SIM_OAUTH_CLIENT_ID,
            "gemini_oauth_client_secret": SIM_OAUTH_CLIENT_SECRET, "gemini_api_key": None,
            "google_cloud_project": None, "gemini_refresh_command": ""}


def serve_lines(url: str, creds: Path | None) -> list[str]:
    """What `sim serve` prints for Gemini: the settings that aim a client here, the credential file."""
    lines = [f"SPARC_GEMINI_BASE_URL={url}{BASE_PATH}", f"SPARC_GEMINI_API_BASE_URL={url}",
             f"SPARC_GEMINI_OAUTH_TOKEN_URL={url}/token"]
    if creds is not None:
        lines += [f"SPARC_GEMINI_CREDS={creds}",
                  f"SPARC_GEMINI_OAUTH_CLIENT_ID={SIM_OAUTH_CLIENT_ID} (the secret is in sparc_cloud.sim.state)"]
    return lines
