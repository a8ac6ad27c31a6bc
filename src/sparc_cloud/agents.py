"""Running one agent: render its prompt, reuse an identical earlier result, or call its backend, and
turn the outcome (success or a typed error) into an AgentRecord. Errors never escape as exceptions,
except Cancelled (the run is stopping)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from sparc_cloud.bundle import AgentRecord, Usage, utc_now
from sparc_cloud.clients.codex import CodexClient, TaskDetails
from sparc_cloud.clients.gemini import GeminiClient
from sparc_cloud.costs import Budget, BudgetExceeded, record_cost
from sparc_cloud.errors import (
    Cancelled,
    RetriesExhausted,
    SparcError,
    TaskFailed,
    TaskGone,
    TaskPollFailed,
    TaskTimeout,
)
from sparc_cloud.events import Event, EventBus, EventKind
from sparc_cloud.http.clock import Clock
from sparc_cloud.http.retry import RetryNotice
from sparc_cloud.phases import AgentSpec, Output, Plan, inputs_hash, render_prompt
from sparc_cloud.redact import SecretRegistry
from sparc_cloud.runfolder import TaskMark

log = logging.getLogger(__name__)


@dataclass
class Backends:
    """Lazily built clients (a run that needs no Codex never reads Codex credentials)."""

    gemini: Callable[[], GeminiClient] | None = None
    codex: Callable[[], CodexClient] | None = None
    codex_environment_id: str | None = None
    codex_branch: str | None = None
    _cache: dict[str, Any] = field(default_factory=dict)

    def gemini_client(self) -> GeminiClient:
        """The Gemini client (built on first use)."""
        if "gemini" not in self._cache:
            assert self.gemini is not None, "no Gemini backend configured"
            self._cache["gemini"] = self.gemini()
        client: GeminiClient = self._cache["gemini"]
        return client

    def codex_client(self) -> CodexClient:
        """The Codex client (built on first use)."""
        if "codex" not in self._cache:
            assert self.codex is not None, "no Codex backend configured"
            self._cache["codex"] = self.codex()
        client: CodexClient = self._cache["codex"]
        return client


class AgentExecutor:
    """`execute(agent, deps)` for the Runner."""

    def __init__(
        self,
        plan: Plan,
        backends: Backends,
        *,
        bus: EventBus,
        clock: Clock,
        secrets: SecretRegistry,
        reuse: Mapping[str, AgentRecord],
        agent_timeout_s: float,
        budget: Budget | None = None,
        run_id: str = "",
        run_backend: str = "live",
        prices: Mapping[str, tuple[float, float]] | None = None,
        attach: Mapping[str, TaskMark] | None = None,
        on_task: Callable[[TaskMark], None] | None = None,
    ) -> None:
        self.plan = plan
        self.backends = backends
        self.bus = bus
        self.clock = clock
        self.secrets = secrets
        self.reuse = reuse
        self.agent_timeout_s = agent_timeout_s
        self.budget = budget
        self.run_id = run_id
        self.run_backend = run_backend
        self.prices = prices or {}
        self.attach = attach or {}
        self.on_task = on_task or (lambda mark: None)

    def digest(self, agent: AgentSpec, deps: Mapping[str, AgentRecord]) -> str:
        """The inputs hash the agent would have with these dependency records."""
        outputs = {aid: Output(r.output_text, r.diff) for aid, r in deps.items()}
        system, prompt = render_prompt(self.plan, agent, outputs)
        return inputs_hash(agent, system, prompt)

    def _same_place(self, agent: AgentSpec, earlier: AgentRecord) -> bool:
        """A Codex result is reusable only from the same environment and branch."""
        if agent.backend != "codex":
            return True
        return (earlier.environment_id, earlier.branch) == (self.backends.codex_environment_id,
                                                              self.backends.codex_branch)

    def __call__(self, agent: AgentSpec, deps: Mapping[str, AgentRecord]) -> AgentRecord:
        outputs = {aid: Output(r.output_text, r.diff) for aid, r in deps.items()}
        system, prompt = render_prompt(self.plan, agent, outputs)
        digest = inputs_hash(agent, system, prompt)
        earlier = self.reuse.get(agent.id)
        if (earlier is not None and earlier.status == "completed" and earlier.inputs_hash == digest
                and self._same_place(agent, earlier)):
            self.bus.emit(Event("agent_reused", agent.id, agent.phase, "same inputs as the earlier run"))
            return earlier.model_copy(update={"reused": True})
        record = AgentRecord(id=agent.id, phase=agent.phase, title=agent.title, backend=agent.backend,
                             model=agent.model, depends_on=list(agent.depends_on), status="failed",
                             inputs_hash=digest, started_at=utc_now(), run_backend=self.run_backend)
        if self.budget is not None:
            try:
                self.budget.admit(agent.id, agent.model, (len(system) + len(prompt)) // 4)
            except BudgetExceeded as exc:
                record.status, record.error, record.finished_at = "skipped", str(exc), utc_now()
                self.bus.emit(Event("agent_skipped", agent.id, agent.phase, str(exc)))
                return record
        self.bus.emit(Event("agent_started", agent.id, agent.phase, f"{agent.backend} {agent.model}",
                            {"model": agent.model, "backend": agent.backend}))
        started = self.clock.now()
        throttle = {"rate_limited": 0, "throttled_s": 0.0, "retries": 0}

        def on_retry(notice: RetryNotice) -> None:
            throttle["retries"] += 1
            if notice.rate_limited:
                throttle["rate_limited"] += 1
                throttle["throttled_s"] += notice.wait_s
            kind: EventKind = "agent_rate_limited" if notice.rate_limited else "agent_retrying"
            status = f"HTTP {notice.status}" if notice.status else "network error"
            self.bus.emit(Event(kind, agent.id, agent.phase,
                                f"{notice.endpoint}: {status}, retry {notice.attempt} in {notice.wait_s:.1f} s",
                                {"endpoint": notice.endpoint, "status": notice.status, "wait_s": notice.wait_s,
                                 "attempt": notice.attempt}))

        def on_wait(seconds: float, why: str) -> None:
            throttle["throttled_s"] += seconds
            self.bus.emit(Event("agent_waiting", agent.id, agent.phase, f"waiting {seconds:.1f} s for the {why}",
                                {"wait_s": seconds, "why": why}))

        try:
            if agent.backend == "gemini":
                self._run_gemini(agent, system, prompt, record, on_retry, on_wait)
            else:
                self._run_codex(agent, system, prompt, record, on_retry, on_wait)
            record.status = "completed"
        except Cancelled:
            raise
        except SparcError as exc:
            record.error = self.secrets.redact(str(exc))
            if isinstance(exc, RetriesExhausted):
                record.attempts = exc.attempts
            if isinstance(exc, TaskFailed):
                record.task_id, record.task_status = exc.task_id, exc.status
            elif isinstance(exc, TaskTimeout):
                record.task_id, record.task_status = exc.task_id, exc.last_status
            elif isinstance(exc, TaskPollFailed):
                record.task_id = exc.task_id  # the task may still run: a resume re-attaches to it
        except Exception as exc:  # noqa: BLE001 - any bug becomes a failed agent, logged with its traceback
            log.exception("agent %s hit an internal error", agent.id)
            record.error = self.secrets.redact(f"internal error: {type(exc).__name__}: {exc}")
        record.latency_s = round(self.clock.now() - started, 3)
        record.cost_usd = round(record_cost(self.prices, record), 8)
        if self.budget is not None:
            self.budget.settle(record)
        record.finished_at = utc_now()
        record.rate_limited = int(throttle["rate_limited"])
        record.throttled_s = round(float(throttle["throttled_s"]), 3)
        if record.status == "completed":
            self.bus.emit(Event("agent_finished", agent.id, agent.phase,
                                f"{record.usage.total_tokens} tokens in {record.latency_s:.1f} s",
                                {"tokens": record.usage.total_tokens, "latency_s": record.latency_s}))
        else:
            self.bus.emit(Event("agent_failed", agent.id, agent.phase, record.error or "failed"))
        return record

    def _run_gemini(self, agent: AgentSpec, system: str, prompt: str, record: AgentRecord,
                    on_retry: Callable[[RetryNotice], None], on_wait: Callable[[float, str], None]) -> None:
        client = self.backends.gemini_client()
        result = client.generate(prompt, model=agent.model, system=system,
                                 generation_config=self.plan.project.gemini.generation_config, on_retry=on_retry,
                                 on_wait=on_wait)
        record.output_text = result.text
        record.usage = Usage(prompt_tokens=result.usage.prompt_tokens, output_tokens=result.usage.output_tokens,
                             total_tokens=result.usage.total_tokens)
        record.attempts = result.attempts
        record.request_id = result.request_id
        record.fallback_from = result.fallback_from
        if result.fallback_from:
            record.model = result.model

    def _run_codex(self, agent: AgentSpec, system: str, prompt: str, record: AgentRecord,
                   on_retry: Callable[[RetryNotice], None], on_wait: Callable[[float, str], None]) -> None:
        client = self.backends.codex_client()
        env_id, branch = self.backends.codex_environment_id, self.backends.codex_branch
        assert env_id, "the Codex environment is resolved before the run starts"
        record.environment_id, record.branch = env_id, branch
        digest = record.inputs_hash or ""

        def on_poll(details: TaskDetails) -> None:
            self.bus.emit(Event("agent_polled", agent.id, agent.phase, details.status.value,
                                {"task_id": details.task_id, "status": details.status.value}))

        found = self._attached_task(agent, record, client, on_poll)
        if found is None:
            # Journaled before the request goes out: a process killed while the create is on the wire leaves a
            # line a resume uses to look for the task instead of buying it twice.
            marker = task_marker(self.run_id, agent.id, digest)
            self.on_task(TaskMark(agent.id, "creating", digest, env_id, branch, marker=marker, at=self.clock.wall()))
            task_id = client.create_task(f"{system}\n\n{prompt}", environment_id=env_id, branch=branch,
                                         marker=marker, on_retry=on_retry, on_wait=on_wait)
            record.task_id = task_id
            self.on_task(TaskMark(agent.id, "started", digest, env_id, branch, marker=marker, task_id=task_id,
                                  at=self.clock.wall()))
            found = client.wait(task_id, timeout_s=self.agent_timeout_s, on_poll=on_poll, environment_id=env_id)
        details, polls = found
        record.task_status = details.status.value
        if details.updated_at is not None:
            record.detection_delay_s = round(max(0.0, self.clock.wall() - details.updated_at), 3)
        record.output_text = details.text
        record.diff = details.diff
        record.worklog = details.worklog
        record.polls = polls
        record.attempts = 1
        tokens_in, tokens_out = len(prompt) // 4, len(details.text + (details.diff or "")) // 4
        # Codex Cloud reports no token usage; these are estimates (4 characters per token), marked as such.
        record.usage = Usage(prompt_tokens=tokens_in, output_tokens=tokens_out, total_tokens=tokens_in + tokens_out)
        record.usage_estimated = True

    def _attached_task(self, agent: AgentSpec, record: AgentRecord, client: CodexClient,
                       on_poll: Callable[[TaskDetails], None]) -> tuple[TaskDetails, int] | None:
        """Wait for the task an earlier session of this run started for the same inputs, if it is still alive.

        A session killed while its create was on the wire left only a `creating` line: the task is looked for
        by its marker. None when there is none to attach to, or it failed, was cancelled or is gone: then a
        new task is bought."""
        mark = self.attach.get(agent.id)
        if mark is None or mark.inputs_hash != record.inputs_hash or \
                (mark.environment_id, mark.branch) != (record.environment_id, record.branch):
            return None
        task_id = mark.task_id
        if task_id is None and mark.marker and record.environment_id:
            task_id = client.find_created(mark.marker, record.environment_id, since=mark.at or self.clock.wall())
            if task_id is None:
                log.info("%s: the create an earlier session sent never made a task; creating one", agent.id)
                return None
            self.on_task(TaskMark(agent.id, "started", mark.inputs_hash, mark.environment_id, mark.branch,
                                  marker=mark.marker, task_id=task_id, at=self.clock.wall()))
        if task_id is None:
            return None
        record.task_id = task_id
        self.bus.emit(Event("agent_attached", agent.id, agent.phase,
                            f"re-attached to Codex task {task_id} started by an earlier session",
                            {"task_id": task_id}))
        try:
            return client.wait(task_id, timeout_s=self.agent_timeout_s, on_poll=on_poll,
                               environment_id=record.environment_id)
        except TaskFailed as exc:
            log.info("%s: the earlier task %s ended %s; creating a new one", agent.id, task_id, exc.status)
        except TaskGone:
            log.info("%s: the earlier task %s is gone (404); creating a new one", agent.id, task_id)
        record.task_id = None
        return None


def task_marker(run_id: str, agent_id: str, inputs_hash: str) -> str:
    """What makes a created task findable again: the run, the agent and its inputs."""
    return f"{run_id}/{agent_id}/{inputs_hash.removeprefix('sha256:')[:12]}"
