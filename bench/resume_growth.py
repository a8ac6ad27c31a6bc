"""Journal growth and memory of resumes on a large run folder.

Runs the memory-extension project on the simulator with every research agent answering ~10 MB (the
simulator's `huge` fault), so the run folder is tens of MB, then resumes it several times (no-op: every agent
is reused). Each run is its own process; prints the journal's size after each and the resume's peak RSS.
Target: the journal does not grow on a no-op resume, and a resume's peak memory stays proportional to one
copy of the run (not to the journal's history).

    python bench/resume_growth.py [--resumes 2] [--huge-agents 4]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = ("import resource, subprocess, sys\n"
         "code = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode\n"
         "print(code, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n")


def run_measured(args: list[str]) -> tuple[int, float]:
    """Exit code and peak RSS (MB) of one `sparc-cloud` process."""
    out = subprocess.run([sys.executable, "-c", CHILD, sys.executable, "-m", "sparc_cloud", *args],
                         capture_output=True, text=True, check=True).stdout.split()
    return int(out[0]), int(out[1]) / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--resumes", type=int, default=2)
    parser.add_argument("--huge-agents", type=int, default=4, help="research agents answering ~10 MB (1-4)")
    ns = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="sparc-bench-resume-"))
    scenario = work / "huge.toml"
    scenario.write_text("".join(f'[[faults]]\nendpoint = "gemini.generate"\nmodel = "gemini-2.5-flash"\nat_call = {i}\n'
                                'responses = ["huge"]\n' for i in range(1, ns.huge_agents + 1)), encoding="utf-8")
    out = work / "run"
    base = ["run", "--project", "memory-extension", "--backend", "sim", "--sim-time-scale", "0.002", "--output",
            str(out), "--no-progress", "--phases", "1", "--scenario", str(scenario)]
    code, rss = run_measured(base)
    rows = [{"session": "run", "exit": code, "journal_mb": round((out / "journal.jsonl").stat().st_size / 1e6, 2),
             "bundle_mb": round((out / "bundle.json").stat().st_size / 1e6, 2), "peak_rss_mb": round(rss, 1)}]
    for i in range(ns.resumes):
        code, rss = run_measured([*base, "--resume"])
        rows.append({"session": f"resume {i + 1}", "exit": code,
                     "journal_mb": round((out / "journal.jsonl").stat().st_size / 1e6, 2),
                     "bundle_mb": round((out / "bundle.json").stat().st_size / 1e6, 2), "peak_rss_mb": round(rss, 1)})
    print(json.dumps({"benchmark": "resume_growth", "huge_agents": ns.huge_agents, "sessions": rows,
                      "journal_growth_mb": round(rows[-1]["journal_mb"] - rows[0]["journal_mb"], 2),
                      "python": sys.version.split()[0], "cpus": os.cpu_count()}, indent=2))


if __name__ == "__main__":
    main()
