"""polling: 1, 5, 20 and 100 Codex tasks submitted at once, sharing one poll budget (30 requests/minute).

Each run creates the tasks (creation is limited to 10 a minute, so not all of them are in flight at
once: `peak_in_flight` says how many were) and waits for all of them through the client's poller, which
reads every task's status from one `GET /tasks/list` per sweep and confirms a finished task with one
details request. Reports, in real-time seconds (measured / time scale):

- `seen_delay`: from a task finishing on the (simulated) server to the first answer that showed the
  client it had finished (a list page, or a task's details);
- `confirmed_delay`: to the details answer that the client acts on (text, diff, error);
- `polling_429`: 429s the server sent to list and details requests (target 0);
- requests per task: list pages and details requests.

    python bench/polling.py [--counts 1,5,20,100] [--time-scale 0.02] [--per-task]

`--per-task` turns the list sweep off (each task polled on its own, the behaviour before) for comparison.
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time
from typing import Any

from common import emit, local_sim_settings, machine

from sparc_cloud.clients.codex import make_codex
from sparc_cloud.clients.factory import ClientContext
from sparc_cloud.http.clock import RealClock
from sparc_cloud.redact import SecretRegistry
from sparc_cloud.sim import SimConfig, Simulator


def _p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(0.95 * (len(ordered) - 1))))]


def _figures(values: list[float]) -> dict[str, float]:
    return {"mean": round(statistics.mean(values), 2), "p95": round(_p95(values), 2), "max": round(max(values), 2)}


def one(count: int, time_scale: float, per_task: bool) -> dict[str, Any]:
    with Simulator(SimConfig(time_scale=time_scale)) as sim:
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
        "completed": len(polls),
        "peak_in_flight": counters["peak_tasks_in_flight"],
        "seen_delay_s": _figures(seen),
        "confirmed_delay_s": _figures(confirmed),
        "polling_429": counters["rate_limited"].get("codex:poll", 0),
        "list_requests_per_task": round(requests.get("codex.list", 0) / count, 2),
        "details_requests_per_task": round(requests.get("codex.poll", 0) / count, 2),
        "wall_real_s": round(wall / time_scale, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--counts", default="1,5,20,100")
    parser.add_argument("--time-scale", type=float, default=0.02)
    parser.add_argument("--per-task", action="store_true", help="poll each task on its own (no list sweep)")
    args = parser.parse_args()
    emit({
        "benchmark": "polling",
        "mode": "per-task details polls" if args.per_task else "one list sweep for all tasks, details to confirm",
        "time_scale": args.time_scale,
        "budget": "30 poll requests/minute per account (list pages and details alike), burst 5; tasks last "
                  "30-90 s; creation 10/minute",
        "runs": [one(int(c), args.time_scale, args.per_task) for c in args.counts.split(",")],
        "targets": {"polling_429": 0, "seen_delay_p95_s_at_20": 3.0},
        "machine": machine(),
    })


if __name__ == "__main__":
    main()
