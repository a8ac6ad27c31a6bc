"""Shared fixtures: an isolated HOME and environment, a fast simulator, clients aimed at it."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from sparc_cloud.clients.factory import ClientContext
from sparc_cloud.http.clock import RealClock
from sparc_cloud.redact import SecretRegistry
from sparc_cloud.settings import Settings
from sparc_cloud.sim import SimConfig, Simulator

FAST = 0.002  # simulator time scale for tests: a 20 s call takes 40 ms


_real_connect = socket.socket.connect


def _loopback_only(self: socket.socket, address: object) -> None:
    host = address[0] if isinstance(address, tuple) else address
    if isinstance(host, str) and (host.startswith("127.") or host in ("localhost", "::1")) or not isinstance(
            address, tuple):
        return _real_connect(self, address)  # type: ignore[arg-type]
    raise RuntimeError(f"a test tried to reach the network ({host}); mock it with responses or the simulator")


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """No test may open a connection off this machine."""
    monkeypatch.setattr(socket.socket, "connect", _loopback_only)


@pytest.fixture(autouse=True)
def isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own HOME and cwd, and no SPARC_/Gemini/Codex variables from the machine."""
    for name in list(os.environ):
        if name.startswith(("SPARC_", "GEMINI_", "GOOGLE_", "CODEX_", "OPENAI_")):
            monkeypatch.delenv(name, raising=False)
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    return home


@pytest.fixture
def sim() -> Iterator[Simulator]:
    """A simulator at the test time scale."""
    with Simulator(SimConfig(time_scale=FAST)) as simulator:
        yield simulator


def sim_settings(simulator: Simulator, home: Path, **extra: object) -> Settings:
    """Settings that aim both clients at `simulator`, with credential files under `home`."""
    return Settings.model_validate({**simulator.client_settings(home), **extra})


@pytest.fixture
def ctx(sim: Simulator, isolated_env: Path) -> ClientContext:
    """A client context aimed at the simulator, scaled like it."""
    settings = sim_settings(sim, isolated_env)
    return ClientContext(settings=settings, clock=RealClock(), secrets=SecretRegistry(), time_scale=FAST)
