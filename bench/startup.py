"""startup: wall time of `sparc-cloud --help` and `sparc-cloud projects` against a bare `python -c pass`.

Target: under 0.25 s on a typical laptop (heavy imports are lazy).

    python bench/startup.py [--repeat 15]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import time

from common import emit, machine


def median_wall(cmd: list[str], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        subprocess.run(cmd, capture_output=True, check=True)  # noqa: S603 - fixed commands
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=15)
    args = parser.parse_args()
    exe = shutil.which("sparc-cloud") or "sparc-cloud"
    bare = median_wall([sys.executable, "-c", "pass"], args.repeat)
    help_s = median_wall([exe, "--help"], args.repeat)
    projects_s = median_wall([exe, "projects"], args.repeat)
    emit({
        "benchmark": "startup",
        "python_c_pass_s": round(bare, 4),
        "help_s": round(help_s, 4),
        "projects_s": round(projects_s, 4),
        "help_ratio": round(help_s / bare, 2),
        "projects_ratio": round(projects_s / bare, 2),
        "targets": {"help_s_max": 0.25, "projects_s_max": 0.25},
        "machine": machine(),
    })


if __name__ == "__main__":
    main()
