"""A simulator run that the test holds mid-way, with the dashboard of its run folder, for the dashboard tests."""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sparc_cloud.dashboard import Dashboard
from sparc_cloud.pipeline import RunOptions, RunOutcome, run
from sparc_cloud.settings import Settings
from sparc_cloud.sim import SimConfig, Simulator

HELD_MODEL = "gemini-2.5-pro"  # the first call to it is p1-synthesis's: the run is held there until released


@dataclass
class HeldRun:
    """A run in a thread, held at its first gemini-2.5-pro call until `release()`."""

    folder: Path
    board: Dashboard
    gate: threading.Event
    reached: threading.Event
    outcome: list[RunOutcome] = field(default_factory=list)
    thread: threading.Thread | None = None

    def release(self) -> None:
        """Let the held call (and the rest of the run) go on."""
        self.gate.set()

    def wait(self, timeout: float = 120.0) -> RunOutcome:
        """Wait for the run to end."""
        assert self.thread is not None
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the run did not finish"
        self.board.following.clear()  # as `run --dashboard` does when the run returns: streams may end now
        return self.outcome[0]


@contextmanager
def held_run(folder: Path, time_scale: float = 0.002) -> Iterator[HeldRun]:
    """Start the memory-extension run on the simulator with the folder's dashboard; held at p1-synthesis."""
    gate, reached = threading.Event(), threading.Event()
    with Simulator(SimConfig(time_scale=time_scale)) as sim:
        real_latency: Callable[[str, str], float] = sim.state.latency
        held = {"done": False}

        def latency(model: str, prompt: str) -> float:
            if model == HELD_MODEL and not held["done"]:
                held["done"] = True
                reached.set()
                gate.wait(120)
            return real_latency(model, prompt)

        sim.state.latency = latency  # type: ignore[method-assign]
        board = Dashboard(folder, following=True).start()
        state = HeldRun(folder, board, gate, reached)

        def go() -> None:
            options = RunOptions(project="memory-extension", settings=Settings(_env_file=None),  # type: ignore[call-arg]
                                 backend="sim", output=folder, simulator=sim)
            state.outcome.append(run(options))

        state.thread = threading.Thread(target=go, name="held-run", daemon=True)
        state.thread.start()
        try:
            yield state
        finally:
            gate.set()
            state.thread.join(120)
            board.finish()
            board.stop()


def get(url: str) -> tuple[int, bytes, dict[str, str]]:
    """GET a loopback URL: (status, body, headers); an HTTP error status is returned, not raised."""
    try:
        with urllib.request.urlopen(url, timeout=30) as answer:  # noqa: S310 - 127.0.0.1 only
            return answer.status, answer.read(), dict(answer.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(), dict(exc.headers)


def api(board: Dashboard, path: str, extra: str = "") -> Any:
    """GET one of the dashboard's JSON endpoints with its token."""
    status, body, _ = get(f"http://127.0.0.1:{board.port}{path}?token={board.token}{extra}")
    assert status == 200, body
    return json.loads(body)


def poll(condition: Callable[[], Any], what: str, timeout: float = 60.0) -> Any:
    """Wait until `condition()` is truthy (checked every 20 ms; a generous safety timeout, not a pace)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")
