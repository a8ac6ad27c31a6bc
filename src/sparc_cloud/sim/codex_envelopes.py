"""Codex Cloud's error bodies and headers exactly as openai/codex and its users' reports show them."""

from __future__ import annotations

import math
import time
from typing import Any


def reset_seconds(seconds: float, time_scale: float = 1.0) -> float | int:
    """Seconds as the usage-limit fields carry them: whole seconds (rounded up) in real time; under a
    compressed time scale, milliseconds precision so waits shrink with the scale."""
    if time_scale >= 1.0:
        return max(1, math.ceil(seconds))
    return max(0.001, round(seconds, 3))


def codex_usage_limit(resets_in_s: float, time_scale: float = 1.0, plan: str = "pro") -> dict[str, Any]:
    """Codex 429 `usage_limit_reached` body as users captured it (e.g. badlogic/pi-mono issue 4172): `resets_at`,
    `resets_in_seconds`, no Retry-After (the headers are `codex_usage_headers`)."""
    return {"error": {"type": "usage_limit_reached", "message": "The usage limit has been reached", "plan_type": plan,
                      "resets_at": int(time.time() + resets_in_s), "eligible_promo": None,
                      "resets_in_seconds": reset_seconds(resets_in_s, time_scale)}}


def codex_usage_headers(resets_in_s: float, time_scale: float = 1.0) -> dict[str, str]:
    """The headers of that 429: `X-Codex-Primary-Reset-After-Seconds` and `X-Codex-Primary-Used-Percent`."""
    return {"X-Codex-Primary-Reset-After-Seconds": str(reset_seconds(resets_in_s, time_scale)),
            "X-Codex-Primary-Used-Percent": "100"}


def codex_detail(message: str) -> dict[str, Any]:
    """Codex `{detail}` error body (third-party observations of the backend)."""
    return {"detail": message}
