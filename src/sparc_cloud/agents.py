"""Running one agent: render its prompt, reuse an identical earlier result, or hand it to its backend
(`backends/`), and turn the outcome (success or a typed error) into an AgentRecord. Errors never escape
as exceptions, except Cancelled (the run is stopping)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping

from sparc_cloud.backends.base import AgentCall, Backend, RunHooks
from sparc_cloud.bundle import AgentRecord, utc_now
from sparc_cloud.costs import Budget, BudgetExceeded, record_cost
from sparc_cloud.errors import (
    Cancelled,
    RetriesExhausted,
    SparcError,
    TaskFailed,
    TaskPollFailed,
    TaskTimeout,
)
from sparc_cloud.events import Event, EventBus, EventKind
from sparc_cloud.http.clock import Clock
from sparc_cloud.http.retry import RetryNotice
from sparc_cloud.phases import AgentSpec, Output, Plan, contract_checks, inputs_hash, render_prompt
from sparc_cloud.redact import SecretRegistry
from sparc_cloud.repair import run_with_contract
from sparc_cloud.runfolder import TaskMark
from sparc_cloud.structured import ask_for

log = logging.getLogger(__name__)


class AgentExecutor:
    """`execute(agent, deps)` for the Runner."""

    def __init__(
        self,
        plan: Plan,
        backends: Mapping[str, Backend],
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
        self.hooks = RunHooks(bus=bus, clock=clock, run_id=run_id, agent_timeout_s=agent_timeout_s,
                              attach=attach or {}, on_task=on_task or (lambda mark: None))

    def digest(self, agent: AgentSpec, deps: Mapping[str, AgentRecord]) -> str:
        """The inputs hash the agent would have with these dependency records."""
        outputs = {aid: Output(r.output_text, r.diff, r.output_json) for aid, r in deps.items()}
        system, prompt = render_prompt(self.plan, agent, outputs)
        return inputs_hash(agent, system, prompt)

    def _same_place(self, agent: AgentSpec, earlier: AgentRecord) -> bool:
        """Whether the agent's backend may reuse an earlier result (a task backend: same place only)."""
        backend = self.backends.get(agent.backend)
        return backend is not None and backend.same_place(earlier)

    def __call__(self, agent: AgentSpec, deps: Mapping[str, AgentRecord]) -> AgentRecord:
        outputs = {aid: Output(r.output_text, r.diff, r.output_json) for aid, r in deps.items()}
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
                self.budget.admit(agent.id, f"{agent.backend}/{agent.model}", (len(system) + len(prompt)) // 4)
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

        def on_repair(errors: list[str]) -> None:
            self.bus.emit(Event("agent_repairing", agent.id, agent.phase,
                                f"the answer broke the {agent.contract} contract ({errors[0]}"
                                f"{f' and {len(errors) - 1} more' if len(errors) > 1 else ''}): one repair turn",
                                {"errors": errors}))

        try:
            call = AgentCall(agent, system, prompt, record, on_retry, on_wait, ask_for(agent.contract))
            if call.contract is None:
                self.backends[agent.backend].run(call, self.hooks)
            else:
                run_with_contract(self.backends[agent.backend], call, self.hooks,
                                  contract_checks(self.plan, agent, outputs), on_repair)
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
