"""Codex Cloud tasks, spoken as the official `codex` client does (shared/api/codex.md).

Default base `https://chatgpt.com/backend-api` with `/wham/...` paths. Path styles: `auto` (the
official rule: a base containing `/backend-api` uses `/wham/`, any other `/api/codex/`), `wham`,
`api-codex`, and `runbook` (`{base}/codex/...`, the path the original runbook used)."""

from __future__ import annotations

import os
import platform
import random
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any
from urllib.parse import quote

import requests

from sparc_cloud import __version__
from sparc_cloud.clients.auth import CodexAuth
from sparc_cloud.clients.polling import PollPolicy, PollScheduler
from sparc_cloud.errors import (
    AuthError,
    ConfigError,
    MalformedResponse,
    TaskFailed,
    TaskTimeout,
    Unauthorized,
)
from sparc_cloud.http.clock import Clock
from sparc_cloud.http.ratelimit import RateLimiters
from sparc_cloud.http.retry import RetryNotice, RetryPolicy, call_with_retry
from sparc_cloud.http.transport import exchange
from sparc_cloud.redact import SecretRegistry


class TaskStatus(StrEnum):
    """A Codex task's turn status, one enum for both sources (turn_status and task_status_display)."""

    PENDING = "pending"
    IN_PROGRESS = "in_progress"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        """Whether polling can stop."""
        return self in (TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.CANCELLED)


_TURN_STATUS = {s.value: s for s in TaskStatus}
_STATE_STATUS = {
    "pending": TaskStatus.PENDING, "ready": TaskStatus.COMPLETED, "applied": TaskStatus.COMPLETED,
    "error": TaskStatus.FAILED,
}


@dataclass(frozen=True)
class Environment:
    """A Codex Cloud environment."""

    id: str
    label: str | None = None
    is_pinned: bool = False
    task_count: int = 0


@dataclass
class TaskDetails:
    """What a task-details answer says, extracted per shared/api/codex.md section 3.2."""

    task_id: str
    status: TaskStatus
    title: str = ""
    text: str = ""
    diff: str | None = None
    worklog: list[str] = field(default_factory=list)
    error: str | None = None
    turn_id: str | None = None
    updated_at: float | None = None  # epoch seconds, when the server last changed the task


def _turn_status(turn: Any) -> TaskStatus | None:
    if isinstance(turn, dict) and isinstance(turn.get("turn_status"), str):
        return _TURN_STATUS.get(turn["turn_status"], TaskStatus.PENDING)
    return None


def map_status(body: dict[str, Any]) -> TaskStatus:
    """`current_assistant_turn.turn_status`, else `task_status_display` (top level, else under `task`)."""
    status = _turn_status(body.get("current_assistant_turn"))
    if status is not None:
        return status
    task = body.get("task") if isinstance(body.get("task"), dict) else {}
    display = body.get("task_status_display") or (task or {}).get("task_status_display")
    if isinstance(display, dict):
        latest = display.get("latest_turn_status_display")
        if isinstance(latest, dict) and isinstance(latest.get("turn_status"), str):
            return _TURN_STATUS.get(latest["turn_status"], TaskStatus.PENDING)
        if isinstance(display.get("state"), str):
            return _STATE_STATUS.get(display["state"], TaskStatus.PENDING)
    return TaskStatus.PENDING


def _content_texts(content: Any) -> list[str]:
    texts: list[str] = []
    for part in content if isinstance(content, list) else []:
        if isinstance(part, str) and part:
            texts.append(part)
        elif isinstance(part, dict) and part.get("content_type") == "text" and part.get("text"):
            texts.append(str(part["text"]))
    return texts


def turn_diff(turn: Any) -> str | None:
    """First `output_diff.diff` or `pr.output_diff.diff` of a turn's output items."""
    if not isinstance(turn, dict):
        return None
    for item in turn.get("output_items") or []:
        if not isinstance(item, dict):
            continue
        if item.get("type") == "output_diff" and item.get("diff"):
            return str(item["diff"])
        if item.get("type") == "pr":
            inner = item.get("output_diff")
            if isinstance(inner, dict) and inner.get("diff"):
                return str(inner["diff"])
    return None


def turn_messages(turn: Any) -> list[str]:
    """Texts of a turn's `message` output items."""
    if not isinstance(turn, dict):
        return []
    texts: list[str] = []
    for item in turn.get("output_items") or []:
        if isinstance(item, dict) and item.get("type") == "message":
            texts.extend(_content_texts(item.get("content")))
    return texts


def worklog_messages(turn: Any) -> list[str]:
    """Assistant messages of a turn's worklog."""
    if not isinstance(turn, dict) or not isinstance(turn.get("worklog"), dict):
        return []
    texts: list[str] = []
    for msg in turn["worklog"].get("messages") or []:
        if not isinstance(msg, dict):
            continue
        author = msg.get("author") if isinstance(msg.get("author"), dict) else {}
        if (author or {}).get("role") != "assistant":
            continue
        content = msg.get("content") if isinstance(msg.get("content"), dict) else {}
        texts.extend(_content_texts((content or {}).get("parts")))
    return texts


def turn_error(turn: Any) -> str | None:
    """`error` as `"code: message"`, or whichever part is non-empty."""
    if not isinstance(turn, dict) or not isinstance(turn.get("error"), dict):
        return None
    code, message = turn["error"].get("code") or "", turn["error"].get("message") or ""
    if code and message:
        return f"{code}: {message}"
    return str(code or message) or None


def _epoch(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) else None


def parse_details(body: dict[str, Any], task_id: str) -> TaskDetails:
    """Status, text, diff, worklog and error of a task-details answer."""
    diff_turn, assistant = body.get("current_diff_task_turn"), body.get("current_assistant_turn")
    task = body.get("task") if isinstance(body.get("task"), dict) else {}
    text_parts = turn_messages(diff_turn) + turn_messages(assistant)
    worklog = worklog_messages(diff_turn) + worklog_messages(assistant)
    return TaskDetails(
        task_id=str((task or {}).get("id") or task_id),
        status=map_status(body),
        title=str((task or {}).get("title") or ""),
        text="\n\n".join(text_parts),
        diff=turn_diff(diff_turn) or turn_diff(assistant),
        worklog=worklog,
        error=turn_error(assistant),
        turn_id=str(assistant["id"]) if isinstance(assistant, dict) and assistant.get("id") else None,
        updated_at=_epoch((task or {}).get("updated_at")),
    )


class CodexClient:
    """Create Codex Cloud tasks, poll them under one shared budget, and read their results."""

    def __init__(
        self,
        *,
        base_url: str,
        auth: CodexAuth,
        session: requests.Session,
        limiters: RateLimiters,
        policy: RetryPolicy,
        clock: Clock,
        secrets: SecretRegistry,
        path_style: str = "auto",
        poll: PollPolicy | None = None,
        timeout_s: float = 60.0,
    ) -> None:
        self.base_url = self.normalize_base(base_url)
        self.prefix = self._prefix(self.base_url, path_style)
        self.auth = auth
        self.session = session
        self.limiters = limiters
        self.policy = policy
        self._jitter = random.Random()  # noqa: S311 - retry jitter, not crypto
        self.clock = clock
        self.secrets = secrets
        self.poll = poll or PollPolicy()
        self.timeout_s = timeout_s
        self._env_cache: list[Environment] | None = None
        self._env_lock = threading.Lock()
        self._poller: PollScheduler | None = None

    def __repr__(self) -> str:
        return f"CodexClient(prefix={self.prefix!r})"

    @staticmethod
    def normalize_base(base: str) -> str:
        """Strip the trailing `/`; add `/backend-api` to a bare chatgpt.com / chat.openai.com base."""
        base = base.rstrip("/")
        if base.startswith(("https://chatgpt.com", "https://chat.openai.com")) and "/backend-api" not in base:
            base += "/backend-api"
        return base

    @staticmethod
    def _prefix(base: str, style: str) -> str:
        if style == "auto":
            style = "wham" if "/backend-api" in base else "api-codex"
        prefixes = {"wham": "/wham", "api-codex": "/api/codex", "runbook": "/codex"}
        if style not in prefixes:
            raise ConfigError(f"Unknown Codex path style {style!r}: use auto, wham, api-codex or runbook.")
        return base + prefixes[style]

    def _user_agent(self) -> str:
        term = os.environ.get("TERM_PROGRAM") or os.environ.get("TERM") or "unknown"
        return (f"sparc_cloud/{__version__} ({platform.system()} {platform.release()}; {platform.machine()}) "
                f"{term} (sparc_cloud_tasks)")

    def _headers(self, token: str, with_body: bool) -> dict[str, str]:
        headers = {"Authorization": f"Bearer {token}", "User-Agent": self._user_agent()}
        account = self.auth.account_id()
        if account:
            headers["ChatGPT-Account-Id"] = account
        if with_body:
            headers["Content-Type"] = "application/json"
        return headers

    def _request(
        self,
        method: str,
        path: str,
        *,
        key: tuple[str, str, str],
        endpoint: str,
        json_body: Any = None,
        params: dict[str, str] | None = None,
        on_retry: Callable[[RetryNotice], None] | None = None,
        slot_taken: bool = False,
        on_wait: Callable[[float, str], None] | None = None,
    ) -> tuple[Any, int]:
        """One call under the retry policy; each attempt takes a limiter slot (the first one may have been
        taken by the caller already: `slot_taken`)."""
        url = self.prefix + path
        first = [slot_taken]

        def send(token: str) -> Any:
            return exchange(
                self.session, method, url, endpoint=endpoint, secrets=self.secrets, now_wall=self.clock.wall(),
                timeout_s=self.timeout_s, headers=self._headers(token, json_body is not None),
                json_body=json_body, params=params,
            )

        def attempt() -> Any:
            if first[0]:
                first[0] = False
            else:
                self.limiters.acquire(key, on_wait)
            token = self.auth.token()
            try:
                return send(token)
            except Unauthorized as exc:
                fresh = self.auth.after_unauthorized(token)
                try:
                    return send(fresh)
                except Unauthorized:
                    raise AuthError(f"{exc}. The Codex token was rejected after reloading it: run `codex login`."
                                    ) from None

        return call_with_retry(
            attempt, policy=self.policy, clock=self.clock, endpoint=endpoint, on_retry=on_retry, rng=self._jitter,
            on_rate_limited=lambda s: self.limiters.pause(key, s),
        )

    def _poll_key(self) -> tuple[str, str, str]:
        return ("codex", "poll", self.auth.account_id() or "*")

    # ----------------------------------------------------------------- tasks

    def create_task(
        self,
        prompt: str,
        *,
        environment_id: str,
        branch: str | None = None,
        best_of_n: int = 1,
        starting_diff: str | None = None,
        on_retry: Callable[[RetryNotice], None] | None = None,
        on_wait: Callable[[float, str], None] | None = None,
    ) -> str:
        """POST /tasks; return the new task id."""
        new_task: dict[str, Any] = {"environment_id": environment_id}
        if branch:
            new_task["branch"] = branch
        new_task["run_environment_in_qa_mode"] = False
        items: list[dict[str, Any]] = [
            {"type": "message", "role": "user", "content": [{"content_type": "text", "text": prompt}]}
        ]
        if starting_diff:
            items.append({"type": "pre_apply_patch", "output_diff": {"diff": starting_diff}})
        body: dict[str, Any] = {"new_task": new_task, "input_items": items}
        if best_of_n > 1:
            body["metadata"] = {"best_of_n": best_of_n}
        data, _ = self._request("POST", "/tasks", key=("codex", "create", "*"), endpoint="codex create task",
                                json_body=body, on_retry=on_retry, on_wait=on_wait)
        task = data.get("task") if isinstance(data, dict) else None
        task_id = (task or {}).get("id") if isinstance(task, dict) else None
        task_id = task_id or (data.get("id") if isinstance(data, dict) else None)
        if not task_id:
            raise MalformedResponse(f"POST {self.prefix}/tasks succeeded but no task id found",
                                    endpoint="codex create task")
        return str(task_id)

    def task_details(self, task_id: str, *, on_retry: Callable[[RetryNotice], None] | None = None,
                     slot_taken: bool = False) -> TaskDetails:
        """GET /tasks/{id} (one poll, counted against the shared poll budget)."""
        data, _ = self._request("GET", f"/tasks/{quote(task_id, safe='')}", key=self._poll_key(),
                                endpoint=f"codex task {task_id}", on_retry=on_retry, slot_taken=slot_taken)
        if not isinstance(data, dict):
            raise MalformedResponse(f"codex task {task_id}: the answer is not a JSON object")
        return parse_details(data, task_id)

    def poller(self) -> PollScheduler:
        """The account's poll scheduler (one per client, created on first use)."""
        with self._env_lock:
            if self._poller is None:
                self._poller = PollScheduler(
                    lambda task_id: self.task_details(task_id, slot_taken=True),
                    lambda details: isinstance(details, TaskDetails) and details.status.finished,
                    limiters=self.limiters, key=self._poll_key(), clock=self.clock, policy=self.poll,
                )
            return self._poller

    def wait(
        self,
        task_id: str,
        *,
        timeout_s: float,
        on_poll: Callable[[TaskDetails], None] | None = None,
    ) -> tuple[TaskDetails, int]:
        """Wait for the task through the shared poller; return its details and how often it was polled.

        Raises TaskFailed (failed/cancelled, with the server's message) or TaskTimeout (with the task id
        and the last status seen)."""
        last = [TaskStatus.PENDING]

        def seen(details: object) -> None:
            assert isinstance(details, TaskDetails)
            last[0] = details.status
            if on_poll:
                on_poll(details)

        result, polls, error = self.poller().wait(task_id, timeout_s=timeout_s, on_poll=seen)
        if error is not None:
            raise error
        if result is None:
            raise TaskTimeout(
                f"Codex task {task_id} did not finish within {timeout_s:.0f} s (last status: {last[0].value}). "
                f"It may still finish: open https://chatgpt.com/codex/tasks/{task_id}, or raise "
                "SPARC_AGENT_TIMEOUT_S.",
                task_id=task_id, last_status=last[0].value,
            )
        assert isinstance(result, TaskDetails)
        if result.status != TaskStatus.COMPLETED:
            reason = result.error or "no error message"
            raise TaskFailed(f"Codex task {task_id} ended {result.status.value}: Task failed: {reason}",
                             task_id=task_id, status=result.status.value)
        return result, polls

    def list_tasks(
        self, *, limit: int | None = None, cursor: str | None = None, environment_id: str | None = None,
        task_filter: str = "current",
    ) -> dict[str, Any]:
        """GET /tasks/list: `{"items": [...], "cursor": ...}`."""
        params: dict[str, str] = {}
        if limit is not None:
            params["limit"] = str(limit)
        params["task_filter"] = task_filter
        if cursor:
            params["cursor"] = cursor
        if environment_id:
            params["environment_id"] = environment_id
        data, _ = self._request("GET", "/tasks/list", key=("codex", "list", "*"), endpoint="codex list tasks",
                                params=params)
        if not isinstance(data, dict):
            raise MalformedResponse("codex list tasks: the answer is not a JSON object")
        return data

    def sibling_turns(self, task_id: str, turn_id: str) -> list[dict[str, Any]]:
        """GET /tasks/{id}/turns/{turn}/sibling_turns (best-of-N attempts)."""
        path = f"/tasks/{quote(task_id, safe='')}/turns/{quote(turn_id, safe='')}/sibling_turns"
        data, _ = self._request("GET", path, key=("codex", "list", "*"), endpoint="codex sibling turns")
        turns = data.get("sibling_turns") if isinstance(data, dict) else None
        return [t for t in turns or [] if isinstance(t, dict)]

    def usage(self) -> dict[str, Any]:
        """GET /usage: plan and rate-limit windows."""
        data, _ = self._request("GET", "/usage", key=("codex", "list", "*"), endpoint="codex usage")
        return data if isinstance(data, dict) else {}

    # ----------------------------------------------------------- environments

    def environments(self, *, refresh: bool = False) -> list[Environment]:
        """GET /environments (cached per client)."""
        with self._env_lock:
            if self._env_cache is None or refresh:
                data, _ = self._request("GET", "/environments", key=("codex", "list", "*"),
                                        endpoint="codex environments")
                if not isinstance(data, list):
                    raise MalformedResponse("codex environments: the answer is not a JSON array")
                self._env_cache = [
                    Environment(id=str(e["id"]), label=e.get("label"), is_pinned=bool(e.get("is_pinned")),
                                task_count=int(e.get("task_count") or 0))
                    for e in data if isinstance(e, dict) and e.get("id")
                ]
            return list(self._env_cache)

    def resolve_environment(self, id_or_label: str) -> Environment:
        """An environment by exact id, else by label (case-insensitive)."""
        envs = self.environments()
        for env in envs:
            if env.id == id_or_label:
                return env
        matches = [e for e in envs if (e.label or "").lower() == id_or_label.lower()]
        if len(matches) == 1:
            return matches[0]
        names = ", ".join(f"{e.label or '?'} ({e.id})" for e in envs) or "none"
        if matches:
            raise ConfigError(f"Codex environment label {id_or_label!r} matches {len(matches)} environments; "
                              f"give its id instead. Environments: {names}.")
        raise ConfigError(f"No Codex environment has the id or name {id_or_label!r}. Your environments: {names}. "
                          "Create one at https://chatgpt.com/codex/settings/environments or fix "
                          "--codex-env / SPARC_CODEX_ENVIRONMENT.")
