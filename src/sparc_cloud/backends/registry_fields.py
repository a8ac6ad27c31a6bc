"""The registry's pydantic half: each provider's settings fields and project-file tables, composed.

`settings.Settings` derives from `ProviderSettings` and `project.Project` from `ProviderTables`, so a provider's
`SPARC_*` settings and its `[NAME]` table are declared in its own module (`clients/<provider>_settings.py`) and
typed everywhere; `sim.config.SimConfig` derives from `ProviderSimFields`, so each simulated provider's scenario
fields, fault endpoints, latencies and limits live in `sim/<provider>_config.py`."""

from __future__ import annotations

from types import ModuleType

from pydantic import BaseModel, Field

from sparc_cloud.clients import codex_settings, gemini_settings
from sparc_cloud.clients.codex_settings import CodexProjectTable, CodexSettingsFields
from sparc_cloud.clients.gemini_settings import GeminiProjectTable, GeminiSettingsFields
from sparc_cloud.sim import codex_config, gemini_config, openai_config
from sparc_cloud.sim.codex_config import CodexSimFields
from sparc_cloud.sim.gemini_config import GeminiSimFields
from sparc_cloud.sim.openai_config import OpenAISimFields

# Providers with settings of their own (`SPARC_*` variables): each a module defining its fields class, ALIASES,
# URL_FIELDS, SECRET_FIELDS and PRICES. `ProviderSettings` composes the fields into `settings.Settings`. (The
# OpenAI-compatible kind reads OPENAI_* and its project tables only, so it has none.) Import-free beyond pydantic.
SETTINGS_MODULES: tuple[ModuleType, ...] = (gemini_settings, codex_settings)


class ProviderSettings(GeminiSettingsFields, CodexSettingsFields):
    """Every provider's settings fields, as one base of `settings.Settings`."""


class ProviderTables(BaseModel):
    """The project-file tables providers declare (`[gemini]`, `[codex]`), as one base of `project.Project`: each is
    validated by its provider's model, and a table no provider declares stays an error."""

    codex: CodexProjectTable = Field(default_factory=CodexProjectTable)
    gemini: GeminiProjectTable = Field(default_factory=GeminiProjectTable)


# Each simulated provider's configuration: FAULT_ENDPOINTS, RESPONSE_ENDPOINTS, LATENCY, LIMITS and its fields.
SIM_CONFIG_MODULES: tuple[ModuleType, ...] = (gemini_config, codex_config, openai_config)


class ProviderSimFields(GeminiSimFields, CodexSimFields, OpenAISimFields):
    """Every simulated provider's scenario fields, as one base of `sim.config.SimConfig`."""
