"""SIGKILL at random moments across whole runs, each followed by `--resume`: what is redone, what is bought twice.

A simulator runs in this process (its Codex tasks outlive the killed runs, as the real cloud's do); each
`sparc-cloud run --backend sim` points at it through SPARC_SIM_URL and is killed after a random delay, then
resumed, until it finishes. Prints the kills, the agents run again after they had finished (an agent with
more than one result line in the journal), Codex tasks created against phase-4 agents, and whether every
bundle left by a kill parsed. Target: 0 redone, creates = phase-4 agents (+ tasks that really failed: none
here), every bundle parses.

    python bench/kill_resume.py [--kills 20] [--seed 1] [--time-scale 0.1]
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from sparc_cloud.sim import SimConfig, Simulator


def record_lines(out: Path) -> list[str]:
    """Agent ids of the journal's result lines."""
    path = out / "journal.jsonl"
    ids = []
    for line in path.read_text(encoding="utf-8").splitlines() if path.exists() else []:
        try:
            item = json.loads(line)
        except ValueError:
            continue
        if "record" in item:
            ids.append(item["record"]["id"])
    return ids


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--time-scale", type=float, default=0.1)
    ns = parser.parse_args()
    rng = random.Random(ns.seed)  # noqa: S311 - kill moments, not crypto
    work = Path(tempfile.mkdtemp(prefix="sparc-bench-kills-"))
    out = work / "run"
    kills, bundles_ok, sessions = 0, 0, 0
    with Simulator(SimConfig(time_scale=ns.time_scale)) as sim:
        sim.write_credentials(work / "creds")
        env = {**os.environ, "SPARC_SIM_URL": sim.url, "SPARC_SIM_CREDS": str(work / "creds")}
        code = None
        while code != 0:
            args = [sys.executable, "-m", "sparc_cloud", "run", "--project", "memory-extension", "--backend", "sim",
                    "--output", str(out), "--no-progress", *(["--resume"] if sessions else [])]
            proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            sessions += 1
            if kills < ns.kills:
                time.sleep(rng.uniform(0.5, 2.0))  # a random moment: that is the point of this benchmark
                if proc.poll() is None:
                    proc.send_signal(signal.SIGKILL)
                    proc.wait()
                    kills += 1
                    try:
                        json.loads((out / "bundle.json").read_text(encoding="utf-8"))
                        bundles_ok += 1
                    except (OSError, ValueError):
                        pass
                    continue
            code = proc.wait()
        lines = record_lines(out)
        counters = sim.counters()
    per_agent = collections.Counter(lines)
    print(json.dumps({
        "benchmark": "kill_resume", "kills": kills, "sessions": sessions, "final_exit": code,
        "bundles_parsed_after_kills": bundles_ok,
        "agents": len(per_agent), "finished_agents_redone": sum(n - 1 for n in per_agent.values()),
        "codex_tasks_created": counters.get("codex_tasks_created", len(counters["tasks"])),
        "codex_create_requests": counters["requests"].get("codex.create", 0),
        "phase_4_agents": sum(1 for aid in per_agent if aid.startswith("p4-")),
        "seed": ns.seed, "time_scale": ns.time_scale,
    }, indent=2))


if __name__ == "__main__":
    main()
