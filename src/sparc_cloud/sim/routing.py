"""The simulator's request plumbing, shared by every provider's routes: the handler base (`SimHandler`), an answer
raised from anywhere in a route (`Reply`), a route table entry (`Route`), and how a provider words the scripted
faults (`FaultStyle`). Each provider's routes live in `sim/<provider>.py`; `sim/server.py` dispatches to them."""

from __future__ import annotations

import contextlib
import functools
import json
import re
import socket
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from typing import TYPE_CHECKING, Any

from sparc_cloud.sim import envelopes as env

if TYPE_CHECKING:
    from sparc_cloud.sim.state import SimState

_HUGE_UNIT = "Grüße, naïve café — 日本語のテキスト — 🚀🧠💾✨ — مرحبا — tab\there\n"


@functools.cache
def huge_text() -> str:
    """10 MB of non-ASCII text (accents, CJK, 4-byte emoji, a right-to-left script), built on first use."""
    return "> Simulated huge output.\n" + _HUGE_UNIT * (10 * 1024 * 1024 // len(_HUGE_UNIT.encode()) + 1)


class Reply(Exception):
    """Raised inside a route to answer at once (status -1: the connection was reset on purpose)."""

    def __init__(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        super().__init__(status)
        self.status = status
        self.body = body
        self.headers = headers or {}


Answer = tuple[Any, dict[str, str]]


@dataclass(frozen=True)
class FaultStyle:
    """How one provider words the answers of scripted faults (`Fault.responses`), in its own envelopes."""

    error: Callable[[int, str], Any]  # (HTTP code, model) -> body of a plain error answer
    unauthorized: Callable[[], Any]
    rate_limited: Callable[[str, float, float], Answer]  # (model, delay s, time scale) -> body, headers
    daily_quota: Callable[[str], Answer]
    bad_json: Callable[[], Any]  # a request body that is not JSON
    capacity: Callable[[str], Any] | None = None  # 503 "no capacity" (default: a plain 503)
    huge: Callable[[str], Any] | None = None  # a 200 carrying ~10 MB of text, when the provider has one


# The style of routes with no envelope of their own (transport faults only).
PLAIN = FaultStyle(
    error=lambda code, model: env.json_error(code, "ERROR", f"HTTP {code}"),
    unauthorized=lambda: env.json_error(401, "UNAUTHENTICATED", "Unauthorized"),
    rate_limited=lambda model, delay, scale: (env.json_error(429, "RESOURCE_EXHAUSTED", "slow down"),
                                              {"Retry-After": f"{delay:.3f}"}),
    daily_quota=lambda model: (env.json_error(429, "RESOURCE_EXHAUSTED", "quota exhausted"), {}),
    bad_json=lambda: env.detail("Invalid JSON body"),
)


@dataclass(frozen=True)
class Route:
    """One route: `method` (None: any) and a path pattern; `handle(handler, match)` raises its `Reply`."""

    method: str | None
    pattern: re.Pattern[str]
    handle: Callable[[SimHandler, re.Match[str]], None]


class SimHandler(BaseHTTPRequestHandler):
    """The plumbing every route uses: the state, the body, sending, resets, scripted faults."""

    protocol_version = "HTTP/1.1"
    _raw: bytes = b""

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        return

    @property
    def state(self) -> SimState:
        """The simulator's world."""
        state: SimState = self.server.state  # type: ignore[attr-defined]
        return state

    def send(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        """Answer with JSON (or the given text or bytes) and count the status."""
        raw = body if isinstance(body, bytes) else (body if isinstance(body, str) else json.dumps(body)).encode()
        self.send_response(status)
        content_type = "text/html" if isinstance(body, str) and body.startswith("<html") else "application/json"
        self.send_header("Content-Type", f"{content_type}; charset=UTF-8")
        self.send_header("Content-Length", str(len(raw)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(raw)
        with self.state.lock:
            self.state.counters.status_sent[str(status)] += 1

    def body(self) -> bytes:
        """The request body (read in full before routing)."""
        return self._raw

    def json_body(self, style: FaultStyle) -> Any:
        """The request body as JSON; a body that is not JSON is answered 400 in the provider's words."""
        raw = self.body()
        try:
            return json.loads(raw) if raw else None
        except ValueError:
            raise Reply(400, style.bad_json()) from None

    def reset(self) -> None:
        """Close the connection without an answer."""
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)

    def apply_fault(self, endpoint: str, model: str, style: FaultStyle) -> None:
        """Answer the next scripted fault of `endpoint` (for `model`), if one is due."""
        fault = self.state.next_fault(endpoint, model)
        if fault is not None:
            self.answer_fault(fault, model, style)

    def answer_fault(self, fault: str, model: str, style: FaultStyle) -> None:
        """Raise the answer of one scripted fault, worded as `style` says."""
        base, _, arg = fault.partition(":")
        if base == "reset":
            self.reset()
            raise Reply(-1, None)
        if base == "truncated":
            text = json.dumps({"response": {"candidates": [{"content": {"parts": [{"text": "x" * 200}]}}]}})
            raise Reply(200, text[: len(text) // 2])
        if base == "malformed":
            raise Reply(200, "<html><body>upstream sent garbage</body></html>")
        if base == "empty":
            raise Reply(200, b"")
        if base == "error-200":
            raise Reply(200, env.json_error(500, "INTERNAL", "Internal error encountered."))
        if base == "huge" and style.huge is not None:
            raise Reply(200, style.huge(model))
        if base == "401":
            self.state.revoke(self.headers.get("Authorization"))
            raise Reply(401, style.unauthorized())
        if base == "429":
            scale = self.state.config.time_scale
            delay = (float(arg.rstrip("s")) if arg else 2.0) * scale
            raise Reply(429, *style.rate_limited(model, delay, scale))
        if base == "quota-daily":
            raise Reply(429, *style.daily_quota(model))
        if base == "capacity":
            raise Reply(503, style.capacity(model) if style.capacity else style.error(503, model))
        if base == "502":
            raise Reply(502, env.BAD_GATEWAY_HTML)
        raise Reply(int(base), style.error(int(base), model))
