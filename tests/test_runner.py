"""The runner: dependency order, bounded parallelism, skips, fail-fast, deadline, Ctrl-C, hook errors.

Agents here are plain functions synchronised with events and barriers, so every test decides the order of
things itself and none depends on timing."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping

import pytest

from sparc_cloud.bundle import AgentRecord
from sparc_cloud.errors import Cancelled
from sparc_cloud.http.clock import FakeClock, RealClock
from sparc_cloud.phases import AgentSpec
from sparc_cloud.runner import Runner, RunnerHooks

WAIT = 10.0  # seconds a test waits for something that must happen; only reached when the runner is broken


def spec(aid: str, *deps: str, phase: int = 1) -> AgentSpec:
    return AgentSpec(aid, phase, "gemini", "gemini-2.5-flash", "research", aid, tuple(deps))


def record(agent: AgentSpec, status: str = "completed", text: str = "") -> AgentRecord:
    return AgentRecord(id=agent.id, phase=agent.phase, backend=agent.backend, model=agent.model,
                       status=status, output_text=text or f"output of {agent.id}")  # type: ignore[arg-type]


Execute = Callable[[AgentSpec, Mapping[str, AgentRecord]], AgentRecord]


def make_runner(agents: list[AgentSpec], execute: Execute, *, concurrency: int = 4,
                prior: Mapping[str, AgentRecord] | None = None, **kwargs: object) -> tuple[Runner, list[str]]:
    finished: list[str] = []
    hooks = kwargs.pop("hooks", None) or RunnerHooks(on_finished=lambda r: finished.append(r.id))
    clock = kwargs.pop("clock", None) or RealClock()
    runner = Runner(agents, execute, prior=prior or {}, concurrency=concurrency, cancel=threading.Event(),
                    clock=clock, hooks=hooks, watch_s=0.01, **kwargs)  # type: ignore[arg-type]
    return runner, finished


def test_each_agent_runs_after_its_dependencies_and_gets_their_records() -> None:
    agents = [spec("a"), spec("b"), spec("c", "a", "b"), spec("d", "c", phase=2)]
    seen: dict[str, list[str]] = {}
    lock = threading.Lock()

    def execute(agent: AgentSpec, deps: Mapping[str, AgentRecord]) -> AgentRecord:
        with lock:
            seen[agent.id] = sorted(deps)
        return record(agent)

    phases_done: list[int] = []
    finished: list[str] = []
    hooks = RunnerHooks(on_finished=lambda r: finished.append(r.id), on_phase_done=phases_done.append)
    runner, _ = make_runner(agents, execute, hooks=hooks)
    records = runner.run()
    assert {r.status for r in records.values()} == {"completed"}
    assert seen == {"a": [], "b": [], "c": ["a", "b"], "d": ["c"]}
    assert finished.index("c") > max(finished.index("a"), finished.index("b"))
    assert finished[-1] == "d"
    assert phases_done == [1, 2]


def test_independent_agents_run_together_but_never_more_than_the_concurrency() -> None:
    agents = [spec(f"r{i}") for i in range(9)]
    together = threading.Barrier(3, timeout=WAIT)  # breaks (and fails the agents) unless 3 run at once
    lock = threading.Lock()
    in_flight = [0, 0]  # now, most

    def execute(agent: AgentSpec, deps: Mapping[str, AgentRecord]) -> AgentRecord:
        with lock:
            in_flight[0] += 1
            in_flight[1] = max(in_flight[1], in_flight[0])
        together.wait()
        with lock:
            in_flight[0] -= 1
        return record(agent)

    runner, _ = make_runner(agents, execute, concurrency=3)
    records = runner.run()
    assert [r.status for r in records.values()] == ["completed"] * 9
    assert in_flight[1] == 3


def test_a_failed_dependency_skips_its_dependents_and_independent_agents_go_on() -> None:
    agents = [spec("a"), spec("b"), spec("c", "a"), spec("d", "c")]

    def execute(agent: AgentSpec, deps: Mapping[str, AgentRecord]) -> AgentRecord:
        return record(agent, "failed" if agent.id == "a" else "completed")

    runner, finished = make_runner(agents, execute)
    records = runner.run()
    assert {k: r.status for k, r in records.items()} == {"a": "failed", "b": "completed", "c": "skipped",
                                                        "d": "skipped"}
    assert records["c"].error == "dependency a failed"
    assert records["d"].error == "dependency c skipped"
    assert sorted(finished) == ["a", "b", "c", "d"]


def test_dependencies_outside_the_run_come_from_prior_records() -> None:
    prior = {"p1": record(spec("p1"), text="earlier"), "p2": record(spec("p2"), "failed")}
    agents = [spec("uses-prior", "p1"), spec("uses-failed", "p2"), spec("uses-missing", "nowhere")]
    got: dict[str, str] = {}

    def execute(agent: AgentSpec, deps: Mapping[str, AgentRecord]) -> AgentRecord:
        got.update({k: v.output_text for k, v in deps.items()})
        return record(agent)

    runner, _ = make_runner(agents, execute, prior=prior)
    records = runner.run()
    assert records["uses-prior"].status == "completed" and got == {"p1": "earlier"}
    assert records["uses-failed"].error == "dependency p2 has no completed result"
    assert records["uses-missing"].error == "dependency nowhere has no completed result"


def test_a_dependency_cycle_is_reported_instead_of_hanging() -> None:
    agents = [spec("a", "b"), spec("b", "a"), spec("free")]
    runner, _ = make_runner(agents, lambda agent, deps: record(agent))
    records = runner.run()
    assert records["free"].status == "completed"
    assert records["a"].error == records["b"].error == "dependencies could not be resolved"


def test_an_exception_in_an_agent_is_recorded_and_the_run_goes_on() -> None:
    agents = [spec("boom"), spec("fine")]

    def execute(agent: AgentSpec, deps: Mapping[str, AgentRecord]) -> AgentRecord:
        if agent.id == "boom":
            raise RuntimeError("kaput")
        return record(agent)

    runner, _ = make_runner(agents, execute)
    records = runner.run()
    assert records["boom"].status == "skipped"
    assert records["boom"].error == "internal error: RuntimeError: kaput"
    assert records["fine"].status == "completed"


def test_fail_fast_stops_agents_in_flight_and_starts_no_more() -> None:
    agents = [spec("slow"), spec("bad"), spec("later-1"), spec("later-2")]
    slow_started = threading.Event()

    def execute(agent: AgentSpec, deps: Mapping[str, AgentRecord]) -> AgentRecord:
        if agent.id == "slow":
            slow_started.set()
            if not runner.cancel.wait(WAIT):
                return record(agent)
            raise Cancelled("interrupted")  # what a client's sleep raises once the run is cancelled
        assert slow_started.wait(WAIT)
        return record(agent, "failed" if agent.id == "bad" else "completed")

    runner, _ = make_runner(agents, execute, concurrency=2, fail_fast=True)
    records = runner.run()
    assert records["bad"].status == "failed"
    assert records["slow"].status == "skipped"
    assert records["slow"].error == "stopped: --fail-fast stopped the run after bad failed"
    assert {records[a].error for a in ("later-1", "later-2")} == {
        "not started: --fail-fast stopped the run after bad failed"}
    assert runner.cancel.is_set()


def test_the_deadline_stops_the_run_and_says_so() -> None:
    clock = FakeClock()
    agents = [spec("long"), spec("queued")]

    def execute(agent: AgentSpec, deps: Mapping[str, AgentRecord]) -> AgentRecord:
        clock.advance(100.0)  # this agent takes 100 s of the run's 50
        if runner.cancel.wait(WAIT):
            raise Cancelled("interrupted")
        return record(agent)

    runner, _ = make_runner(agents, execute, concurrency=1, clock=clock, deadline_s=50.0)
    records = runner.run()
    assert records["long"].error == "stopped: the run deadline (50 s) was reached"
    assert records["queued"].error == "not started: the run deadline (50 s) was reached"
    assert runner.stop_reason == "the run deadline (50 s) was reached"


def test_ctrl_c_raises_cancelled_keeps_what_finished_and_records_nothing_afterwards() -> None:
    agents = [spec("quick"), spec("stuck"), spec("never")]
    stuck_started, release = threading.Event(), threading.Event()
    started: list[str] = []

    def execute(agent: AgentSpec, deps: Mapping[str, AgentRecord]) -> AgentRecord:
        started.append(agent.id)
        if agent.id == "quick":
            assert stuck_started.wait(WAIT)
        if agent.id == "stuck":
            stuck_started.set()
            release.wait(WAIT)  # an agent that ignores the cancel and finishes after the run has ended
        return record(agent)

    finished: list[str] = []

    def on_finished(rec: AgentRecord) -> None:
        finished.append(rec.id)
        if rec.id == "quick":
            runner.cancel.set()  # Ctrl-C, once quick is saved and while stuck is running

    runner, _ = make_runner(agents, execute, concurrency=2, hooks=RunnerHooks(on_finished=on_finished))
    with pytest.raises(Cancelled):
        runner.run()
    assert list(runner.records) == ["quick"]
    release.set()
    for worker in [t for t in threading.enumerate() if t.name.startswith("sparc-agent-")]:
        worker.join(WAIT)
    assert finished == ["quick"]  # stuck finished after the run ended: not recorded
    assert "never" not in started  # nothing starts after Ctrl-C


def test_an_error_in_a_hook_ends_the_run_with_that_error() -> None:
    class DiskFull(OSError):
        pass

    def on_finished(rec: AgentRecord) -> None:
        raise DiskFull("no space left")

    agents = [spec(f"a{i}") for i in range(5)]
    runner, _ = make_runner(agents, lambda agent, deps: record(agent), concurrency=1,
                            hooks=RunnerHooks(on_finished=on_finished))
    with pytest.raises(DiskFull):
        runner.run()
    assert runner.cancel.is_set()
    assert len(runner.records) == 1


def test_hooks_are_called_one_at_a_time_even_from_many_workers() -> None:
    agents = [spec(f"r{i}") for i in range(200)] + [spec("sum", *[f"r{i}" for i in range(200)], phase=2)]
    busy = threading.Lock()
    overlaps: list[str] = []

    def on_finished(rec: AgentRecord) -> None:
        if not busy.acquire(blocking=False):
            overlaps.append(rec.id)  # another hook call is running right now
            return
        time.sleep(0.001)  # widen the window an overlapping call would fall into
        busy.release()

    runner, _ = make_runner(agents, lambda agent, deps: record(agent), concurrency=16,
                            hooks=RunnerHooks(on_finished=on_finished))
    records = runner.run()
    assert len(records) == 201 and records["sum"].status == "completed"
    assert overlaps == []
