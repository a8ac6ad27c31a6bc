"""The simulated Codex Cloud's behaviour: its fault endpoints, task latency, limits and the scenario fields of its
own (composed into `sim.config.SimConfig` by `backends/registry_fields.py`)."""

from __future__ import annotations

from pydantic import BaseModel, Field

from sparc_cloud.clients import codex_settings

FAULT_ENDPOINTS = ("codex.create", "codex.poll", "codex.list", "codex.envs")
# codex.create only: the task IS created, then the answer is lost (a 502, a reset, or no answer at all)
RESPONSE_ENDPOINTS = {"created-502": "codex.create", "created-reset": "codex.create", "created-timeout": "codex.create"}
LATENCY: dict[str, tuple[float, float]] = {"codex-task": (30.0, 90.0)}
LIMITS: dict[str, tuple[float, int]] = {"codex.create": codex_settings.CREATE_LIMIT,
                                        "codex.poll": (codex_settings.POLLS_PER_MINUTE, codex_settings.POLL_BURST)}


class CodexSimFields(BaseModel):
    """Scenario fields of the simulated Codex Cloud."""

    codex_token_life_s: float = Field(default=864000.0, gt=0)
    environments: list[dict[str, object]] = Field(
        default_factory=lambda: [
            {"id": "env_sim_memory_extension", "label": "memory-extension", "is_pinned": True, "task_count": 12},
            {"id": "env_sim_playground", "label": "playground", "is_pinned": False, "task_count": 3},
        ]
    )
