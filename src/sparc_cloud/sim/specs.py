"""Small pieces of the simulator's configuration that provider modules share (pydantic only)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class LimitSpec(BaseModel):
    """A requests-per-minute limit with a burst."""

    model_config = ConfigDict(extra="forbid")

    per_minute: float = Field(gt=0)
    burst: int = Field(default=1, ge=1)
