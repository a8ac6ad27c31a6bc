"""The critical path of a run: the chain of dependent agents that no amount of parallelism can shorten.

The agents form a DAG (`depends_on`). Scheduled as early as their dependencies allow, each agent taking the time it
took (`latency_s`), the run cannot finish before the longest chain of dependent agents: that chain is the critical
path and its length the lower bound the DAG sets on the makespan. The measured makespan divided by that bound says
how much the orchestration lost beyond it (1.0: nothing). The time those agents spent throttled (waiting on a rate
limiter or a 429's backoff) is time the path could win back with more quota.

`schedule` is the general form: given each agent's duration and, optionally, a `slot` that delays a start (the
benchmarks pass an ideal rate limiter there), it computes the earliest start and finish of every agent and the
chain that gates the last one."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sparc_cloud.bundle import AgentRecord, Bundle


@dataclass(frozen=True)
class Node:
    """One agent as the schedule sees it."""

    id: str
    depends_on: tuple[str, ...] = ()
    duration_s: float = 0.0
    throttled_s: float = 0.0


@dataclass(frozen=True)
class Step:
    """One agent on the critical path, with its earliest start and finish (seconds from the run's start)."""

    agent_id: str
    start_s: float
    finish_s: float
    duration_s: float
    throttled_s: float

    def to_dict(self) -> dict[str, Any]:
        """Plain data for JSON."""
        return {"id": self.agent_id, "start_s": round(self.start_s, 3), "finish_s": round(self.finish_s, 3),
                "duration_s": round(self.duration_s, 3), "throttled_s": round(self.throttled_s, 3)}


@dataclass(frozen=True)
class Schedule:
    """Earliest start and finish of every agent, and the chain that gates the last finish."""

    start: dict[str, float]
    finish: dict[str, float]
    path: list[Step] = field(default_factory=list)

    @property
    def length_s(self) -> float:
        """When the last agent finishes: the lower bound on the makespan."""
        return max(self.finish.values(), default=0.0)


Slot = Callable[[Node, float], float]  # (agent, ready at) -> may start at (>= ready at)


def schedule(nodes: Sequence[Node], slot: Slot | None = None) -> Schedule:
    """Schedule `nodes` as early as their dependencies (and `slot`, if given) allow.

    A dependency that is not among `nodes` (an agent of an earlier session) counts as done at time 0. Among the
    agents whose dependencies are done, the one that became ready first goes first (ties: the order given), which
    is what a rate limiter that serves requests in arrival order sees. Raises ValueError on a dependency cycle."""
    ids = {n.id for n in nodes}
    pending = list(nodes)
    start: dict[str, float] = {}
    finish: dict[str, float] = {}
    gate: dict[str, str | None] = {}
    while pending:
        ready = [n for n in pending if all(d in finish or d not in ids for d in n.depends_on)]
        if not ready:
            raise ValueError("the agents' dependencies form a cycle: " + ", ".join(n.id for n in pending))

        def ready_at(n: Node) -> float:
            return max((finish[d] for d in n.depends_on if d in finish), default=0.0)

        node = min(ready, key=ready_at)
        pending.remove(node)
        at = ready_at(node)
        begin = slot(node, at) if slot is not None else at
        start[node.id], finish[node.id] = begin, begin + node.duration_s
        deps = [d for d in node.depends_on if d in finish]
        gate[node.id] = max(deps, key=lambda d: finish[d]) if deps else None
    if not finish:
        return Schedule(start, finish)
    by_id = {n.id: n for n in nodes}
    last: str | None = max(finish, key=lambda a: finish[a])
    chain: list[Step] = []
    while last is not None:
        n = by_id[last]
        chain.append(Step(n.id, start[n.id], finish[n.id], n.duration_s, n.throttled_s))
        last = gate[last]
    return Schedule(start, finish, list(reversed(chain)))


@dataclass(frozen=True)
class CriticalPath:
    """A run's critical path, the lower bound it sets, the measured makespan and their ratio."""

    steps: list[Step]
    lower_bound_s: float
    makespan_s: float | None

    @property
    def agent_ids(self) -> list[str]:
        """The agents on the path, first to last."""
        return [s.agent_id for s in self.steps]

    @property
    def ratio(self) -> float | None:
        """Measured makespan / lower bound (1.0: the run lost nothing beyond its critical path)."""
        if self.makespan_s is None or self.lower_bound_s <= 0:
            return None
        return self.makespan_s / self.lower_bound_s

    @property
    def throttled_s(self) -> float:
        """Time the agents on the path spent waiting for a rate limiter or a 429's backoff."""
        return sum(s.throttled_s for s in self.steps)

    def to_dict(self) -> dict[str, Any]:
        """The fields `report --json` prints."""
        ratio = self.ratio
        return {
            "critical_path": self.agent_ids,
            "critical_path_steps": [s.to_dict() for s in self.steps],
            "lower_bound_s": round(self.lower_bound_s, 3),
            "makespan_s": round(self.makespan_s, 3) if self.makespan_s is not None else None,
            "ratio": round(ratio, 4) if ratio is not None else None,
            "throttled_on_critical_path_s": round(self.throttled_s, 3),
        }


def _seconds(stamp: str | None) -> float | None:
    if not stamp:
        return None
    try:
        return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def session_records(bundle: Bundle) -> list[AgentRecord]:
    """The agents of the latest session that ran any (not reused, not skipped, started in that session): a
    session that only reused earlier results (a no-op `--resume`) leaves the one before it in view."""
    # A reused record keeps the timestamps of the session that ran it, so it falls in that session's window.
    candidates = [r for r in bundle.records().values() if r.status != "skipped"]
    starts = sorted(s for session in bundle.sessions if (s := _seconds(session.started_at)) is not None)
    if not starts:
        return [r for r in candidates if not r.reused]
    for i in range(len(starts) - 1, -1, -1):
        since, until = starts[i], (starts[i + 1] if i + 1 < len(starts) else None)
        picked = [r for r in candidates
                  if (begun := _seconds(r.started_at)) is None
                  or (begun >= since and (until is None or begun < until))]
        if picked:
            return picked
    return []


def measured_makespan(records: Iterable[AgentRecord]) -> float | None:
    """First start to last finish of these records, from their timestamps (None without any)."""
    starts = [s for r in records if (s := _seconds(r.started_at)) is not None]
    ends = [e for r in records if (e := _seconds(r.finished_at)) is not None]
    if not starts or not ends:
        return None
    return max(0.0, max(ends) - min(starts))


def from_records(records: Sequence[AgentRecord], makespan_s: float | None = None,
                 order: Mapping[str, int] | None = None) -> CriticalPath | None:
    """The critical path of these agents, each taking its measured `latency_s`; None when there are none.

    `makespan_s` defaults to first start to last finish of the records' timestamps; `order` (agent id -> plan
    position) breaks ties the way the plan lists the agents."""
    if not records:
        return None
    ranked = sorted(records, key=lambda r: (order or {}).get(r.id, 0)) if order else list(records)
    nodes = [Node(r.id, tuple(r.depends_on), max(0.0, r.latency_s), max(0.0, r.throttled_s)) for r in ranked]
    plan = schedule(nodes)
    made = makespan_s if makespan_s is not None else measured_makespan(records)
    return CriticalPath(plan.path, plan.length_s, made)


def from_bundle(bundle: Bundle) -> CriticalPath | None:
    """The critical path of the bundle's latest session; its makespan is the wall time the run recorded (first
    dispatch to end), else first start to last finish of its agents (a run still going)."""
    records = session_records(bundle)
    order = {a.id: i for i, a in enumerate(a for p in bundle.phases for a in p.agents)}
    wall = bundle.totals.get("wall_time_s") if bundle.finished_at else None
    return from_records(records, float(wall) if isinstance(wall, int | float) and wall else None, order)


@dataclass(frozen=True)
class Progress:
    """One agent of a run in progress, for `time_left`: done (with its latency), or not (with its time so far)."""

    id: str
    depends_on: tuple[str, ...]
    model: str
    done: bool
    latency_s: float = 0.0
    elapsed_s: float = 0.0
    typical_s: float = 0.0  # the model's typical latency, to scale from other models' results (0: unknown)


def expected_durations(items: Sequence[Progress]) -> dict[str, float] | None:
    """How long each agent not done is expected to take in all: the mean latency of the finished agents of its
    model; for a model with no result yet, its typical latency times how the finished agents compared with
    theirs (else the mean of all finished agents). None while nothing has finished to estimate from."""
    samples: dict[str, list[float]] = {}
    for item in items:
        if item.done:
            samples.setdefault(item.model, []).append(item.latency_s)
    overall = [x for xs in samples.values() for x in xs]
    if not overall:
        return None
    ratios = [i.latency_s / i.typical_s for i in items if i.done and i.typical_s > 0]
    pace = sum(ratios) / len(ratios) if ratios else None
    out: dict[str, float] = {}
    for item in items:
        if item.done:
            continue
        seen = samples.get(item.model)
        if seen:
            out[item.id] = sum(seen) / len(seen)
        elif pace is not None and item.typical_s > 0:
            out[item.id] = pace * item.typical_s
        else:
            out[item.id] = sum(overall) / len(overall)
    return out


def time_left(items: Sequence[Progress]) -> float | None:
    """Seconds until the last agent should finish: the agents not done, each taking its expected duration
    (`expected_durations`) less the time it has run, scheduled along their dependencies. 0.0 when all are done;
    None while nothing has finished to estimate from."""
    left = [i for i in items if not i.done]
    if not left:
        return 0.0
    expected = expected_durations(items)
    if expected is None:
        return None
    waiting = {i.id for i in left}
    nodes = [Node(i.id, tuple(d for d in i.depends_on if d in waiting), max(expected[i.id] - i.elapsed_s, 0.0))
             for i in left]
    try:
        return schedule(nodes).length_s
    except ValueError:
        return None


__all__ = ["CriticalPath", "Node", "Progress", "Schedule", "Step", "from_bundle", "from_records", "measured_makespan",
           "expected_durations", "schedule", "session_records", "time_left"]
