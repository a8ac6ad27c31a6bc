"""The simulator's HTTP server on loopback: the routes of both clouds plus `/_sim/...` control routes."""

from __future__ import annotations

import base64
import binascii
import contextlib
import functools
import json
import re
import secrets as pysecrets
import select
import socket
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from sparc_cloud.errors import ConfigError
from sparc_cloud.fsutil import atomic_write_text
from sparc_cloud.sim import chat
from sparc_cloud.sim import envelopes as env
from sparc_cloud.sim.config import Fault, SimConfig, TaskScript
from sparc_cloud.sim.content import gemini_text
from sparc_cloud.sim.state import (
    SIM_ACCOUNT_ID,
    SIM_API_KEY,
    SIM_OAUTH_CLIENT_ID,
    SIM_OAUTH_CLIENT_SECRET,
    SimState,
    SimTask,
    prompt_digest,
)

_HUGE_UNIT = "Grüße, naïve café — 日本語のテキスト — 🚀🧠💾✨ — مرحبا — tab\there\n"


@functools.cache
def huge_text() -> str:
    """10 MB of non-ASCII text (accents, CJK, 4-byte emoji, a right-to-left script), built on first use."""
    return "> Simulated huge output.\n" + _HUGE_UNIT * (10 * 1024 * 1024 // len(_HUGE_UNIT.encode()) + 1)

_CODEX_PREFIX = re.compile(r"^(?:/backend-api/wham|/backend-api/codex|/api/codex)(/.*)$")
_OPERATION = re.compile(r"^/v1internal/(operations/[A-Za-z0-9_-]+)$")
_FINAL = ("completed", "failed", "cancelled")
_HANG_UP_WAIT_S = 60.0  # created-timeout: how long the server waits at most for the client to give up
_PUBLIC_GENERATE = re.compile(r"^/v1beta/models/([^/:]+):generateContent$")
_LEEWAY_S = 0.002


class _Reply(Exception):
    """Raised inside a route to answer at once."""

    def __init__(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        super().__init__(status)
        self.status = status
        self.body = body
        self.headers = headers or {}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        return

    # ----------------------------------------------------------------- plumbing

    @property
    def state(self) -> SimState:
        return self.server.state

    def _send(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        raw = body if isinstance(body, bytes) else (body if isinstance(body, str) else json.dumps(body)).encode()
        self.send_response(status)
        content_type = "text/html" if isinstance(body, str) and body.startswith("<html") else "application/json"
        self.send_header("Content-Type", f"{content_type}; charset=UTF-8")
        self.send_header("Content-Length", str(len(raw)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(raw)
        with self.state.lock:
            self.state.counters.status_sent[str(status)] += 1

    def _body(self) -> bytes:
        return self._raw

    def _json_body(self, google: bool) -> Any:
        raw = self._body()
        try:
            return json.loads(raw) if raw else None
        except ValueError:
            if google:
                raise _Reply(400, env.google_simple(400, "Invalid JSON payload received. Unexpected token.")) from None
            raise _Reply(400, env.codex_detail("Invalid JSON body")) from None

    def _reset(self) -> None:
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)

    def _dispatch(self, method: str) -> None:
        path = urllib.parse.urlsplit(self.path).path
        # Read the whole body first: an early answer must not leave it in a kept-alive connection.
        length = int(self.headers.get("Content-Length") or 0)
        self._raw = self.rfile.read(length) if length else b""
        try:
            self._route(method, path)
        except _Reply as reply:
            if reply.status > 0:  # -1: the connection was reset on purpose
                self._send(reply.status, reply.body, reply.headers)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def do_GET(self) -> None:  # noqa: N802 - stdlib name
        self._dispatch("GET")

    def do_POST(self) -> None:  # noqa: N802 - stdlib name
        self._dispatch("POST")

    # ------------------------------------------------------------------- routes

    def _route(self, method: str, path: str) -> None:
        if path.startswith("/_sim/"):
            return self._control(method, path)
        if method == "POST" and path == "/v1internal:generateContent":
            return self._generate(code_assist=True, model=None)
        if path in ("/v1/chat/completions", "/v1/models"):
            return self._chat(method, path)
        if method == "POST" and path == "/v1internal:loadCodeAssist":
            return self._load_code_assist()
        if method == "POST" and path == "/v1internal:onboardUser":
            return self._onboard_user()
        match = _OPERATION.match(path)
        if method == "GET" and match:
            return self._operation(match.group(1))
        match = _PUBLIC_GENERATE.match(path)
        if method == "POST" and match:
            return self._generate(code_assist=False, model=urllib.parse.unquote(match.group(1)))
        if method == "POST" and path == "/token":
            return self._google_token()
        if method == "POST" and path == "/oauth/token":
            return self._codex_token()
        match = _CODEX_PREFIX.match(path)
        if match:
            return self._codex(method, match.group(1))
        raise _Reply(404, env.google_error(404, "NOT_FOUND", f"The requested URL {path} was not found on this server."))

    def _control(self, method: str, path: str) -> None:
        if path == "/_sim/counters" and method == "GET":
            raise _Reply(200, self.state.snapshot())
        if path == "/_sim/served" and method == "GET":
            with self.state.lock:
                served = [{"kind": k, "model": m, "prompt_sha256": d, "service_s": round(t, 6)}
                          for k, m, d, t in self.state.served]
            raise _Reply(200, {"served": served})
        if path == "/_sim/health":
            raise _Reply(200, {"ok": True})
        if path == "/_sim/scenario" and method == "POST":
            data = self._json_body(google=False) or {}
            try:
                faults = [Fault.model_validate(f) for f in data.get("faults", [])]
                tasks = [TaskScript.model_validate(t) for t in data.get("tasks", [])]
            except ValueError as exc:
                raise _Reply(400, env.codex_detail(f"invalid scenario: {exc}")) from None
            self.state.set_scenario(faults, tasks)
            raise _Reply(200, {"ok": True, "faults": len(faults), "tasks": len(tasks)})
        raise _Reply(404, env.codex_detail("unknown simulator control route"))

    # ------------------------------------------------------------------- faults

    def _apply_fault(self, endpoint: str, model: str, *, google: bool, code_assist: bool = True) -> None:
        fault = self.state.next_fault(endpoint, model)
        if fault is not None:
            self._answer_fault(fault, model, google=google, code_assist=code_assist)

    def _answer_fault(self, fault: str, model: str, *, google: bool, code_assist: bool = True) -> None:
        base, _, arg = fault.partition(":")
        scale = self.state.config.time_scale
        if base == "reset":
            self._reset()
            raise _Reply(-1, None)
        if base == "truncated":
            text = json.dumps({"response": {"candidates": [{"content": {"parts": [{"text": "x" * 200}]}}]}})
            raise _Reply(200, text[: len(text) // 2])
        if base == "malformed":
            raise _Reply(200, "<html><body>upstream sent garbage</body></html>")
        if base == "empty":
            raise _Reply(200, b"")
        if base == "error-200":
            raise _Reply(200, env.google_simple(500))
        if base == "huge" and google:
            text = huge_text()
            usage = {"promptTokenCount": 10, "candidatesTokenCount": len(text) // 4,
                     "totalTokenCount": 10 + len(text) // 4}
            inner = {"candidates": [{"content": {"role": "model", "parts": [{"text": text}]}, "finishReason": "STOP",
                                     "index": 0}], "usageMetadata": usage, "modelVersion": model}
            raise _Reply(200, {"response": inner, "traceId": "sim-huge"} if code_assist else inner)
        if base == "401":
            self.state.revoke(self.headers.get("Authorization"))
            raise _Reply(401, env.google_simple(401) if google else env.codex_detail("Unauthorized"))
        if base == "429":
            delay = (float(arg.rstrip("s")) if arg else 2.0) * scale
            if not google:
                raise _Reply(429, env.codex_usage_limit(delay, scale), env.codex_usage_headers(delay, scale))
            body = env.code_assist_rate_limit(model, delay) if code_assist else env.public_rate_limit(model, delay)
            raise _Reply(429, body)
        if base == "quota-daily":
            if not google:
                raise _Reply(429, env.codex_usage_limit(9 * 3600), env.codex_usage_headers(9 * 3600))
            raise _Reply(429, env.daily_quota(model, code_assist))
        if base == "capacity":
            raise _Reply(503, env.capacity(model))
        if base == "502":
            raise _Reply(502, env.BAD_GATEWAY_HTML)
        code = int(base)
        if code == 404 and google:
            raise _Reply(404, env.model_not_found(model))
        raise _Reply(code, env.google_simple(code) if google else env.codex_detail(f"HTTP {code}"))

    # ------------------------------------------------------------------- openai-compatible

    def _chat(self, method: str, path: str) -> None:
        auth = self.headers.get("Authorization")
        if path == "/v1/models" and method == "GET":
            status, body, headers = chat.models(self.state, auth)
        elif path == "/v1/chat/completions" and method == "POST":
            status, body, headers = chat.completions(self.state, auth, self._body())
        else:
            status, body, headers = chat.openai_error(405, f"{method} is not allowed on {path}",
                                                      "invalid_request_error", None)
        if status < 0:  # a transport-level fault the shared plumbing answers
            self._answer_fault(str(body), "chat", google=False)
        raise _Reply(status, body, headers)

    # ------------------------------------------------------------------- gemini

    def _gemini_auth(self, code_assist: bool) -> None:
        if code_assist:
            why = self.state.check_token("gemini", self.headers.get("Authorization"))
        else:
            why = None if self.headers.get("x-goog-api-key") == SIM_API_KEY else "bad api key"
            if why:
                raise _Reply(400, env.google_error(400, "INVALID_ARGUMENT",
                                                   "API key not valid. Please pass a valid API key."))
        if why:
            with self.state.lock:
                self.state.counters.unauthorized += 1
            raise _Reply(401, env.google_simple(401))

    def _generate(self, *, code_assist: bool, model: str | None) -> None:
        with self.state.lock:
            self.state.counters.requests["gemini.generate"] += 1
        self._gemini_auth(code_assist)
        body = self._json_body(google=True)
        if not isinstance(body, dict):
            raise _Reply(400, env.google_simple(400, "Invalid JSON payload received. Expected an object."))
        if code_assist:
            model = body.get("model")
            request = body.get("request")
            if not isinstance(model, str) or not isinstance(request, dict) or not body.get("project"):
                raise _Reply(400, env.google_simple(400, "Request contains an invalid argument: model, project "
                                                         "and request are required."))
            if body["project"] != self.state.config.project_id:
                raise _Reply(403, env.service_disabled(str(body["project"])))
            unknown = set(body) - {"model", "project", "user_prompt_id", "request", "enabled_credit_types"}
        else:
            request = body
            unknown = set()
        assert model is not None
        contents = request.get("contents")
        if unknown or not isinstance(contents, list) or not contents:
            raise _Reply(400, env.google_simple(400, "Invalid JSON payload received. Unknown or missing field."))
        if model not in self.state.config.models:
            raise _Reply(404, env.model_not_found(model))
        with self.state.lock:
            self.state.counters.requests[f"gemini.generate:{model}"] += 1
        self._apply_fault("gemini.generate", model, google=True, code_assist=code_assist)
        if self.state.config.enforce_limits:
            wait = self.state.limiters.try_acquire(("gemini", "generate", model), leeway_s=_LEEWAY_S)
            if wait > 0:
                with self.state.lock:
                    self.state.counters.rate_limited[f"gemini:{model}"] += 1
                    self.state.rate_limited_log.append((self.state.clock.now() - self.state.started, model, wait))
                body_ = env.code_assist_rate_limit(model, wait) if code_assist else env.public_rate_limit(model, wait)
                raise _Reply(429, body_)
        prompt = "".join(
            str(p.get("text", "")) for c in contents if isinstance(c, dict)
            for p in c.get("parts") or [] if isinstance(p, dict)
        )
        latency = self.state.latency(model, prompt)
        with self.state.lock:
            c = self.state.counters
            c.in_flight += 1
            c.peak_in_flight = max(c.peak_in_flight, c.in_flight)
            self.state.served.append(("gemini", model, prompt_digest(prompt), latency))
        try:
            time.sleep(latency)
        finally:
            with self.state.lock:
                self.state.counters.in_flight -= 1
        text = gemini_text(prompt, self.state.config.seed)
        prompt_tokens = max(1, len(prompt) // 4)
        output_tokens = max(1, len(text) // 4)
        inner = {
            "candidates": [{"content": {"role": "model", "parts": [{"text": text}]}, "finishReason": "STOP",
                            "index": 0}],
            "usageMetadata": {"promptTokenCount": prompt_tokens, "candidatesTokenCount": output_tokens,
                              "totalTokenCount": prompt_tokens + output_tokens},
            "modelVersion": model,
        }
        trace = f"sim-{self.state.rng.getrandbits(64):016x}"
        if code_assist:
            raise _Reply(200, {"response": inner, "traceId": trace})
        raise _Reply(200, {**inner, "responseId": trace})

    def _load_code_assist(self) -> None:
        with self.state.lock:
            self.state.counters.requests["gemini.load"] += 1
        self._gemini_auth(True)
        body = self._json_body(google=True)
        if not isinstance(body, dict) or not isinstance(body.get("metadata"), dict):
            raise _Reply(400, env.google_simple(400))
        self._apply_fault("gemini.load", "", google=True)
        free = {"id": "free-tier", "name": "Gemini Code Assist for individuals (simulated)", "isDefault": True}
        standard = {"id": "standard-tier", "name": "Gemini Code Assist (simulated)", "isDefault": False,
                    "userDefinedCloudaicompanionProject": True}
        if not self.state.onboarded:
            raise _Reply(200, {"allowedTiers": [free, standard]})
        # The account's own (managed) project wins over the one the client offers, as for a free-tier user.
        raise _Reply(200, {"currentTier": free, "allowedTiers": [free, standard],
                           "cloudaicompanionProject": self.state.config.project_id})

    def _onboard_user(self) -> None:
        with self.state.lock:
            self.state.counters.requests["gemini.onboard"] += 1
        self._gemini_auth(True)
        body = self._json_body(google=True)
        if not isinstance(body, dict) or not body.get("tierId") or not isinstance(body.get("metadata"), dict):
            raise _Reply(400, env.google_simple(400, "Request contains an invalid argument: tierId and metadata "
                                                     "are required."))
        if body["tierId"] == "free-tier" and body.get("cloudaicompanionProject"):
            raise _Reply(400, env.google_error(400, "FAILED_PRECONDITION", "Precondition Failed"))
        name = "operations/onboard-" + pysecrets.token_hex(8)
        with self.state.lock:
            self.state.operations[name] = self.state.config.onboard_polls
        raise _Reply(200, self._lro(name))

    def _operation(self, name: str) -> None:
        self._gemini_auth(True)
        with self.state.lock:
            if name not in self.state.operations:
                raise _Reply(404, env.google_error(404, "NOT_FOUND", f"Operation {name} not found."))
            self.state.operations[name] = max(0, self.state.operations[name] - 1)
        raise _Reply(200, self._lro(name))

    def _lro(self, name: str) -> dict[str, Any]:
        with self.state.lock:
            if self.state.operations[name] > 0:
                return {"name": name, "done": False}
            self.state.onboarded = True
        project = self.state.config.project_id
        return {"name": name, "done": True, "response": {"cloudaicompanionProject": {"id": project, "name": project}}}

    def _google_token(self) -> None:
        form = urllib.parse.parse_qs(self._body().decode("utf-8", "replace"))
        self._apply_fault("oauth.token", "gemini", google=True)
        get = {k: v[0] for k, v in form.items()}
        if get.get("client_id") != SIM_OAUTH_CLIENT_ID or get.get("client_secret") != SIM_OAUTH_CLIENT_SECRET:
            raise _Reply(401, {"error": "invalid_client", "error_description": "The OAuth client was not found."})
        if get.get("grant_type") != "refresh_token" or self.state.refresh_tokens.get(
                get.get("refresh_token", "")) != "gemini":
            raise _Reply(400, {"error": "invalid_grant", "error_description": "Token has been expired or revoked."})
        raise _Reply(200, self.state.issue_gemini())

    def _codex_token(self) -> None:
        body = self._json_body(google=False) or {}
        self._apply_fault("oauth.token", "codex", google=False)
        if body.get("grant_type") != "refresh_token" or self.state.refresh_tokens.get(
                str(body.get("refresh_token"))) != "codex":
            raise _Reply(401, {"error": {"code": "refresh_token_invalidated",
                                         "message": "Your refresh token has been invalidated."}})
        raise _Reply(200, self.state.issue_codex())

    # -------------------------------------------------------------------- codex

    def _codex(self, method: str, path: str) -> None:
        why = self.state.check_token("codex", self.headers.get("Authorization"))
        account = self.headers.get("ChatGPT-Account-Id")
        if why or account != SIM_ACCOUNT_ID:
            with self.state.lock:
                self.state.counters.unauthorized += 1
            raise _Reply(401, env.codex_detail("Unauthorized"))
        parts = [p for p in path.split("/") if p]
        if method == "POST" and parts == ["tasks"]:
            return self._create_task()
        if method == "GET" and parts == ["tasks", "list"]:
            return self._list_tasks()
        if method == "GET" and len(parts) == 2 and parts[0] == "tasks":
            return self._task_details(urllib.parse.unquote(parts[1]))
        if method == "GET" and len(parts) == 5 and parts[0] == "tasks" and parts[4] == "sibling_turns":
            self._find_task(urllib.parse.unquote(parts[1]))
            raise _Reply(200, {"sibling_turns": []})
        if method == "GET" and parts[:1] == ["environments"]:
            self._apply_fault("codex.envs", "", google=False)
            raise _Reply(200, self.state.config.environments)
        if method == "GET" and parts == ["usage"]:
            raise _Reply(200, {"plan_type": "pro", "rate_limit": {
                "allowed": True, "limit_reached": False,
                "primary_window": {"used_percent": 12, "limit_window_seconds": 18000, "reset_after_seconds": 9000,
                                   "reset_at": int(time.time()) + 9000}, "secondary_window": None},
                "credits": None})
        raise _Reply(404, env.codex_detail("Not Found"))

    def _codex_limit(self, key: str) -> None:
        if not self.state.config.enforce_limits:
            return
        wait = self.state.limiters.try_acquire(("codex", key, SIM_ACCOUNT_ID), leeway_s=_LEEWAY_S)
        if wait > 0:
            with self.state.lock:
                self.state.counters.rate_limited[f"codex:{key}"] += 1
                self.state.rate_limited_log.append((self.state.clock.now() - self.state.started, f"codex.{key}", wait))
            scale = self.state.config.time_scale
            raise _Reply(429, env.codex_usage_limit(wait, scale), env.codex_usage_headers(wait, scale))

    def _create_task(self) -> None:
        with self.state.lock:
            self.state.counters.requests["codex.create"] += 1
        body = self._json_body(google=False)
        if not isinstance(body, dict) or not isinstance(body.get("new_task"), dict):
            raise _Reply(400, env.codex_detail("Must specify one of: follow_up, new_task, review_fix"))
        env_id = body["new_task"].get("environment_id")
        if env_id not in {e.get("id") for e in self.state.config.environments}:
            raise _Reply(404, env.codex_detail(f"Environment {env_id} not found"))
        items = body.get("input_items")
        prompt = "\n\n".join(
            str(part.get("text", "")) for item in items or [] if isinstance(item, dict) and item.get("type") == "message"
            for part in item.get("content") or [] if isinstance(part, dict)
        )
        if not prompt:
            raise _Reply(400, env.codex_detail("input_items must contain a user message"))
        fault = self.state.next_fault("codex.create", "")
        if fault is not None and not fault.startswith("created-"):
            self._answer_fault(fault, "", google=False)
        self._codex_limit("create")
        task = self.state.create_task(str(env_id), prompt)
        if fault == "created-502":
            raise _Reply(502, env.BAD_GATEWAY_HTML)
        if fault == "created-reset":
            self._reset()
            raise _Reply(-1, None)
        if fault == "created-timeout":
            self._wait_for_hang_up()
            raise _Reply(-1, None)
        raise _Reply(200, {"task": {"id": task.id}})

    def _wait_for_hang_up(self) -> None:
        """Answer nothing until the client gives up (its timeout closes the connection), then close."""
        deadline = time.monotonic() + _HANG_UP_WAIT_S
        with contextlib.suppress(OSError):
            while time.monotonic() < deadline:
                readable, _, _ = select.select([self.connection], [], [], 0.05)
                if readable and not self.connection.recv(1, socket.MSG_PEEK):
                    break
        self._reset()

    def _find_task(self, task_id: str) -> SimTask:
        task = self.state.tasks.get(task_id)
        if task is None:
            raise _Reply(404, env.codex_detail(f"Task {task_id} not found"))
        return task

    def _task_details(self, task_id: str) -> None:
        with self.state.lock:
            self.state.counters.requests["codex.poll"] += 1
        task = self._find_task(task_id)
        self._apply_fault("codex.poll", "", google=False)
        self._codex_limit("poll")
        status = self.state.task_status(task)
        self.state.record_poll(task, status)
        raise _Reply(200, _details_body(task, status, self.state))

    def _list_tasks(self) -> None:
        """`GET /tasks/list?limit&task_filter&cursor&environment_id`: the environment's tasks, most recently
        updated first, in pages with an opaque cursor; under the same budget as the task polls."""
        with self.state.lock:
            self.state.counters.requests["codex.list"] += 1
        query = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
        try:
            limit = int(query.get("limit", ["20"])[0])
        except ValueError:
            raise _Reply(400, env.codex_detail("limit must be an integer")) from None
        if not 1 <= limit <= 100:
            raise _Reply(400, env.codex_detail("limit must be between 1 and 100"))
        offset = _decode_cursor(query.get("cursor", [""])[0])
        env_id = query.get("environment_id", [""])[0]
        self._apply_fault("codex.list", "", google=False)
        self._codex_limit("poll")
        with self.state.lock:
            tasks = [t for t in self.state.tasks.values() if not env_id or t.environment_id == env_id]
        rows = [(t, self.state.task_status(t)) for t in tasks]
        rows.sort(key=lambda r: (-r[0].updated_wall(r[1]), -r[0].index))
        page = rows[offset: offset + limit]
        self.state.record_listing(page)
        items = [
            {"id": t.id, "title": _title(t), "archived": False, "has_unread_turn": status in _FINAL,
             "has_generated_title": True, "created_at": t.created_wall, "updated_at": t.updated_wall(status),
             "task_status_display": _status_display(status, t, self.state)}
            for t, status in page
        ]
        more = offset + limit < len(rows)
        raise _Reply(200, {"items": items, "cursor": _encode_cursor(offset + limit) if more else None})


def _encode_cursor(offset: int) -> str:
    return base64.urlsafe_b64encode(json.dumps({"o": offset}).encode()).decode().rstrip("=")


def _decode_cursor(cursor: str) -> int:
    if not cursor:
        return 0
    try:
        data = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        offset = int(data["o"])
    except (ValueError, KeyError, TypeError, binascii.Error):
        raise _Reply(400, env.codex_detail("invalid cursor")) from None
    if offset < 0:
        raise _Reply(400, env.codex_detail("invalid cursor"))
    return offset


def _title(task: SimTask) -> str:
    first = next((line for line in task.prompt.splitlines() if line.strip()), "Codex task")
    return first.strip("# ")[:80]


def _status_display(status: str, task: SimTask, state: SimState) -> dict[str, Any]:
    """`task_status_display` with the keys `codex cloud list` reads (openai/codex cloud-tasks-client http.rs)."""
    label = next((str(e.get("label") or e.get("id")) for e in state.config.environments
                  if e.get("id") == task.environment_id), task.environment_id)
    added = task.diff.count("\n+") - task.diff.count("\n+++") if status == "completed" else 0
    return {"latest_turn_status_display": {"turn_status": status, "sibling_turn_ids": [],
                                           "diff_stats": {"files_modified": task.diff.count("diff --git")
                                                          if status == "completed" else 0,
                                                          "lines_added": added, "lines_removed": 0},
                                           "created_at": task.created_wall, "updated_at": task.updated_wall(status)},
            "environment_label": label}


def _details_body(task: SimTask, status: str, state: SimState) -> dict[str, Any]:
    turn_id = f"{task.id}~assttrn_e_{task.id[-32:]}"
    finished = status in ("completed", "failed", "cancelled")
    output_items: list[dict[str, Any]] = []
    error = None
    if status == "completed":
        output_items.append({"type": "message", "role": "assistant",
                             "content": [{"content_type": "text", "text": task.summary}]})
        if task.index % 2 == 0:
            output_items.append({"type": "pr", "output_diff": {"diff": task.diff}})
        else:
            output_items.append({"type": "output_diff", "diff": task.diff})
    elif status in ("failed", "cancelled") and task.script:
        error = {"code": task.script.error_code, "message": task.script.error_message}
    worklog = {"messages": [
        {"author": {"role": "assistant"}, "content": {"parts": [{"content_type": "text", "text": line}]}}
        for line in (task.worklog if finished else task.worklog[:1])
    ]}
    assistant = {"id": turn_id, "attempt_placement": 0, "turn_status": status, "sibling_turn_ids": [],
                 "output_items": output_items, "worklog": worklog, "error": error, "created_at": task.created_wall}
    return {
        "task": {"id": task.id, "title": _title(task), "archived": False, "external_pull_requests": [],
                 "created_at": task.created_wall, "environment_id": task.environment_id,
                 "updated_at": task.updated_wall(status),
                 "current_turn_id": turn_id, "has_unread_turn": finished},
        "current_user_turn": {"id": f"{task.id}~usrtrn", "turn_status": "completed", "input_items": [
            {"type": "message", "role": "user", "content": [{"content_type": "text", "text": task.prompt}]}]},
        "current_assistant_turn": assistant,
        "current_diff_task_turn": None,
        "task_status_display": _status_display(status, task, state),
    }


def client_settings(url: str, paths: dict[str, Path]) -> dict[str, Any]:
    """Settings values that aim sparc-cloud's clients at a simulator at `url` whose credential files are
    at `paths` (`{"gemini": ..., "codex": ...}`, as `Simulator.write_credentials` returns them)."""
    return {
        "gemini_base_url": url + "/v1internal", "gemini_api_base_url": url,
        "gemini_oauth_token_url": url + "/token", "gemini_creds": paths["gemini"],
        "gemini_oauth_client_id": SIM_OAUTH_CLIENT_ID, "gemini_oauth_client_secret": SIM_OAUTH_CLIENT_SECRET,
        "gemini_api_key": None, "google_cloud_project": None, "gemini_refresh_command": "",
        "codex_base_url": url + "/backend-api", "codex_auth": paths["codex"], "codex_refresh": True,
        "codex_refresh_url": url + "/oauth/token", "codex_path_style": "auto",
    }


def _written_by_simulator(path: Path) -> bool:
    """Whether a credential file holds the simulator's fake tokens (so writing over it loses nothing)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if not isinstance(data, dict):
        return False
    inner = data.get("tokens")
    tokens: dict[str, Any] = inner if isinstance(inner, dict) else data
    refresh = str(tokens.get("refresh_token") or "")
    return refresh.startswith(("1//sim-", "rt_sim_")) or tokens.get("account_id") == SIM_ACCOUNT_ID


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 256

    def __init__(self, address: tuple[str, int], state: SimState) -> None:
        super().__init__(address, _Handler)
        self.state = state


class Simulator:
    """Both clouds on 127.0.0.1. Use as a context manager, or `start()` / `stop()`."""

    def __init__(self, config: SimConfig | None = None, *, host: str = "127.0.0.1", port: int = 0) -> None:
        if not 0 <= port <= 65535:
            raise ConfigError(f"Port {port} does not exist: give a port from 1 to 65535 (0 picks a free one).")
        self.config = config or SimConfig()
        self.state = SimState(self.config)
        try:
            self._server = _Server((host, port), self.state)
        except OSError as exc:
            raise ConfigError(f"Cannot listen on {host}:{port}: {exc.strerror or exc}. Choose another port (0 picks a "
                              "free one).") from None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """`http://127.0.0.1:<port>`."""
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    @property
    def gemini_base_url(self) -> str:
        """The Code Assist base (`.../v1internal`)."""
        return self.url + "/v1internal"

    @property
    def codex_base_url(self) -> str:
        """The Codex backend base (`.../backend-api`)."""
        return self.url + "/backend-api"

    def start(self) -> Simulator:
        """Serve in a background thread."""
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="sparc-sim", daemon=True)
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        """Serve in this thread (for `sparc-cloud sim serve`)."""
        self._server.serve_forever()

    def stop(self) -> None:
        """Stop serving and close the socket."""
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> Simulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def set_scenario(self, faults: list[Fault], tasks: list[TaskScript] | None = None) -> None:
        """Replace the fault scripts."""
        self.state.set_scenario(faults, tasks or [])

    def counters(self) -> dict[str, Any]:
        """The counters `/_sim/counters` serves."""
        return self.state.snapshot()

    def add_environment(self, name: str | None) -> None:
        """Know the Codex environment a project names (by id or label), so `init NAME` then a sim run works."""
        if name and name.strip():
            self.state.add_environment(name.strip())

    def write_credentials(self, home: Path) -> dict[str, Path]:
        """Write fake Gemini and Codex credential files the simulator accepts, under `home`.

        Refuses (ConfigError) to overwrite credential files it did not write itself (a real login), and says
        so plainly when `home` is not a writable folder."""
        g_path = home / ".gemini" / "oauth_creds.json"
        c_path = home / ".codex" / "auth.json"
        if home.exists() and not home.is_dir():
            raise ConfigError(f"{home} is a file, not a folder: give --write-creds a folder (it gets .gemini/ and "
                              ".codex/ inside).")
        for path in (g_path, c_path):
            if path.exists() and not _written_by_simulator(path):
                raise ConfigError(f"{path} already exists and is not a simulator credential file (a real login?); "
                                  "it is left untouched. Give --write-creds an empty folder, e.g. a new temporary "
                                  "one.")
        try:
            return self._write_credentials(g_path, c_path)
        except OSError as exc:
            raise ConfigError(f"Cannot write the simulator's credential files under {home}: "
                              f"{exc.strerror or exc}. Give --write-creds a folder you can write to.") from None

    def _write_credentials(self, g_path: Path, c_path: Path) -> dict[str, Path]:
        gemini = self.state.issue_gemini()
        atomic_write_text(g_path, json.dumps({
            "access_token": gemini["access_token"], "refresh_token": self.state.new_refresh_token("gemini"),
            "scope": gemini["scope"], "token_type": "Bearer", "id_token": self.state.google_id_token(),
            "expiry_date": int((time.time() + float(gemini["expires_in"])) * 1000),
        }, indent=2), mode=0o600)
        codex = self.state.issue_codex()
        atomic_write_text(c_path, json.dumps({
            "auth_mode": "chatgpt", "OPENAI_API_KEY": None,
            "tokens": {"id_token": codex["id_token"], "access_token": codex["access_token"],
                       "refresh_token": self.state.new_refresh_token("codex"), "account_id": SIM_ACCOUNT_ID},
            "last_refresh": time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime()),
        }, indent=2), mode=0o600)
        return {"gemini": g_path, "codex": c_path}

    def serve_lines(self, paths: dict[str, Path] | None) -> list[str]:
        """What `sparc-cloud sim serve` prints: the settings that aim each backend here, the credential files."""
        lines = [f"SPARC_GEMINI_BASE_URL={self.gemini_base_url}", f"SPARC_GEMINI_API_BASE_URL={self.url}",
                 f"SPARC_GEMINI_OAUTH_TOKEN_URL={self.url}/token", f"SPARC_CODEX_BASE_URL={self.codex_base_url}",
                 f"SPARC_CODEX_REFRESH_URL={self.url}/oauth/token",
                 f"OPENAI_BASE_URL={self.url}/v1 (any OpenAI-compatible client; OPENAI_API_KEY={chat.SIM_CHAT_KEY})",
                 f"counters: {self.url}/_sim/counters"]
        if paths:
            lines += [f"SPARC_GEMINI_CREDS={paths['gemini']}", f"SPARC_CODEX_AUTH={paths['codex']}",
                      f"SPARC_GEMINI_OAUTH_CLIENT_ID={SIM_OAUTH_CLIENT_ID} (the secret is in sparc_cloud.sim.state)"]
        return lines

    def client_settings(self, home: Path) -> dict[str, Any]:
        """Settings values that aim sparc-cloud's clients at this simulator, with fresh credential files
        written under `home` (merge them over a Settings' values)."""
        return client_settings(self.url, self.write_credentials(home))

    @staticmethod
    def oauth_client() -> tuple[str, str]:
        """The OAuth client id and secret the simulator's token endpoint accepts."""
        return SIM_OAUTH_CLIENT_ID, SIM_OAUTH_CLIENT_SECRET

    @staticmethod
    def api_key() -> str:
        """The Gemini API key the simulator accepts."""
        return SIM_API_KEY
