"""Codex Cloud tasks, spoken as the official `codex` client does (openai/codex backend-client and cloud-tasks-client).

Default base `https://chatgpt.com/backend-api` with `/wham/...` paths. Path styles: `auto` (the
official rule: a base containing `/backend-api` uses `/wham/`, any other `/api/codex/`), `wham`,
`api-codex`, and `runbook` (`{base}/codex/...`, the path the original runbook used).

Creating a task is made safe to retry: a create whose outcome is unknown (timeout, reset after the
request went out, 5xx, an unreadable 2xx) is not sent again blindly; the task list is searched first for
the task it may have created (by its marker, or its exact prompt), confirmed with the task's own user turn.
Tasks in flight are polled through one list request for all of them (`clients/codex_polling.py`)."""

from __future__ import annotations

import math
import random
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any
from urllib.parse import quote

import requests

from sparc_cloud import defaults
from sparc_cloud.clients import codex_errors, codex_settings
from sparc_cloud.clients.codex_auth import CodexAuth, codex_user_agent
from sparc_cloud.clients.codex_gitref import resolve_branch
from sparc_cloud.clients.codex_polling import ListPage, PollPolicy, PollScheduler, Sighting
from sparc_cloud.clients.factory import ClientContext
from sparc_cloud.errors import (
    AuthError,
    Cancelled,
    ConfigError,
    MalformedResponse,
    ModelNotFound,
    TaskFailed,
    TaskGone,
    TaskPollFailed,
    TaskTimeout,
    TransientError,
    Unauthorized,
    Unreachable,
)
from sparc_cloud.http.clock import Clock
from sparc_cloud.http.ratelimit import Key, RateLimit, RateLimiters
from sparc_cloud.http.retry import RetryNotice, RetryPolicy, call_with_retry
from sparc_cloud.http.transport import exchange
from sparc_cloud.redact import SecretRegistry

TASK_URL = "https://chatgpt.com/codex/tasks/{task_id}"
MARKER_LINE = "[sparc-cloud {marker}]"  # first line of a marked task's prompt: how a lost create is found again
CREATED_SLACK_S = 300.0  # a lost create's task is looked for among tasks created up to this long before it


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
    """What a task-details answer says, extracted as backend-client `types.rs` does."""

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
    if not isinstance(turn, dict):
        return None
    if isinstance(turn.get("turn_status"), str):
        return _TURN_STATUS.get(turn["turn_status"], TaskStatus.PENDING)
    if turn_error(turn):  # an `error` and no `turn_status` is a failed task (the task_details_with_error fixture)
        return TaskStatus.FAILED
    return None


def display_status(display: Any) -> TaskStatus | None:
    """A `task_status_display`'s status: `latest_turn_status_display.turn_status`, else `state` (http.rs `map_status`)."""
    if isinstance(display, dict):
        latest = display.get("latest_turn_status_display")
        if isinstance(latest, dict) and isinstance(latest.get("turn_status"), str):
            return _TURN_STATUS.get(latest["turn_status"], TaskStatus.PENDING)
        if isinstance(display.get("state"), str):
            return _STATE_STATUS.get(display["state"], TaskStatus.PENDING)
    return None


def map_status(body: dict[str, Any]) -> TaskStatus:
    """`current_assistant_turn.turn_status` (an error without one is FAILED), else `task_status_display`
    (top level, else under `task`), else PENDING."""
    status = _turn_status(body.get("current_assistant_turn"))
    if status is not None:
        return status
    task = body.get("task") if isinstance(body.get("task"), dict) else {}
    display = body.get("task_status_display") or (task or {}).get("task_status_display")
    return display_status(display) or TaskStatus.PENDING


def list_sighting(item: Any) -> Sighting | None:
    """What a task-list item says about its task (None when the item has no id)."""
    if not isinstance(item, dict) or not item.get("id"):
        return None
    status = display_status(item.get("task_status_display"))
    updated = item.get("updated_at")
    return Sighting(task_id=str(item["id"]), final=None if status is None else status.finished,
                    updated_at=float(updated) if isinstance(updated, int | float) else None,
                    status=None if status is None else status.value)


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
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def user_text(body: dict[str, Any]) -> str:
    """The prompt: user-role `message` texts of `current_user_turn.input_items`, joined with a blank line."""
    turn = body.get("current_user_turn")
    texts: list[str] = []
    for item in (turn.get("input_items") or []) if isinstance(turn, dict) else []:
        if isinstance(item, dict) and item.get("type") == "message" and item.get("role", "user") == "user":
            texts.extend(_content_texts(item.get("content")))
    return "\n\n".join(texts)


def parse_details(body: dict[str, Any], task_id: str) -> TaskDetails:
    """Status, text, diff, worklog and error of a task-details answer.

    The text is the turn's output messages, else the worklog's assistant messages (http.rs `messages()` / `task_text()`)."""
    diff_turn, assistant = body.get("current_diff_task_turn"), body.get("current_assistant_turn")
    task = body.get("task") if isinstance(body.get("task"), dict) else {}
    worklog = worklog_messages(diff_turn) + worklog_messages(assistant)
    text_parts = turn_messages(diff_turn) + turn_messages(assistant) or worklog
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
        timeout_s: float = defaults.HTTP_TIMEOUT_S,
        base_setting: str = "SPARC_CODEX_BASE_URL",
        list_polling: bool = True,
        on_retry: Callable[[RetryNotice], None] | None = None,
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
        self.base_setting = base_setting
        self.list_polling = list_polling
        self.on_retry = on_retry  # hears of retries of calls made without their own listener
        self._env_cache: list[Environment] | None = None
        self._env_lock = threading.Lock()
        self._poller: PollScheduler | None = None
        self._task_env: dict[str, str] = {}  # task id -> environment id, to filter the list by environment

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
        # The official client's User-Agent shape (login `default_client.rs`), with our own surface as its suffix.
        return f"{codex_user_agent()} (sparc_cloud_tasks)"

    def _headers(self, token: str, with_body: bool) -> dict[str, str]:
        headers = {"Authorization": f"Bearer {token}", "User-Agent": self._user_agent()}
        account = self.auth.account_id()
        if account:
            headers["ChatGPT-Account-Id"] = account
        if with_body:
            headers["Content-Type"] = "application/json"
        return headers

    def _send(self, method: str, path: str, *, endpoint: str, json_body: Any = None,
              params: dict[str, str] | None = None) -> Any:
        """One request with the current token; a 401 re-reads (or refreshes) the token and sends once more."""
        url = self.prefix + path

        def send(token: str) -> Any:
            return exchange(
                self.session, method, url, endpoint=endpoint, secrets=self.secrets, now_wall=self.clock.wall(),
                timeout_s=self.timeout_s, headers=self._headers(token, json_body is not None),
                json_body=json_body, params=params, origin=self.base_setting, rules=codex_errors.classify,
            )

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
        first = [slot_taken]

        def attempt() -> Any:
            if first[0]:
                first[0] = False
            else:
                self.limiters.acquire(key, on_wait)
            return self._send(method, path, endpoint=endpoint, json_body=json_body, params=params)

        return call_with_retry(
            attempt, policy=self.policy, clock=self.clock, endpoint=endpoint, on_retry=on_retry or self.on_retry,
            rng=self._jitter, on_rate_limited=lambda s: self.limiters.pause(key, s),
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
        marker: str | None = None,
        on_retry: Callable[[RetryNotice], None] | None = None,
        on_wait: Callable[[float, str], None] | None = None,
    ) -> str:
        """POST /tasks; return the new task id.

        `new_task.branch` is always sent (cloud-tasks-client `Tasks::create`): `branch`, else the checkout's current or
        default branch, else `main`. With a `marker`, the prompt's first line is `[sparc-cloud <marker>]`, so
        the task can be found again. A create whose outcome is unknown (timeout, reset, 5xx, unreadable
        answer) is not sent again before the task list has been searched for the task it may have made (by
        the marker, else by the exact prompt); a refusal (429, 4xx, connection refused) is known to have
        created nothing."""
        text = f"{MARKER_LINE.format(marker=marker)}\n{prompt}" if marker else prompt
        new_task: dict[str, Any] = {"environment_id": environment_id,
                                    "branch": branch or resolve_branch(None).branch,
                                    "run_environment_in_qa_mode": False}
        items: list[dict[str, Any]] = [
            {"type": "message", "role": "user", "content": [{"content_type": "text", "text": text}]}
        ]
        if starting_diff:
            items.append({"type": "pre_apply_patch", "output_diff": {"diff": starting_diff}})
        body: dict[str, Any] = {"new_task": new_task, "input_items": items}
        if best_of_n > 1:
            body["metadata"] = {"best_of_n": best_of_n}
        key, endpoint = ("codex", "create", "*"), "codex create task"
        since = self.clock.wall()
        unknown = [False]  # an earlier attempt may have created the task

        def attempt() -> str:
            if unknown[0]:
                found = self._find_created(text, marker, environment_id, since - CREATED_SLACK_S)
                if found:
                    return found
            self.limiters.acquire(key, on_wait)
            try:
                data = self._send("POST", "/tasks", endpoint=endpoint, json_body=body)
            except Unreachable:
                raise  # nothing was sent
            except (TransientError, MalformedResponse):
                unknown[0] = True  # sent, and perhaps acted on: look before sending again
                raise
            return self._task_id_of(data)

        task_id, _ = call_with_retry(
            attempt, policy=self.policy, clock=self.clock, endpoint=endpoint, on_retry=on_retry or self.on_retry,
            rng=self._jitter, on_rate_limited=lambda s: self.limiters.pause(key, s),
        )
        self._task_env[task_id] = environment_id
        return task_id

    def _task_id_of(self, data: Any) -> str:
        task = data.get("task") if isinstance(data, dict) else None
        task_id = (task or {}).get("id") if isinstance(task, dict) else None
        task_id = task_id or (data.get("id") if isinstance(data, dict) else None)
        if not task_id:
            raise MalformedResponse(f"POST {self.prefix}/tasks succeeded but no task id found",
                                    endpoint="codex create task")
        return str(task_id)

    def _find_created(self, text: str, marker: str | None, environment_id: str, since: float) -> str | None:
        """The task an earlier, unanswered create made: among the environment's tasks created since `since`
        (one list page, a second one if the first is all newer), the one whose user turn carries the
        marker (or the exact prompt). None when there is none; an error when the list cannot be read."""
        cursor: str | None = None
        for page_no in range(2):
            page = self._list_once(environment_id=environment_id, cursor=cursor)
            items = [i for i in page.get("items") or [] if isinstance(i, dict) and i.get("id")]
            fresh = [i for i in items if (_epoch(i.get("created_at")) or math.inf) >= since
                     and str(i["id"]) not in self._task_env]  # tasks this client created and knows are not it
            fresh.sort(key=lambda i: -(_epoch(i.get("created_at")) or math.inf))
            for item in fresh:
                details = self._details_once(str(item["id"]))
                sent = user_text(details)
                if (marker and MARKER_LINE.format(marker=marker) in sent) or (not marker and sent == text):
                    return str(item["id"])
            cursor = page.get("cursor") if isinstance(page.get("cursor"), str) else None
            if not cursor or len(fresh) < len(items) or page_no:
                return None
        return None

    def find_created(self, marker: str, environment_id: str, *, since: float,
                     on_retry: Callable[[RetryNotice], None] | None = None) -> str | None:
        """The task a create marked `marker` made, when that create's answer never arrived (the process that
        sent it was killed): searched as a lost create is, among the environment's tasks created since `since`
        (epoch seconds) minus a margin for clock skew. None when the create never reached the server."""
        found, _ = call_with_retry(
            lambda: self._find_created("", marker, environment_id, since - CREATED_SLACK_S), policy=self.policy,
            clock=self.clock, endpoint="codex list tasks", on_retry=on_retry or self.on_retry, rng=self._jitter,
            on_rate_limited=lambda s: self.limiters.pause(self._poll_key(), s),
        )
        if found:
            self._task_env[found] = environment_id
        return found

    def _list_once(self, *, environment_id: str | None, cursor: str | None = None) -> dict[str, Any]:
        self.limiters.acquire(self._poll_key())
        data = self._send("GET", "/tasks/list", endpoint="codex list tasks",
                          params=self._list_params(codex_settings.LIST_PAGE, cursor, environment_id))
        if not isinstance(data, dict):
            raise MalformedResponse("codex list tasks: the answer is not a JSON object", endpoint="codex list tasks")
        return data

    def _details_once(self, task_id: str) -> dict[str, Any]:
        self.limiters.acquire(self._poll_key())
        data = self._send("GET", f"/tasks/{quote(task_id, safe='')}", endpoint=f"codex task {task_id}")
        if not isinstance(data, dict):
            raise MalformedResponse(f"codex task {task_id}: the answer is not a JSON object")
        return data

    def task_details(self, task_id: str, *, on_retry: Callable[[RetryNotice], None] | None = None,
                     slot_taken: bool = False) -> TaskDetails:
        """GET /tasks/{id} (one poll, counted against the shared poll budget). A 404 is TaskGone."""
        endpoint = f"codex task {task_id}"
        try:
            data, _ = self._request("GET", f"/tasks/{quote(task_id, safe='')}", key=self._poll_key(),
                                    endpoint=endpoint, on_retry=on_retry, slot_taken=slot_taken)
        except ModelNotFound as exc:
            raise TaskGone(f"{exc}: Codex does not know task {task_id} (deleted, or another account's).",
                           task_id=task_id, endpoint=endpoint) from None
        if not isinstance(data, dict):
            raise MalformedResponse(f"codex task {task_id}: the answer is not a JSON object", endpoint=endpoint)
        return parse_details(data, task_id)

    def _list_page(self, cursor: str | None, task_ids: frozenset[str]) -> ListPage:
        """One page of the task list for the poller, filtered by environment when the watched tasks share one."""
        envs = {self._task_env.get(t) for t in task_ids}
        env = next(iter(envs)) if len(envs) == 1 else None
        data = self.list_tasks(limit=codex_settings.LIST_PAGE, cursor=cursor, environment_id=env, slot_taken=True)
        items = [s for s in (list_sighting(i) for i in data.get("items") or []) if s is not None]
        nxt = data.get("cursor")
        return ListPage(items=items, cursor=str(nxt) if isinstance(nxt, str) and nxt else None)

    def poller(self) -> PollScheduler:
        """The account's poll scheduler (one per client, created on first use)."""
        with self._env_lock:
            if self._poller is None:
                self._poller = PollScheduler(
                    lambda task_id: self.task_details(task_id, slot_taken=True),
                    lambda details: isinstance(details, TaskDetails) and details.status.finished,
                    limiters=self.limiters, key=self._poll_key(), clock=self.clock, policy=self.poll,
                    list_page=self._list_page if self.list_polling else None,
                    status_of=lambda details: details.status.value if isinstance(details, TaskDetails) else "pending",
                )
            return self._poller

    def wait(
        self,
        task_id: str,
        *,
        timeout_s: float,
        on_poll: Callable[[TaskDetails], None] | None = None,
        environment_id: str | None = None,
    ) -> tuple[TaskDetails, int]:
        """Wait for the task through the shared poller; return its details and how often it was polled.

        `on_poll` hears of each details answer and of each new status a list sweep shows (details with the
        status only).

        Works for any task id (one created here, or one found in a journal: pending, running or already
        finished); `environment_id` lets the list sweep filter by it. Raises TaskFailed (failed/cancelled,
        with the server's message), TaskGone (404), TaskPollFailed (polling failed for good, or kept failing
        until the timeout) or TaskTimeout (with the last status seen); each carries the task id."""
        if environment_id:
            self._task_env[task_id] = environment_id

        def seen(details: object) -> None:
            if isinstance(details, Sighting):  # a sweep showed a new status: no text yet, only the status
                details = TaskDetails(task_id=details.task_id, status=_TURN_STATUS.get(details.status or "",
                                                                                       TaskStatus.PENDING))
            assert isinstance(details, TaskDetails)
            if on_poll:
                on_poll(details)

        outcome = self.poller().wait(task_id, timeout_s=timeout_s, on_poll=seen)
        last_status = outcome.last_status or TaskStatus.PENDING.value
        link = TASK_URL.format(task_id=task_id)
        if outcome.error is not None:
            if isinstance(outcome.error, TaskGone | Cancelled):
                raise outcome.error
            raise TaskPollFailed(f"Polling Codex task {task_id} failed: {outcome.error}. The task may still run: "
                                 f"open {link}.", task_id=task_id)
        if outcome.result is None:
            if outcome.last_error is not None:
                raise TaskPollFailed(
                    f"Polling Codex task {task_id} kept failing until the agent timeout ({timeout_s:.0f} s); last "
                    f"error: {outcome.last_error}. The task may still finish: open {link}.", task_id=task_id)
            raise TaskTimeout(
                f"Codex task {task_id} did not finish within {timeout_s:.0f} s (last status: {last_status}). "
                f"It may still finish: open {link}, or raise SPARC_AGENT_TIMEOUT_S.",
                task_id=task_id, last_status=last_status,
            )
        result = outcome.result
        assert isinstance(result, TaskDetails)
        if result.status != TaskStatus.COMPLETED:
            reason = result.error or "no error message"
            raise TaskFailed(f"Codex task {task_id} ended {result.status.value}: Task failed: {reason}",
                             task_id=task_id, status=result.status.value)
        return result, outcome.polls

    @staticmethod
    def _list_params(limit: int | None, cursor: str | None, environment_id: str | None,
                     task_filter: str = "current") -> dict[str, str]:
        # The official client's order: limit, task_filter, cursor, environment_id (backend-client `list_tasks`).
        params: dict[str, str] = {}
        if limit is not None:
            params["limit"] = str(limit)
        params["task_filter"] = task_filter
        if cursor:
            params["cursor"] = cursor
        if environment_id:
            params["environment_id"] = environment_id
        return params

    def list_tasks(
        self, *, limit: int | None = None, cursor: str | None = None, environment_id: str | None = None,
        task_filter: str = "current", slot_taken: bool = False,
    ) -> dict[str, Any]:
        """GET /tasks/list: `{"items": [...], "cursor": ...}`, under the poll budget (the server counts it as one)."""
        data, _ = self._request("GET", "/tasks/list", key=self._poll_key(), endpoint="codex list tasks",
                                params=self._list_params(limit, cursor, environment_id, task_filter),
                                slot_taken=slot_taken)
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
                          "--environment / SPARC_CODEX_ENVIRONMENT.")


POLL_KEY: Key = ("codex", "poll", "*")


def make_codex(ctx: ClientContext) -> CodexClient:
    """A Codex client with the auth.json credentials.

    SPARC_CODEX_POLLS_PER_MINUTE, when set, is the poll budget (over the default and the project's
    `[limits."codex.poll"]`); unset, the limiter keeps what it has (the default, or the project's)."""
    s = ctx.settings
    assert ctx.limiters is not None and ctx.session is not None
    auth = CodexAuth(
        s.codex_auth_path(), clock=ctx.clock, secrets=ctx.secrets, session=ctx.session, refresh=s.codex_refresh,
        refresh_url=s.codex_refresh_url, client_id=s.codex_oauth_client_id, timeout_s=s.http_timeout_s,
    )
    if s.codex_polls_per_minute is not None:
        burst = ctx.limiters.limit_for(POLL_KEY).burst
        ctx.limiters.limits[POLL_KEY] = RateLimit(per_minute=s.codex_polls_per_minute, burst=burst)
    return CodexClient(
        base_url=s.codex_base_url, auth=auth, session=ctx.session, limiters=ctx.limiters, policy=ctx.policy(),
        clock=ctx.clock, secrets=ctx.secrets, path_style=s.codex_path_style,
        poll=PollPolicy(time_scale=ctx.time_scale), timeout_s=s.http_timeout_s,
        base_setting="SPARC_SIM_URL" if s.sim_url else "SPARC_CODEX_BASE_URL",
        on_retry=ctx.on_retry,
    )
