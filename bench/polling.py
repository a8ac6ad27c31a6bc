"""polling: 1, 5 and 20 Codex tasks in flight at once, sharing one poll budget (30 polls/minute).

Reports polls per task, polling 429s (target 0), and the mean and p95 delay between a task finishing on
the (simulated) server and the client noticing, in real-time seconds (measured / time scale).

    python bench/polling.py [--counts 1,5,20] [--time-scale 0.02]
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time
from typing import Any

from common import emit, local_sim_settings, machine

from sparc_cloud.clients.factory import ClientContext, make_codex
from sparc_cloud.http.clock import RealClock
from sparc_cloud.redact import SecretRegistry
from sparc_cloud.sim import SimConfig, Simulator


def one(count: int, time_scale: float) -> dict[str, Any]:
    with Simulator(SimConfig(time_scale=time_scale)) as sim:
        settings = local_sim_settings(sim)
        ctx = ClientContext(settings=settings, clock=RealClock(), secrets=SecretRegistry(), time_scale=time_scale)
        client = make_codex(ctx)
        env_id = client.resolve_environment("memory-extension").id
        polls: list[int] = []
        lock = threading.Lock()

        def task(i: int) -> None:
            task_id = client.create_task(f"Project: bench\nComponent: part {i}\nImplement it.", environment_id=env_id)
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
    delays = sorted(t["detection_delay_s"] / time_scale for t in counters["tasks"].values())
    p95 = delays[min(len(delays) - 1, int(round(0.95 * (len(delays) - 1))))]
    return {
        "tasks": count,
        "completed": len(polls),
        "polls_per_task": round(statistics.mean(polls), 2),
        "polling_429": counters["rate_limited"].get("codex:poll", 0),
        "detection_delay_mean_s": round(statistics.mean(delays), 2),
        "detection_delay_p95_s": round(p95, 2),
        "wall_real_s": round(wall / time_scale, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--counts", default="1,5,20")
    parser.add_argument("--time-scale", type=float, default=0.02)
    args = parser.parse_args()
    emit({
        "benchmark": "polling",
        "time_scale": args.time_scale,
        "budget": "30 polls/minute per account, burst 5; tasks last 30-90 s",
        "runs": [one(int(c), args.time_scale) for c in args.counts.split(",")],
        "targets": {"polling_429": 0},
        "machine": machine(),
    })


if __name__ == "__main__":
    main()
