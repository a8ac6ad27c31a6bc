"""Helpers for driving the CLI against the simulator in tests."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from sparc_cloud.cli import app

FAST = "0.002"
# The smallest valid project file: one research topic, one component.
MINIMAL = '''name = "p"
goal = "g"
[research]
topics = ["t"]
[[components]]
name = "c"
description = "d"
'''
_runner = CliRunner()


def cli(*args: str) -> tuple[int, str]:
    """Run the CLI in-process; (exit code, stdout and stderr)."""
    result = _runner.invoke(app, list(args))
    return result.exit_code, result.output


def sim_run(out: Path, *extra: str, project: str = "memory-extension") -> tuple[int, str]:
    """`sparc-cloud run` on the simulator at the test time scale."""
    return cli("run", "--project", project, "--backend", "sim", "--sim-time-scale", FAST,
               "--output", str(out), "--no-progress", *extra)


def bundle(out: Path) -> dict[str, Any]:
    """The run folder's bundle."""
    data: dict[str, Any] = json.loads((out / "bundle.json").read_text(encoding="utf-8"))
    return data


def agents(data: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Every agent record of a bundle by id."""
    return {a["id"]: a for p in data["phases"] for a in p["agents"]}


def journal_ids(out: Path) -> list[str]:
    """Agent ids in the journal, in order (damaged lines skipped)."""
    ids = []
    for line in (out / "journal.jsonl").read_text(encoding="utf-8").splitlines():
        try:
            ids.append(json.loads(line)["record"]["id"])
        except (ValueError, KeyError):
            continue
    return ids


def scenario(tmp_path: Path, text: str, name: str = "scenario.toml") -> str:
    """Write a simulator scenario file and return its path."""
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


def serve(*args: str, sigint_ignored: bool = False) -> subprocess.Popen[str]:
    """`sparc-cloud ARGS` as a process of its own (a command that serves until stopped). With sigint_ignored it
    starts as a non-interactive shell starts a background job: SIGINT ignored."""
    def ignore_sigint() -> None:
        signal.signal(signal.SIGINT, signal.SIG_IGN)

    return subprocess.Popen([sys.executable, "-m", "sparc_cloud", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, preexec_fn=ignore_sigint if sigint_ignored else None)


def stop(proc: subprocess.Popen[str], signum: int) -> tuple[str, str]:
    """Send the signal and wait for the process to end (killed, and the test failed, if 30 s go by)."""
    proc.send_signal(signum)
    try:
        return proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise
