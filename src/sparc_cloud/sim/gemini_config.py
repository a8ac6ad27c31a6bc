"""The simulated Gemini's behaviour: its fault endpoints, latencies, limits and the scenario fields of its own
(composed into `sim.config.SimConfig` by `backends/registry_fields.py`)."""

from __future__ import annotations

from pydantic import BaseModel, Field

from sparc_cloud.clients import gemini_settings

FAULT_ENDPOINTS = ("gemini.generate", "gemini.load")
# Fault responses that only this provider's endpoints answer: a contract answer missing its main list (once: the
# repair turn runs), and a 400 refusing the request's responseJsonSchema.
RESPONSE_ENDPOINTS = {"bad-json": "gemini.generate", "schema-400": "gemini.generate"}
LATENCY: dict[str, tuple[float, float]] = {"gemini-2.5-flash": (15.0, 25.0), "gemini-2.5-pro": (20.0, 40.0)}
LIMITS: dict[str, tuple[float, int]] = {"gemini-2.5-flash": gemini_settings.FLASH_LIMIT,
                                        "gemini-2.5-pro": gemini_settings.PRO_LIMIT}


class GeminiSimFields(BaseModel):
    """Scenario fields of the simulated Gemini."""

    gemini_token_life_s: float = Field(default=3000.0, gt=0)
    models: list[str] = Field(
        default_factory=lambda: [
            "gemini-2.5-flash", "gemini-2.5-pro", "gemini-2.5-flash-lite", "gemini-3-flash",
            "gemini-3-pro-preview", "gemini-3-flash-preview",
        ]
    )
    project_id: str = "sim-project-4242"
    # false: the Google account has no Code Assist tier yet; loadCodeAssist offers the free tier and the
    # client must onboardUser (a long-running operation, done after `onboard_polls` polls) first
    onboarded: bool = True
    onboard_polls: int = Field(default=2, ge=0)
