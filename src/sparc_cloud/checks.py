"""One `doctor` finding: what was checked, how it stands, and the fix. Backends return lists of these."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Level = Literal["ok", "warn", "fail"]


@dataclass
class Check:
    """One finding."""

    name: str
    level: Level
    detail: str
    fix: str = ""
