"""The simulated OpenAI-compatible server's behaviour: its fault endpoint and the scenario fields of its own
(composed into `sim.config.SimConfig` by `backends/registry_fields.py`)."""

from __future__ import annotations

from pydantic import BaseModel, Field

from sparc_cloud.clients import openai_defaults
from sparc_cloud.sim.specs import LimitSpec

FAULT_ENDPOINTS = ("openai.chat",)
# bad-diff: a refinement answer whose diff `git apply --check` refuses; bad-json: a contract answer missing its
# main list (once: the repair turn runs); schema-400: a 400 refusing the request's json_schema response format
RESPONSE_ENDPOINTS = {"bad-diff": "openai.chat", "bad-json": "openai.chat", "schema-400": "openai.chat"}
LATENCY: dict[str, tuple[float, float]] = {}
LIMITS: dict[str, tuple[float, int]] = {}


class OpenAISimFields(BaseModel):
    """Scenario fields of the simulated OpenAI-compatible `/v1`: requests per minute per model (sent back in
    x-ratelimit-* headers), and the models GET /v1/models lists (chat/completions answers any model name: local
    servers have any)."""

    chat_limit: LimitSpec = Field(default_factory=lambda: LimitSpec(per_minute=openai_defaults.LIMIT[0],
                                                                    burst=int(openai_defaults.LIMIT[1])))
    chat_models: list[str] = Field(default_factory=lambda: ["gpt-4.1", "gpt-4.1-mini", "llama3.1:8b"])
