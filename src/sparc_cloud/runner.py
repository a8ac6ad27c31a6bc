"""Executes a set of agents in dependency order on a bounded pool of worker threads.

The runner knows neither prompts nor wire formats: it gets an `execute(agent, deps)` function that
returns an AgentRecord. Dependencies are counted, so dispatch is O(1) per agent: an agent is ready the
moment its last dependency completes (rate limits are the clients' business). When a dependency fails,
its dependents are recorded `skipped` with the reason and independent agents go on.

Workers take ready agents themselves and do the bookkeeping of what they finished (records, hooks, newly
ready dependents) under one lock, then go straight on to the next ready agent: no hand-off through another
thread, so an agent costs no thread wake-ups beyond its own I/O. The calling thread only watches for
Ctrl-C, the deadline and the end. Workers are daemon threads: on Ctrl-C the run stops waiting for them at
once, in-flight requests are abandoned and nothing they finish afterwards is recorded."""

from __future__ import annotations

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
    """Callbacks the pipeline gives the runner: called one at a time (under the runner's lock), on worker
    threads, and never after `run()` has returned or raised. An exception from a hook ends the run: `run()`
    raises it."""

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
    """Runs `agents` once; `prior` holds finished records of agents outside this run that they may need."""

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
        watch_s: float = 0.2,
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
        self.watch_s = watch_s  # how often the calling thread looks at Ctrl-C and the deadline
        self.records: dict[str, AgentRecord] = {}
        self.stop_reason: str | None = None
        self._lock = threading.Lock()
        self._work = threading.Condition(self._lock)  # idle workers wait here for ready agents
        self._done = threading.Condition(self._lock)  # the calling thread waits here for the end
        self._by_id: dict[str, AgentSpec] = {}
        self._waiting: dict[str, set[str]] = {}
        self._dependents: dict[str, list[str]] = {}
        self._doomed: dict[str, str] = {}
        self._left_in_phase: dict[int, int] = {}
        self._ready: deque[AgentSpec] = deque()
        self._in_flight = 0
        self._closed = False
        self._fatal: BaseException | None = None

    def run(self) -> dict[str, AgentRecord]:
        """Run everything that can run; return the records of this run's agents.

        Raises Cancelled when `cancel` is set from outside (Ctrl-C); records finished until then are kept
        in `self.records` (and were handed to `on_finished`)."""
        self._plan()
        workers = [threading.Thread(target=self._worker, daemon=True, name=f"sparc-agent-{i}")
                   for i in range(min(self.concurrency, len(self.agents)))]
        start = self.clock.now()
        try:
            with self._lock:
                self._settle()
            for worker in workers:
                worker.start()
            with self._lock:
                while self._fatal is None and len(self.records) < len(self.agents):
                    if self.cancel.is_set() and self.stop_reason is None:
                        raise Cancelled("interrupted")
                    if self.deadline_s is not None and self.stop_reason is None and \
                            self.clock.now() - start > self.deadline_s:
                        self._stop(f"the run deadline ({self.deadline_s:.0f} s) was reached")
                        self._settle()
                    self._done.wait(self.watch_s)
                if self._fatal is not None:
                    raise self._fatal
        except KeyboardInterrupt:
            self.cancel.set()
            raise Cancelled("interrupted") from None
        finally:
            with self._lock:
                self._closed = True
                self._work.notify_all()
        return self.records

    # ------------------------------------------------------------------ state (all under self._lock)

    def _plan(self) -> None:
        self._by_id = {a.id: a for a in self.agents}
        self._dependents = {a.id: [] for a in self.agents}
        for agent in self.agents:
            self._left_in_phase[agent.phase] = self._left_in_phase.get(agent.phase, 0) + 1
            pending = set()
            for dep in agent.depends_on:
                if dep in self._by_id:
                    pending.add(dep)
                    self._dependents[dep].append(agent.id)
                else:
                    prior = self.prior.get(dep)
                    if prior is None or prior.status != "completed":
                        self._doomed.setdefault(agent.id, f"dependency {dep} has no completed result")
            self._waiting[agent.id] = pending
            if not pending:
                self._ready.append(agent)

    def _stop(self, reason: str) -> None:
        self.stop_reason = reason
        self.cancel.set()  # in-flight agents stop waiting (polls, retries) and are recorded as stopped

    def _finish(self, record: AgentRecord) -> None:
        self.records[record.id] = record
        self.hooks.on_finished(record)
        agent = self._by_id[record.id]
        self._left_in_phase[agent.phase] -= 1
        if self._left_in_phase[agent.phase] == 0:
            self.hooks.on_phase_done(agent.phase)
        if record.status == "failed" and self.fail_fast and self.stop_reason is None:
            self._stop(f"--fail-fast stopped the run after {record.id} failed")
        for child in self._dependents[record.id]:
            if record.status != "completed":
                self._doomed.setdefault(child, f"dependency {record.id} {record.status}")
            self._waiting[child].discard(record.id)
            if not self._waiting[child] and child not in self.records:  # recorded already: part of a cycle
                self._ready.append(self._by_id[child])

    def _settle(self) -> None:
        """Record what can be decided without running anything (doomed, stopped, unreachable agents)."""
        while self._ready and (self._ready[0].id in self._doomed or self.stop_reason):
            agent = self._ready.popleft()
            reason = self._doomed.get(agent.id) or f"not started: {self.stop_reason}"
            self._finish(skipped(agent, reason))
        if not self._ready and self._in_flight == 0 and len(self.records) < len(self.agents):
            for aid in [a for a in self._by_id if a not in self.records]:  # unreachable: a cycle or bad data
                self._finish(skipped(self._by_id[aid], "dependencies could not be resolved"))
            self._ready.clear()  # everything is recorded now; what the skips above made ready is stale
        if len(self.records) >= len(self.agents):
            self._done.notify_all()

    def _take(self) -> tuple[AgentSpec, dict[str, AgentRecord]] | None:
        """The next agent to run and its dependencies' records; None when this worker should exit."""
        while True:
            if self._closed or self._fatal is not None or (self.cancel.is_set() and self.stop_reason is None):
                return None  # over, failed, or Ctrl-C: start nothing more
            self._settle()
            if self._ready and self._in_flight < self.concurrency:
                agent = self._ready.popleft()
                self._in_flight += 1
                if self._ready:
                    self._work.notify()  # one idle worker for the next ready agent; it wakes the one after
                self.hooks.on_started(agent)
                deps = {d: self.records.get(d) or self.prior[d] for d in agent.depends_on
                        if d in self.records or d in self.prior}
                return agent, deps
            if len(self.records) >= len(self.agents):
                return None
            self._work.wait()

    def _record(self, agent: AgentSpec, outcome: AgentRecord | BaseException) -> None:
        self._in_flight -= 1
        if isinstance(outcome, Cancelled):
            if self.stop_reason:
                self._finish(skipped(agent, f"stopped: {self.stop_reason}"))
            # else: Ctrl-C. The calling thread raises Cancelled; this agent stays unrecorded.
        elif isinstance(outcome, BaseException):
            self._finish(skipped(agent, f"internal error: {type(outcome).__name__}: {outcome}"))
        else:
            self._finish(outcome)

    def _worker(self) -> None:
        with self._lock:
            job = self._take()
        while job is not None:
            agent, deps = job
            try:
                outcome: AgentRecord | BaseException = self.execute(agent, deps)
            except BaseException as exc:  # noqa: BLE001 - recorded by the runner, never lost
                outcome = exc
            with self._lock:
                if self._closed:
                    return  # the run is over (Ctrl-C): nothing is recorded after run() has ended
                try:
                    self._record(agent, outcome)
                    job = self._take()
                except BaseException as exc:  # noqa: BLE001 - a hook failed: the run ends with its error
                    self._fatal = exc
                    self.cancel.set()
                    self._done.notify_all()
                    self._work.notify_all()
                    return
