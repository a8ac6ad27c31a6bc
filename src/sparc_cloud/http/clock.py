"""Time as the orchestrator sees it: a monotonic `now()` and a `sleep()` that a cancel ends early.

Tests inject `FakeClock` so nothing really sleeps; the CLI uses `RealClock` bound to the run's cancel
event, so Ctrl-C wakes every sleeping thread at once."""

from __future__ import annotations

import threading
import time
from typing import Protocol

from sparc_cloud.errors import Cancelled


class Clock(Protocol):
    """What retry, rate limiting and polling need from time."""

    def now(self) -> float:
        """Monotonic seconds."""
        ...

    def sleep(self, seconds: float) -> None:
        """Sleep; raise `Cancelled` if the run is cancelled meanwhile."""
        ...

    def wall(self) -> float:
        """Epoch seconds (for expiry dates)."""
        ...


class RealClock:
    """Wall time, with sleeps that end early when `cancel` is set."""

    def __init__(self, cancel: threading.Event | None = None) -> None:
        self.cancel = cancel or threading.Event()

    def now(self) -> float:
        return time.monotonic()

    def wall(self) -> float:
        return time.time()

    def sleep(self, seconds: float) -> None:
        if self.cancel.is_set():
            raise Cancelled("interrupted")
        if seconds > 0 and self.cancel.wait(seconds):
            raise Cancelled("interrupted")


class FakeClock:
    """A clock for tests: `sleep` advances time instantly and records every sleep."""

    def __init__(self, start: float = 1_000.0, wall_start: float = 1_700_000_000.0) -> None:
        self._now = start
        self._wall_offset = wall_start - start
        self.sleeps: list[float] = []
        self._lock = threading.Lock()

    def now(self) -> float:
        with self._lock:
            return self._now

    def wall(self) -> float:
        with self._lock:
            return self._now + self._wall_offset

    def sleep(self, seconds: float) -> None:
        with self._lock:
            self.sleeps.append(seconds)
            self._now += max(0.0, seconds)

    def advance(self, seconds: float) -> None:
        """Move time forward without recording a sleep."""
        with self._lock:
            self._now += seconds
