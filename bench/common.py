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
    """Settings aiming both clients at a simulator (in-process or `sparc-cloud sim serve`)."""
    from sparc_cloud.sim.state import SIM_OAUTH_CLIENT_ID, SIM_OAUTH_CLIENT_SECRET

    values: dict[str, Any] = {
        "gemini_base_url": sim_url + "/v1internal", "gemini_api_base_url": sim_url,
        "gemini_oauth_token_url": sim_url + "/token", "gemini_creds": creds["gemini"],
        "gemini_oauth_client_id": SIM_OAUTH_CLIENT_ID, "gemini_oauth_client_secret": SIM_OAUTH_CLIENT_SECRET,
        "codex_base_url": sim_url + "/backend-api", "codex_auth": creds["codex"], "codex_refresh": True,
        "codex_refresh_url": sim_url + "/oauth/token", "gemini_refresh_command": "",
    }
    values.update(extra)
    return Settings.model_validate(values)


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
