"""Typed run events and their sinks. The console, `events.jsonl` and `run.log` read one stream."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO, Any, Literal, Protocol

from sparc_cloud.bundle import utc_now
from sparc_cloud.redact import SecretRegistry
from sparc_cloud.terminal import clean

EventKind = Literal[
    "run_started", "agent_queued", "agent_started", "agent_waiting", "agent_retrying", "agent_rate_limited", "agent_polled",
    "agent_finished", "agent_failed", "agent_skipped", "agent_reused", "agent_attached", "agent_repairing",
    "phase_done", "phase_stale", "phase_grown", "run_done",
]


@dataclass(frozen=True)
class Event:
    """One state change of a run."""

    kind: EventKind
    agent_id: str | None = None
    phase: int | None = None
    message: str = ""
    data: dict[str, Any] = field(default_factory=dict)
    at: str = field(default_factory=utc_now)


Sink = Callable[[Event], None]


class EventBus:
    """Fans each event out to every sink; a failing sink is logged and never fails the run."""

    def __init__(self, secrets: SecretRegistry) -> None:
        self.secrets = secrets
        self.sinks: list[Sink] = []
        self._lock = threading.Lock()

    def add(self, sink: Sink) -> None:
        """Subscribe a sink."""
        self.sinks.append(sink)

    def emit(self, event: Event) -> None:
        """Deliver an event (message redacted) to every sink, in order."""
        if not self.sinks:
            return
        event = Event(kind=event.kind, agent_id=event.agent_id, phase=event.phase,
                      message=self.secrets.redact(event.message), data=event.data, at=event.at)
        with self._lock:
            for sink in self.sinks:
                try:
                    sink(event)
                except Exception:  # noqa: BLE001 - a sink must never break the run
                    logging.getLogger(__name__).exception("event sink %r failed", sink)


def _line(event: Event) -> str:
    if event.kind == "phase_done":
        return f"phase {event.phase} done: {event.message}"
    if event.kind == "phase_grown":
        return f"phase {event.phase}: {event.message}"
    if event.kind == "phase_stale":
        return f"phase {event.phase} {event.message.split(' ', 1)[-1] if event.message else 'is stale'}"
    who = f"{event.agent_id} " if event.agent_id else (f"phase {event.phase} " if event.phase else "")
    return f"{who}{event.kind.removeprefix('agent_').replace('_', ' ')}{': ' + event.message if event.message else ''}"


class TextOut(Protocol):
    """What JsonlSink writes to: a text file, or the run folder's guarded stream."""

    def write(self, text: str, /) -> int: ...
    def flush(self) -> None: ...
    def close(self) -> None: ...


class JsonlSink:
    """`events.jsonl`: one JSON object per event."""

    def __init__(self, target: Path | TextOut, secrets: SecretRegistry) -> None:
        self.secrets = secrets
        self.handle: TextOut = target.open("a", encoding="utf-8") if isinstance(target, Path) else target
        self._lock = threading.Lock()
        self._closed = False

    def __call__(self, event: Event) -> None:
        line = self.secrets.redact(json.dumps(asdict(event), ensure_ascii=False)) + "\n"
        with self._lock:
            if self._closed:
                return  # an agent abandoned at Ctrl-C may still report after the run has ended: nothing to write
            self.handle.write(line)
            self.handle.flush()

    def close(self) -> None:
        """Close the file; events that arrive later are dropped."""
        with self._lock:
            self._closed = True
            self.handle.close()


class JsonStreamSink:
    """Events as JSON lines on a stream (`run --json` on stdout), the same objects as `events.jsonl`."""

    def __init__(self, stream: IO[str], secrets: SecretRegistry) -> None:
        self.stream = stream
        self.secrets = secrets

    def __call__(self, event: Event) -> None:
        self.stream.write(self.secrets.redact(json.dumps(asdict(event), ensure_ascii=False)) + "\n")
        self.stream.flush()


class LogSink:
    """Events as log lines (to `run.log` through the logging setup)."""

    def __init__(self, logger: logging.Logger) -> None:
        self.logger = logger

    def __call__(self, event: Event) -> None:
        level = logging.WARNING if event.kind in ("agent_failed", "agent_rate_limited") else logging.INFO
        self.logger.log(level, _line(event))


class PlainConsoleSink:
    """Plain timestamped lines for pipes, CI and `--no-progress`."""

    QUIET = {"agent_queued", "agent_polled", "run_done"}  # the CLI prints the run's summary itself

    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream

    def __call__(self, event: Event) -> None:
        if event.kind in self.QUIET:
            return
        stamp = datetime.now().strftime("%H:%M:%S")
        self.stream.write(f"{stamp} {clean(_line(event), one_line=True)}\n")  # server text cannot drive the terminal
        self.stream.flush()
