"""Executes a set of agents in dependency order on a bounded pool of worker threads.

The runner knows neither prompts nor wire formats: it gets an `execute(agent, deps)` function that
returns an AgentRecord. Dependencies are counted, so dispatch is O(1) per agent: an agent is queued the
moment its last dependency completes (rate limits are the clients' business). When a dependency fails,
its dependents are recorded `skipped` with the reason and independent agents go on. Workers are daemon
threads: on Ctrl-C the run stops waiting for them at once and in-flight requests are abandoned."""

from __future__ import annotations

import queue
import threading
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from sparc_cloud.bundle import AgentRecord, utc_now
from sparc_cloud.errors import Cancelled
from sparc_cloud.http.clock import Clock
from sparc_cloud.phases import AgentSpec

Execute = Callable[[AgentSpec, Mapping[str, AgentRecord]], AgentRecord]


@dataclass
class RunnerHooks:
    """Callbacks the pipeline gives the runner (all called on the runner's own thread)."""

    on_started: Callable[[AgentSpec], None] = lambda agent: None
    on_finished: Callable[[AgentRecord], None] = lambda record: None
    on_phase_done: Callable[[int], None] = lambda number: None


def skipped(agent: AgentSpec, reason: str) -> AgentRecord:
    """The record of an agent that was not run."""
    now = utc_now()
    return AgentRecord(id=agent.id, phase=agent.phase, title=agent.title, backend=agent.backend, model=agent.model,
                       depends_on=list(agent.depends_on), status="skipped", error=reason, started_at=now,
                       finished_at=now)


class Runner:
    """Runs `agents`; `prior` holds finished records of agents outside this run that they may need."""

    def __init__(
        self,
        agents: list[AgentSpec],
        execute: Execute,
        *,
        prior: Mapping[str, AgentRecord],
        concurrency: int,
        cancel: threading.Event,
        clock: Clock,
        hooks: RunnerHooks | None = None,
        fail_fast: bool = False,
        deadline_s: float | None = None,
    ) -> None:
        self.agents = agents
        self.execute = execute
        self.prior = dict(prior)
        self.concurrency = max(1, concurrency)
        self.cancel = cancel
        self.clock = clock
        self.hooks = hooks or RunnerHooks()
        self.fail_fast = fail_fast
        self.deadline_s = deadline_s
        self.records: dict[str, AgentRecord] = {}
        self.stop_reason: str | None = None

    def run(self) -> dict[str, AgentRecord]:
        """Run everything that can run; return the records of this run's agents.

        Raises Cancelled when `cancel` is set from outside (Ctrl-C); records finished until then are kept
        in `self.records` (and were handed to `on_finished`)."""
        by_id = {a.id: a for a in self.agents}
        waiting: dict[str, set[str]] = {}
        dependents: dict[str, list[str]] = {a.id: [] for a in self.agents}
        doomed: dict[str, str] = {}
        left_in_phase: dict[int, int] = {}
        ready: deque[AgentSpec] = deque()
        for agent in self.agents:
            left_in_phase[agent.phase] = left_in_phase.get(agent.phase, 0) + 1
            pending = set()
            for dep in agent.depends_on:
                if dep in by_id:
                    pending.add(dep)
                    dependents[dep].append(agent.id)
                else:
                    prior = self.prior.get(dep)
                    if prior is None or prior.status != "completed":
                        doomed.setdefault(agent.id, f"dependency {dep} has no completed result")
            waiting[agent.id] = pending
            if not pending:
                ready.append(agent)

        jobs: queue.Queue[AgentSpec | None] = queue.Queue()
        results: queue.Queue[tuple[AgentSpec, AgentRecord | BaseException]] = queue.Queue()
        workers = [threading.Thread(target=self._worker, args=(jobs, results), daemon=True,
                                    name=f"sparc-agent-{i}") for i in range(min(self.concurrency, len(self.agents)))]
        for worker in workers:
            worker.start()
        in_flight = 0
        start = self.clock.now()

        def finish(record: AgentRecord) -> None:
            self.records[record.id] = record
            self.hooks.on_finished(record)
            agent = by_id[record.id]
            left_in_phase[agent.phase] -= 1
            if left_in_phase[agent.phase] == 0:
                self.hooks.on_phase_done(agent.phase)
            if record.status == "failed" and self.fail_fast and self.stop_reason is None:
                self.stop_reason = f"--fail-fast stopped the run after {record.id} failed"
                self.cancel.set()  # in-flight agents stop waiting (polls, retries) and are recorded as stopped
            for child in dependents[record.id]:
                if record.status != "completed":
                    doomed.setdefault(child, f"dependency {record.id} {record.status}")
                waiting[child].discard(record.id)
                if not waiting[child]:
                    ready.append(by_id[child])

        try:
            while len(self.records) < len(self.agents):
                if self.cancel.is_set() and self.stop_reason is None:
                    raise Cancelled("interrupted")
                if self.deadline_s is not None and self.stop_reason is None and \
                        self.clock.now() - start > self.deadline_s:
                    self.stop_reason = f"the run deadline ({self.deadline_s:.0f} s) was reached"
                    self.cancel.set()
                while ready:  # hand work to free workers only, so a stop reaches everything not yet started
                    agent = ready[0]
                    if agent.id in doomed:
                        ready.popleft()
                        finish(skipped(agent, doomed[agent.id]))
                    elif self.stop_reason:
                        ready.popleft()
                        finish(skipped(agent, f"not started: {self.stop_reason}"))
                    elif in_flight < self.concurrency:
                        ready.popleft()
                        self.hooks.on_started(agent)
                        jobs.put(agent)
                        in_flight += 1
                    else:
                        break
                if len(self.records) >= len(self.agents):
                    break
                if in_flight == 0:
                    for aid in [a for a in by_id if a not in self.records]:  # unreachable: a cycle or bad data
                        finish(skipped(by_id[aid], "dependencies could not be resolved"))
                    break
                try:
                    agent, outcome = results.get(timeout=0.2)
                except queue.Empty:
                    continue
                in_flight -= 1
                if isinstance(outcome, BaseException):
                    if isinstance(outcome, Cancelled) and self.stop_reason:
                        finish(skipped(agent, f"stopped: {self.stop_reason}"))
                        continue
                    if isinstance(outcome, Cancelled):
                        raise outcome
                    finish(skipped(agent, f"internal error: {type(outcome).__name__}: {outcome}"))
                else:
                    finish(outcome)
        except KeyboardInterrupt:
            self.cancel.set()
            raise Cancelled("interrupted") from None
        finally:
            for _ in workers:
                jobs.put(None)
        return self.records

    def _worker(self, jobs: queue.Queue[AgentSpec | None],
                results: queue.Queue[tuple[AgentSpec, AgentRecord | BaseException]]) -> None:
        while True:
            agent = jobs.get()
            if agent is None:
                return
            deps = {d: self.records.get(d) or self.prior[d] for d in agent.depends_on
                    if d in self.records or d in self.prior}
            try:
                results.put((agent, self.execute(agent, deps)))
            except BaseException as exc:  # noqa: BLE001 - reported to the runner thread
                results.put((agent, exc))
