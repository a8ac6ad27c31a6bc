"""The simulator's Codex Cloud routes (`/backend-api/wham/...`, `/backend-api/codex/...`, `/api/codex/...`: tasks,
their details and list, environments, usage) and its token endpoint (`/oauth/token`), with their real envelopes,
plus the auth.json `sim serve --write-creds` writes."""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import re
import secrets as pysecrets
import select
import socket
import time
import urllib.parse
from pathlib import Path
from typing import Any

from sparc_cloud.fsutil import atomic_write_text
from sparc_cloud.sim import codex_envelopes as env
from sparc_cloud.sim.content import task_result
from sparc_cloud.sim.envelopes import BAD_GATEWAY_HTML
from sparc_cloud.sim.routing import FaultStyle, Reply, Route, SimHandler
from sparc_cloud.sim.state import SimState, SimTask, b64

NAME = "codex"
CREDENTIALS = Path(".codex") / "auth.json"  # under the folder `--write-creds` names
BASE_PATH = "/backend-api"  # the Codex backend base under the simulator's URL
_FINAL = ("completed", "failed", "cancelled")
_HANG_UP_WAIT_S = 60.0  # created-timeout: how long the server waits at most for the client to give up
_LEEWAY_S = 0.002
SIM_ACCOUNT_ID = "acct-sim-0000-4242"  # the ChatGPT account the simulator's tokens are for
REFRESH_PREFIX = "rt_sim_"  # the simulator's ChatGPT-style refresh tokens

def issue_tokens(state: SimState) -> dict[str, Any]:
    """Fresh ChatGPT-style tokens (JWT access token with `exp` and the account claim)."""
    life = state.config.codex_token_life_s * state.config.time_scale
    now = time.time()
    claims = {"exp": now + life, "iat": now,
              "https://api.openai.com/auth": {"chatgpt_account_id": SIM_ACCOUNT_ID, "chatgpt_plan_type": "pro"}}
    access = f"{b64({'alg': 'none', 'typ': 'JWT'})}.{b64(claims)}.{pysecrets.token_hex(8)}"
    id_token = f"{b64({'alg': 'none'})}.{b64({'email': 'sim@example.invalid', **claims})}.sig"
    state.remember_token(NAME, access)
    return {"access_token": access, "id_token": id_token}


def counters(state: SimState) -> dict[str, Any]:
    """What `/_sim/counters` shows of Codex's own (called under `state.lock`): the tasks created."""
    return {f"{NAME}_tasks_created": len(state.tasks)}


STYLE = FaultStyle(
    error=lambda code, model: env.codex_detail(f"HTTP {code}"),
    unauthorized=lambda: env.codex_detail("Unauthorized"),
    rate_limited=lambda model, delay, scale: (env.codex_usage_limit(delay, scale), env.codex_usage_headers(delay, scale)),
    daily_quota=lambda model: (env.codex_usage_limit(9 * 3600), env.codex_usage_headers(9 * 3600)),
    bad_json=lambda: env.codex_detail("Invalid JSON body"),
)


def _token(h: SimHandler) -> None:
    body = h.json_body(STYLE) or {}
    h.apply_fault("oauth.token", "codex", STYLE)
    if body.get("grant_type") != "refresh_token" or h.state.refresh_tokens.get(
            str(body.get("refresh_token"))) != NAME:
        raise Reply(401, {"error": {"code": "refresh_token_invalidated",
                                     "message": "Your refresh token has been invalidated."}})
    raise Reply(200, issue_tokens(h.state))


def _routes(h: SimHandler, method: str, path: str) -> None:
    why = h.state.check_token(NAME, h.headers.get("Authorization"), h.state.config.codex_token_life_s)
    account = h.headers.get("ChatGPT-Account-Id")
    if why or account != SIM_ACCOUNT_ID:
        with h.state.lock:
            h.state.counters.unauthorized += 1
        raise Reply(401, env.codex_detail("Unauthorized"))
    parts = [p for p in path.split("/") if p]
    if method == "POST" and parts == ["tasks"]:
        return _create_task(h)
    if method == "GET" and parts == ["tasks", "list"]:
        return _list_tasks(h)
    if method == "GET" and len(parts) == 2 and parts[0] == "tasks":
        return _task_details(h, urllib.parse.unquote(parts[1]))
    if method == "GET" and len(parts) == 5 and parts[0] == "tasks" and parts[4] == "sibling_turns":
        _find_task(h, urllib.parse.unquote(parts[1]))
        raise Reply(200, {"sibling_turns": []})
    if method == "GET" and parts[:1] == ["environments"]:
        h.apply_fault("codex.envs", "", STYLE)
        raise Reply(200, h.state.config.environments)
    if method == "GET" and parts == ["usage"]:
        raise Reply(200, {"plan_type": "pro", "rate_limit": {
            "allowed": True, "limit_reached": False,
            "primary_window": {"used_percent": 12, "limit_window_seconds": 18000, "reset_after_seconds": 9000,
                               "reset_at": int(time.time()) + 9000}, "secondary_window": None},
            "credits": None})
    raise Reply(404, env.codex_detail("Not Found"))


def _limit(h: SimHandler, key: str) -> None:
    if not h.state.config.enforce_limits:
        return
    wait = h.state.limiters.try_acquire(("codex", key, SIM_ACCOUNT_ID), leeway_s=_LEEWAY_S)
    if wait > 0:
        with h.state.lock:
            h.state.counters.rate_limited[f"codex:{key}"] += 1
            h.state.rate_limited_log.append((h.state.clock.now() - h.state.started, f"codex.{key}", wait))
        scale = h.state.config.time_scale
        raise Reply(429, env.codex_usage_limit(wait, scale), env.codex_usage_headers(wait, scale))


def _create_task(h: SimHandler) -> None:
    with h.state.lock:
        h.state.counters.requests["codex.create"] += 1
    body = h.json_body(STYLE)
    if not isinstance(body, dict) or not isinstance(body.get("new_task"), dict):
        raise Reply(400, env.codex_detail("Must specify one of: follow_up, new_task, review_fix"))
    env_id = body["new_task"].get("environment_id")
    if env_id not in {e.get("id") for e in h.state.config.environments}:
        raise Reply(404, env.codex_detail(f"Environment {env_id} not found"))
    items = body.get("input_items")
    prompt = "\n\n".join(
        str(part.get("text", "")) for item in items or [] if isinstance(item, dict) and item.get("type") == "message"
        for part in item.get("content") or [] if isinstance(part, dict)
    )
    if not prompt:
        raise Reply(400, env.codex_detail("input_items must contain a user message"))
    fault = h.state.next_fault("codex.create", "")
    if fault is not None and not fault.startswith("created-"):
        h.answer_fault(fault, "", STYLE)
    _limit(h, "create")
    task = h.state.add_task(NAME, str(env_id), prompt, task_id="task_e_" + pysecrets.token_hex(16),
                            latency_model="codex-task", result=task_result(prompt, h.state.config.seed))
    if fault == "created-502":
        raise Reply(502, BAD_GATEWAY_HTML)
    if fault == "created-reset":
        h.reset()
        raise Reply(-1, None)
    if fault == "created-timeout":
        _wait_for_hang_up(h)
        raise Reply(-1, None)
    raise Reply(200, {"task": {"id": task.id}})


def _wait_for_hang_up(h: SimHandler) -> None:
    """Answer nothing until the client gives up (its timeout closes the connection), then close."""
    deadline = time.monotonic() + _HANG_UP_WAIT_S
    with contextlib.suppress(OSError):
        while time.monotonic() < deadline:
            readable, _, _ = select.select([h.connection], [], [], 0.05)
            if readable and not h.connection.recv(1, socket.MSG_PEEK):
                break
    h.reset()


def _find_task(h: SimHandler, task_id: str) -> SimTask:
    task = h.state.tasks.get(task_id)
    if task is None:
        raise Reply(404, env.codex_detail(f"Task {task_id} not found"))
    return task


def _task_details(h: SimHandler, task_id: str) -> None:
    with h.state.lock:
        h.state.counters.requests["codex.poll"] += 1
    task = _find_task(h, task_id)
    h.apply_fault("codex.poll", "", STYLE)
    _limit(h, "poll")
    status = h.state.task_status(task)
    h.state.record_poll(task, status)
    raise Reply(200, _details_body(task, status, h.state))


def _list_tasks(h: SimHandler) -> None:
    """`GET /tasks/list?limit&task_filter&cursor&environment_id`: the environment's tasks, most recently
    updated first, in pages with an opaque cursor; under the same budget as the task polls."""
    with h.state.lock:
        h.state.counters.requests["codex.list"] += 1
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(h.path).query)
    try:
        limit = int(query.get("limit", ["20"])[0])
    except ValueError:
        raise Reply(400, env.codex_detail("limit must be an integer")) from None
    if not 1 <= limit <= 100:
        raise Reply(400, env.codex_detail("limit must be between 1 and 100"))
    offset = _decode_cursor(query.get("cursor", [""])[0])
    env_id = query.get("environment_id", [""])[0]
    h.apply_fault("codex.list", "", STYLE)
    _limit(h, "poll")
    with h.state.lock:
        tasks = [t for t in h.state.tasks.values() if not env_id or t.environment_id == env_id]
    rows = [(t, h.state.task_status(t)) for t in tasks]
    rows.sort(key=lambda r: (-r[0].updated_wall(r[1]), -r[0].index))
    page = rows[offset: offset + limit]
    h.state.record_listing(page)
    items = [
        {"id": t.id, "title": _title(t), "archived": False, "has_unread_turn": status in _FINAL,
         "has_generated_title": True, "created_at": t.created_wall, "updated_at": t.updated_wall(status),
         "task_status_display": _status_display(status, t, h.state)}
        for t, status in page
    ]
    more = offset + limit < len(rows)
    raise Reply(200, {"items": items, "cursor": _encode_cursor(offset + limit) if more else None})


def _encode_cursor(offset: int) -> str:
    return base64.urlsafe_b64encode(json.dumps({"o": offset}).encode()).decode().rstrip("=")


def _decode_cursor(cursor: str) -> int:
    if not cursor:
        return 0
    try:
        data = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        offset = int(data["o"])
    except (ValueError, KeyError, TypeError, binascii.Error):
        raise Reply(400, env.codex_detail("invalid cursor")) from None
    if offset < 0:
        raise Reply(400, env.codex_detail("invalid cursor"))
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


ROUTES = (
    Route("POST", re.compile(r"^/oauth/token$"), lambda h, m: _token(h)),
    Route(None, re.compile(r"^(?:/backend-api/wham|/backend-api/codex|/api/codex)(/.*)$"),
          lambda h, m: _routes(h, h.command, m.group(1))),
)


def written_by_simulator(data: dict[str, Any]) -> bool:
    """Whether an auth.json holds the simulator's fake tokens (so writing over it loses nothing)."""
    inner = data.get("tokens")
    tokens: dict[str, Any] = inner if isinstance(inner, dict) else data
    return str(tokens.get("refresh_token") or "").startswith(REFRESH_PREFIX) or tokens.get("account_id") == SIM_ACCOUNT_ID


def write_credentials(state: SimState, path: Path) -> None:
    """The auth.json the codex CLI writes, with tokens the simulator accepts."""
    issued = issue_tokens(state)
    atomic_write_text(path, json.dumps({
        "auth_mode": "chatgpt", "OPENAI_API_KEY": None,
        "tokens": {"id_token": issued["id_token"], "access_token": issued["access_token"],
                   "refresh_token": state.new_refresh_token(NAME, REFRESH_PREFIX), "account_id": SIM_ACCOUNT_ID},
        "last_refresh": time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime()),
    }, indent=2), mode=0o600)


def client_settings(url: str, creds: Path) -> dict[str, Any]:
    """Settings values that aim the Codex client at the simulator at `url`, with its credential file."""
    return {"codex_base_url": url + BASE_PATH, "codex_auth": creds, "codex_refresh": True,
            "codex_refresh_url": url + "/oauth/token", "codex_path_style": "auto"}


def serve_lines(url: str, creds: Path | None) -> list[str]:
    """What `sim serve` prints for Codex: the settings that aim a client here, the credential file."""
    lines = [f"SPARC_CODEX_BASE_URL={url}{BASE_PATH}", f"SPARC_CODEX_REFRESH_URL={url}/oauth/token"]
    return lines + ([f"SPARC_CODEX_AUTH={creds}"] if creds is not None else [])
