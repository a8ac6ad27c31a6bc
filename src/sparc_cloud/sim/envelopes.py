"""Error answers every simulated service shares: a proxy's 502 page and the plain JSON error envelope
(`{"error": {"code", "message", "status"}}`). Each provider's own bodies are in `sim/<provider>_envelopes.py`."""

from __future__ import annotations

from typing import Any


def json_error(code: int, status: str, message: str) -> dict[str, Any]:
    """`{"error": {"code", "message", "status"}}`: the plain envelope of a route no service knows."""
    return {"error": {"code": code, "message": message, "status": status}}


def detail(message: str) -> dict[str, Any]:
    """`{"detail": message}`: the body of the simulator's own control routes' errors."""
    return {"detail": message}


def proto_duration(seconds: float) -> str:
    """`"0.539477544s"`."""
    return f"{seconds:.9f}".rstrip("0").rstrip(".") + "s"


def go_duration(seconds: float) -> str:
    """`"4h30m28.06s"` / `"539.477544ms"`."""
    if seconds < 1:
        return f"{seconds * 1000:.6f}".rstrip("0").rstrip(".") + "ms"
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    out = (f"{int(hours)}h" if hours else "") + (f"{int(minutes)}m" if hours or minutes else "")
    return out + f"{secs:.6f}".rstrip("0").rstrip(".") + "s"


BAD_GATEWAY_HTML = ("<html><head><title>502 Bad Gateway</title></head><body><center><h1>502 Bad Gateway</h1>"
                    "</center></body></html>")
