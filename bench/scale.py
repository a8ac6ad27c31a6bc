"""scale: synthetic projects of N research agents on one flash limit (60/min, burst 10).

For each N (default 100, 1000, 5000) a child process runs the real orchestrator (Runner + AgentExecutor
+ GeminiClient + journal) against `sparc-cloud`'s simulator running in another process, and reports:
makespan against the rate-limit bound (target <= 1.05), 429s received (target 0), peak RSS of the
orchestrator (target < 250 MB at 5,000), orchestrator CPU per agent (target < 2 ms), and checkpoint bytes
written per agent (must stay flat as N grows).

Because CPU figures depend on the host, each run also measures the floor under them: the same requests (same
prompts, URL, headers, pacing by the same limiter, same number of threads) sent with bare urllib3 and
`json.loads`, nothing else. `cpu_ms_per_agent - http_floor_cpu_ms` is what sparc-cloud itself adds per agent.

    python bench/scale.py [--sizes 100,1000,5000] [--time-scale 0.05]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from common import Gcra, digest, emit, machine, sim_settings, start_external_sim, temp_dir

from sparc_cloud.agents import AgentExecutor
from sparc_cloud.backends.assemble import default_limits
from sparc_cloud.backends.gemini import GeminiBackend
from sparc_cloud.clients.factory import ClientContext
from sparc_cloud.clients.gemini import GeminiClient, make_gemini
from sparc_cloud.events import EventBus
from sparc_cloud.http.clock import RealClock
from sparc_cloud.phases import build_plan, render_prompt
from sparc_cloud.project import Component, Project, Research, load_templates
from sparc_cloud.redact import SecretRegistry
from sparc_cloud.runfolder import RunFolder
from sparc_cloud.runner import Runner, RunnerHooks


def reference_loop_s() -> float:
    """CPU seconds of a fixed pure-Python loop: how fast this host is (about 0.15 s on a typical laptop)."""
    t0 = time.process_time()
    sum(i * i for i in range(3_000_000))
    return time.process_time() - t0


def http_floor(gemini: GeminiClient, prompts: list[str], url: str, concurrency: int) -> dict[str, Any]:
    """CPU per request of the bare exchange: urllib3 POST of the client's body, `json.loads` of the answer.

    Paced by the run's own limiter (so the server sees the same rate) on `concurrency` threads."""
    import urllib3

    assert gemini.oauth is not None
    pool = urllib3.PoolManager(maxsize=concurrency)
    key = ("gemini", "generate", "gemini-2.5-flash")
    project = gemini.project_id()
    todo = list(enumerate(prompts))
    lock = threading.Lock()
    statuses: list[int] = []

    def work() -> None:
        while True:
            with lock:
                if not todo:
                    return
                i, prompt = todo.pop()
            gemini.limiters.acquire(key)
            body = {"model": "gemini-2.5-flash", "project": project, "user_prompt_id": f"floor-{i}",
                    "request": {"contents": [{"role": "user", "parts": [{"text": prompt}]}],
                                "generationConfig": {}, "session_id": gemini.session_id}}
            resp = pool.request("POST", url, body=json.dumps(body).encode(), timeout=60,
                                headers={"Content-Type": "application/json",
                                         "Authorization": f"Bearer {gemini.oauth.token()}"})  # type: ignore[union-attr]
            json.loads(resp.data)
            with lock:
                statuses.append(resp.status)

    threads = [threading.Thread(target=work) for _ in range(min(concurrency, len(prompts)))]
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (cpu1.ru_utime + cpu1.ru_stime) - (cpu0.ru_utime + cpu0.ru_stime)
    return {"requests": len(statuses), "not_200": sum(1 for s in statuses if s != 200),
            "cpu_ms_per_request": round(cpu * 1000 / len(statuses), 3)}


def child(n: int, time_scale: float, concurrency: int) -> dict[str, Any]:
    work = temp_dir("sparc-scale-")
    port_file = work / "sim.json"
    sim_proc = start_external_sim(time_scale, port_file)
    try:
        info = json.loads(port_file.read_text())
        creds = {"gemini": Path(info["gemini"]), "codex": Path(info["codex"])}
        settings = sim_settings(info["url"], creds, concurrency=concurrency)
        project = Project(name="scale", goal="scale test", research=Research(topics=[f"topic {i}" for i in range(n)]),
                          components=[Component(name="c", description="c")])
        plan = build_plan(project, load_templates(project))
        agents = [a for a in plan.agents if a.template == "research"]
        secrets = SecretRegistry()
        clock = RealClock(threading.Event())
        ctx = ClientContext(settings=settings, clock=clock, secrets=secrets, time_scale=time_scale,
                            pool_size=concurrency)
        gemini = make_gemini(ctx)
        folder = RunFolder(work / "run")
        folder.prepare()
        executor = AgentExecutor(plan, {"gemini": GeminiBackend("gemini", gemini, {})}, bus=EventBus(secrets), clock=clock,
                                 secrets=secrets, reuse={}, agent_timeout_s=3600)
        hooks = RunnerHooks(on_finished=lambda r: folder.append_journal("scale", r))
        gemini.project_id()
        cpu0 = resource.getrusage(resource.RUSAGE_SELF)
        t0 = time.perf_counter()
        records = Runner(agents, executor, prior={}, concurrency=concurrency, cancel=clock.cancel, clock=clock,
                         hooks=hooks).run()
        makespan = time.perf_counter() - t0
        cpu1 = resource.getrusage(resource.RUSAGE_SELF)
        import requests

        counters = requests.get(info["url"] + "/_sim/counters", timeout=10).json()
        served = requests.get(info["url"] + "/_sim/served", timeout=30).json()["served"]
        service = {s["prompt_sha256"]: s["service_s"] for s in served if s["kind"] == "gemini"}
        gcra = Gcra(default_limits()[("gemini", "generate", "gemini-2.5-flash")], time_scale)
        bound = max(gcra.slot(0.0) + service[digest(render_prompt(plan, a, {})[1])] for a in agents)
        cpu = (cpu1.ru_utime + cpu1.ru_stime) - (cpu0.ru_utime + cpu0.ru_stime)
        floor_prompts = [render_prompt(plan, a, {})[1] for a in agents[: min(n, 300)]]
        floor = http_floor(gemini, floor_prompts, f"{gemini.config.base_url.rstrip('/')}:generateContent",
                           concurrency)
        return {
            "agents": n,
            "completed": sum(1 for r in records.values() if r.status == "completed"),
            "makespan_s": round(makespan, 3),
            "rate_limit_bound_s": round(bound, 3),
            "ratio": round(makespan / bound, 4),
            "rate_limited_429": counters["rate_limited_total"],
            "rate_limited_log": counters["rate_limited_log"],
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "cpu_ms_per_agent": round(cpu * 1000 / n, 3),
            "cpu_user_ms_per_agent": round((cpu1.ru_utime - cpu0.ru_utime) * 1000 / n, 3),
            "cpu_sys_ms_per_agent": round((cpu1.ru_stime - cpu0.ru_stime) * 1000 / n, 3),
            "http_floor_cpu_ms": floor["cpu_ms_per_request"],
            "sparc_cloud_own_cpu_ms_per_agent": round(cpu * 1000 / n - floor["cpu_ms_per_request"], 3),
            "http_floor_requests": floor["requests"],
            "http_floor_not_200": floor["not_200"],
            "checkpoint_bytes_per_agent": round(folder.journal_bytes / n, 1),
            "reference_loop_cpu_s": round(reference_loop_s(), 3),
            "peak_concurrency_at_server": counters["peak_concurrency"],
        }
    finally:
        sim_proc.terminate()
        sim_proc.wait(timeout=10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default="100,1000,5000")
    parser.add_argument("--time-scale", type=float, default=0.05)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.time_scale, args.concurrency)))
        return
    rows = []
    for n in (int(x) for x in args.sizes.split(",")):
        out = subprocess.run(  # noqa: S603 - our own script
            [sys.executable, __file__, "--child", str(n), "--time-scale", str(args.time_scale),
             "--concurrency", str(args.concurrency)],
            capture_output=True, text=True, check=True, env={**os.environ, "PYTHONWARNINGS": "ignore"},
        )
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    emit({
        "benchmark": "scale",
        "time_scale": args.time_scale,
        "limit": "gemini-2.5-flash 60/min, burst 10",
        "concurrency": args.concurrency,
        "runs": rows,
        "targets": {"ratio_max": 1.05, "rate_limited_429": 0, "peak_rss_mb_at_5000_max": 250,
                    "cpu_ms_per_agent_max": 2.0, "checkpoint_bytes_per_agent": "flat"},
        "machine": machine(),
    })


if __name__ == "__main__":
    main()
