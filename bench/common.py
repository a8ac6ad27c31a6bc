"""Helpers the benchmarks share: a simulator aimed at by real clients, ideal schedules, JSON output."""

from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from sparc_cloud.http.ratelimit import RateLimit
from sparc_cloud.settings import Settings
from sparc_cloud.sim import Simulator


def sim_settings(sim_url: str, creds: dict[str, Path], **extra: Any) -> Settings:
    """Settings aiming both clients at a simulator running in another process (`start_external_sim`)."""
    from sparc_cloud.sim.server import client_settings

    return Settings.model_validate({**client_settings(sim_url, creds), **extra})


def local_sim_settings(sim: Simulator, **extra: Any) -> Settings:
    """Settings aiming both clients at an in-process simulator."""
    return Settings.model_validate({**sim.client_settings(temp_dir("sparc-bench-home-")), **extra})


def digest(text: str) -> str:
    """sha256 hex of a prompt, as the simulator records it."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class Gcra:
    """The ideal client limiter: the earliest time each next request may be sent."""

    def __init__(self, limit: RateLimit, time_scale: float) -> None:
        self.interval = limit.interval(time_scale)
        self.tolerance = (limit.burst - 1) * self.interval
        self.tat = 0.0

    def slot(self, ready: float) -> float:
        tat = max(self.tat, ready)
        start = max(ready, tat - self.tolerance)
        self.tat = tat + self.interval
        return start


def machine() -> dict[str, Any]:
    """Where the figures were taken."""
    return {"python": platform.python_version(), "machine": platform.machine(), "cpus": os.cpu_count(),
            "system": platform.system()}


def emit(result: dict[str, Any]) -> None:
    """Print the benchmark's one JSON object."""
    print(json.dumps(result, indent=2))


def start_external_sim(time_scale: float, port_file: Path) -> subprocess.Popen[bytes]:
    """`sparc-cloud sim serve` in its own process (so the orchestrator's CPU and RSS are measured alone)."""
    code = (
        "import sys, json; from pathlib import Path; from sparc_cloud.sim import Simulator, SimConfig\n"
        f"sim = Simulator(SimConfig(time_scale={time_scale}))\n"
        f"paths = sim.write_credentials(Path({str(port_file.parent)!r}))\n"
        f"Path({str(port_file)!r}).write_text(json.dumps({{'url': sim.url, 'gemini': str(paths['gemini']), "
        "'codex': str(paths['codex'])}))\n"
        "sim.serve_forever()\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code])  # noqa: S603 - our own interpreter and code
    for _ in range(200):
        if port_file.exists() and port_file.read_text():
            return proc
        time.sleep(0.05)
    proc.kill()
    raise RuntimeError("the simulator did not start")


def temp_dir(prefix: str) -> Path:
    """A fresh temporary folder."""
    return Path(tempfile.mkdtemp(prefix=prefix))


__all__ = ["Gcra", "Simulator", "digest", "emit", "machine", "sim_settings", "start_external_sim", "temp_dir"]
