"""polling: 1, 5, 20 and 100 Codex tasks submitted at once, sharing one poll budget (30 requests/minute).

Each run creates the tasks (creation is limited to 10 a minute, so not all of them are in flight at
once: `peak_in_flight` says how many were) and waits for all of them through the client's poller, which
reads every task's status from one `GET /tasks/list` per sweep and confirms a finished task with one
details request. Reports, in real-time seconds (measured / time scale):

- `seen_delay`: from a task finishing on the (simulated) server to the first answer that showed the
  client it had finished (a list page, or a task's details);
- `confirmed_delay`: to the details answer that the client acts on (text, diff, error);
- `polling_429`: 429s the server sent to list and details requests (target 0);
- requests per task: list pages and details requests;
- `budget_use`: poll requests sent / requests the budget allowed from the earliest possible finish (30 s
  after the first task was created) to the end (burst 5 + 0.5 a second): how much of it was left idle.

Delays are measured by the simulator (its monotonic clock, when it answered) and divided by the time scale;
p95 is the nearest-rank percentile (for 20 tasks: the second largest).

    python bench/polling.py [--counts 1,5,20,100] [--time-scale 0.1] [--repeat 3] [--seeds 1] [--per-task]

`--replay` runs the same scenario on a fake clock instead (the real `PollScheduler`, the simulator's seeded
durations, the creation times the client's limiter gives: 9 at once, then one every 6 s; each request takes
`--latency` real seconds, and the limiter's 10 ms of safety weigh what they weigh at `--time-scale`; the
service's limiter counts 429s): a fraction of a second a run, no network and no
thread wake-ups, to compare policies over many seeds (`--policy '{"sweep_gap_slots": 1.5}'`, `--headroom 0`).

With `--repeat N` each count runs N times; `median` gives the median of each figure over the runs. The tasks'
durations are seeded (the same prompts last the same); `--seeds 1,2,3` runs other draws of them as well.

`--per-task` turns the list sweep off (each task polled on its own, the behaviour before) for comparison.
"""

from __future__ import annotations

import argparse
import json
import statistics
import threading
import time
from typing import Any

from common import emit, local_sim_settings, machine

from sparc_cloud import defaults
from sparc_cloud.clients import codex_polling as polling
from sparc_cloud.clients.codex import make_codex
from sparc_cloud.clients.factory import ClientContext
from sparc_cloud.errors import Cancelled
from sparc_cloud.http.clock import FakeClock, RealClock
from sparc_cloud.http.ratelimit import RateLimit, RateLimiters
from sparc_cloud.redact import SecretRegistry
from sparc_cloud.sim import SimConfig, Simulator
from sparc_cloud.sim.codex_config import LATENCY
from sparc_cloud.sim.state import SimState

# How long a task lasts, in the service's seconds. The simulator's own range keeps a demo run short (30-90 s,
# so that 20 tasks submitted together finish within a minute of each other: a stress of the poll budget). Real
# Codex Cloud tasks take "between 1 and 30 minutes, depending on complexity" (OpenAI, "Introducing Codex",
# 2025-05-16): only tasks that long can be 20 in flight at once under 10 creates a minute.
SIM_DURATIONS = LATENCY["codex-task"]
CODEX_DURATIONS = (60.0, 1800.0)
DURATIONS = {"sim": SIM_DURATIONS, "codex": CODEX_DURATIONS}


def _durations(text: str) -> tuple[float, float]:
    if text in DURATIONS:
        return DURATIONS[text]
    lo, hi = (float(v) for v in text.split(","))
    return lo, hi


def _p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(0.95 * (len(ordered) - 1))))]


def _figures(values: list[float]) -> dict[str, float]:
    return {"mean": round(statistics.mean(values), 2), "p95": round(_p95(values), 2), "max": round(max(values), 2)}


def _sim_config(time_scale: float, seed: int, durations: tuple[float, float]) -> SimConfig:
    base = SimConfig(time_scale=time_scale, seed=seed)
    return base.model_copy(update={"latency": {**base.latency, "codex-task": durations}})


def one(count: int, time_scale: float, per_task: bool, seed: int,
        durations: tuple[float, float] = SIM_DURATIONS) -> dict[str, Any]:
    with Simulator(_sim_config(time_scale, seed, durations)) as sim:
        settings = local_sim_settings(sim)
        ctx = ClientContext(settings=settings, clock=RealClock(), secrets=SecretRegistry(), time_scale=time_scale)
        client = make_codex(ctx)
        client.list_polling = not per_task
        env_id = client.resolve_environment("memory-extension").id
        polls: list[int] = []
        lock = threading.Lock()

        def task(i: int) -> None:
            task_id = client.create_task(f"Project: bench\nComponent: part {i}\nImplement it.", environment_id=env_id,
                                         branch="main")
            _, n = client.wait(task_id, timeout_s=3600 * time_scale)
            with lock:
                polls.append(n)

        t0 = time.perf_counter()
        threads = [threading.Thread(target=task, args=(i,)) for i in range(count)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.perf_counter() - t0
        counters = sim.counters()
    tasks = counters["tasks"].values()
    seen = [t["seen_delay_s"] / time_scale for t in tasks]
    confirmed = [t["detection_delay_s"] / time_scale for t in tasks]
    requests = counters["requests"]
    return {
        "tasks": count,
        "seed": seed,
        "durations_s": list(durations),
        "completed": len(polls),
        "peak_in_flight": counters["peak_tasks_in_flight"],
        "seen_delay_s": _figures(seen),
        "confirmed_delay_s": _figures(confirmed),
        "polling_429": counters["rate_limited"].get("codex:poll", 0),
        "list_requests_per_task": round(requests.get("codex.list", 0) / count, 2),
        "details_requests_per_task": round(requests.get("codex.poll", 0) / count, 2),
        "budget_use": round((requests.get("codex.list", 0) + requests.get("codex.poll", 0))
                            / (5 + max(0.0, wall / time_scale - 30.0) * 30 / 60), 2),
        "wall_real_s": round(wall / time_scale, 1),
    }


POLL_KEY = ("codex", "poll", "*")


class _Replay:
    """`count` tasks on a fake clock: created as the bench creates them, polled by the real scheduler."""

    def __init__(self, count: int, seed: int, policy: dict[str, float], headroom: int, latency_s: float,
                 safety_s: float, durations: tuple[float, float] = SIM_DURATIONS) -> None:
        state = SimState(_sim_config(1.0, seed, durations))
        created = [0.0] * min(count, 9) + [6.0 * k for k in range(1, max(0, count - 9) + 1)]
        self.tasks = {f"t{i}": (created[i], created[i] + state.latency(
            "codex-task", f"Project: bench\nComponent: part {i}\nImplement it.")) for i in range(count)}
        self.pending = sorted((c, t) for t, (c, _) in self.tasks.items())
        self.latency_s = latency_s
        self.clock = _ReplayClock(self)
        self.server = RateLimiters(self.clock, {POLL_KEY: RateLimit(30, 5)})
        limiters = RateLimiters(self.clock, {POLL_KEY: RateLimit(30, 5)}, headroom=headroom, safety_s=safety_s)
        self.seen: dict[str, float] = {}
        self.confirmed: dict[str, float] = {}
        self.refused = self.lists = self.details = 0
        replay = self

        class Scheduler(polling.PollScheduler):
            def _forget(self, watch: polling._Watch) -> None:
                super()._forget(watch)
                if replay.over():
                    raise Cancelled("replay over")  # ends the scheduler's loop

        self.scheduler = Scheduler(self.fetch, lambda d: d == "completed", limiters=limiters, key=POLL_KEY,
                                   clock=self.clock, policy=polling.PollPolicy(**policy), list_page=self.list_page,
                                   status_of=str)
        self.created: set[str] = set()

    def create_due(self, until: float) -> None:
        while self.pending and self.pending[0][0] <= until:
            at, task_id = self.pending.pop(0)
            self.created.add(task_id)
            with self.scheduler._cond:
                self.scheduler._watches[task_id] = polling._Watch(task_id, started=at, last_poll=at)

    def over(self) -> bool:
        return not self.pending and not self.scheduler._watches

    def _request(self) -> None:
        self.clock.advance(self.latency_s / 2)
        if self.server.try_acquire(POLL_KEY, leeway_s=0.002) > 0:
            self.refused += 1

    def _status(self, task_id: str) -> str:
        return "completed" if self.clock.now() >= self.tasks[task_id][1] else "in_progress"

    def _updated(self, task_id: str) -> float:
        created, done = self.tasks[task_id]
        now = self.clock.now()
        return done if now >= done else created + 0.1 * (done - created) if now >= created + 0.1 * (
            done - created) else created

    def list_page(self, cursor: str | None, task_ids: frozenset[str]) -> polling.ListPage:
        self.lists += 1
        self._request()
        rows = sorted(self.created, key=lambda t: -self._updated(t))
        offset = int(cursor or 0)
        items = []
        for task_id in rows[offset: offset + 20]:
            status = self._status(task_id)
            if status == "completed":
                self.seen.setdefault(task_id, self.clock.now())
            items.append(polling.Sighting(task_id, status == "completed",
                                          self._updated(task_id) + self.clock.wall() - self.clock.now(), status))
        self.clock.advance(self.latency_s / 2)
        return polling.ListPage(items, str(offset + 20) if offset + 20 < len(rows) else None)

    def fetch(self, task_id: str) -> str:
        self.details += 1
        self._request()
        status = self._status(task_id)
        if status == "completed":
            self.seen.setdefault(task_id, self.clock.now())
            self.confirmed.setdefault(task_id, self.clock.now())
        self.clock.advance(self.latency_s / 2)
        return status

    def run(self) -> dict[str, Any]:
        self.create_due(0.0)
        self.scheduler._loop()  # returns when the last task is confirmed
        count = len(self.tasks)
        done = {t: d for t, (_, d) in self.tasks.items()}
        return {
            "tasks": count,
            "seen_delay_s": _figures([self.seen[t] - done[t] for t in done]),
            "confirmed_delay_s": _figures([self.confirmed[t] - done[t] for t in done]),
            "polling_429": self.refused,
            "list_requests_per_task": round(self.lists / count, 2),
            "details_requests_per_task": round(self.details / count, 2),
        }


class _ReplayClock(FakeClock):
    """Fake time that creates the replay's tasks as it passes their creation times."""

    def __init__(self, replay: _Replay) -> None:
        super().__init__(start=0.0)
        self.replay = replay

    def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            return
        end = self.now() + seconds
        while self.replay.pending and self.replay.pending[0][0] <= end:
            self.advance(max(0.0, self.replay.pending[0][0] - self.now()))
            self.replay.create_due(self.now())
        self.advance(max(0.0, end - self.now()))


def median_of(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The median of each figure over repeated runs of one count."""
    out: dict[str, Any] = {"tasks": runs[0]["tasks"], "runs": len(runs)}
    for key, value in runs[0].items():
        if key in ("tasks", "seed"):
            continue
        if isinstance(value, dict):
            out[key] = {k: round(statistics.median(r[key][k] for r in runs), 2) for k in value}
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            out[key] = round(statistics.median(r[key] for r in runs), 2)
        else:  # lists and strings (the durations drawn, names) are the same in every run
            out[key] = value
    out["confirmed_p95_each"] = [r["confirmed_delay_s"]["p95"] for r in runs]
    out["seen_p95_each"] = [r["seen_delay_s"]["p95"] for r in runs]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--counts", default="1,5,20,100")
    parser.add_argument("--time-scale", type=float, default=0.1)
    parser.add_argument("--repeat", type=int, default=1, help="runs per count (report their median)")
    parser.add_argument("--seeds", default=str(defaults.SIM_SEED),
                        help="simulator seeds (task durations), comma-separated: each is run --repeat times")
    parser.add_argument("--replay", action="store_true", help="replay on a fake clock (see above)")
    parser.add_argument("--policy", default="{}", help="--replay: PollPolicy fields, as JSON")
    parser.add_argument("--headroom", type=int, default=1, help="--replay: requests of the burst the client keeps back")
    parser.add_argument("--latency", type=float, default=0.03, help="--replay: real seconds a request takes")
    parser.add_argument("--per-task", action="store_true", help="poll each task on its own (no list sweep)")
    parser.add_argument("--durations", default="sim", type=_durations,
                        help="how long tasks last: 'sim' (30-90 s), 'codex' (1-30 min, the real service's) or LO,HI")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    if args.replay:
        policy = json.loads(args.policy)
        replays = [[_Replay(int(c), seed, policy, args.headroom, args.latency, 0.010 / args.time_scale,
                            args.durations).run() | {"seed": seed} for seed in seeds]
                   for c in args.counts.split(",")]
        emit({"benchmark": "polling (fake-clock replay)", "policy": policy, "headroom": args.headroom,
              "latency_s": args.latency, "runs": [r for rs in replays for r in rs],
              "median": [median_of(rs) for rs in replays] if len(seeds) > 1 else None})
        return
    runs = [[one(int(c), args.time_scale, args.per_task, seed, args.durations) for seed in seeds
             for _ in range(args.repeat)]
            for c in args.counts.split(",")]
    emit({
        "benchmark": "polling",
        "mode": "per-task details polls" if args.per_task else "one list sweep for all tasks, details to confirm",
        "time_scale": args.time_scale,
        "budget": "30 poll requests/minute per account (list pages and details alike), burst 5; creation "
                  "10/minute",
        "durations_s": list(args.durations),
        "runs": [r for rs in runs for r in rs],
        "median": [median_of(rs) for rs in runs] if len(runs[0]) > 1 else None,
        "targets": {"polling_429": 0, "confirmed_delay_p95_s_at_20": 3.0},
        "machine": machine(),
    })


if __name__ == "__main__":
    main()
