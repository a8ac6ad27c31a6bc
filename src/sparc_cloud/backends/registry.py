"""The registry: backend names -> their kinds (the providers), and the rules that name them in project files.

Adding a provider is one module under `backends/` that defines `KIND` (a `BackendKind`) plus one line in
`KINDS` below. Kinds load on first use, so project validation can read the names without loading clients. This
module imports nothing (the CLI reads it for `--help`); `registry_fields.py` composes the providers' settings
fields and project tables (pydantic models).

A project names a backend three ways: a phase's `backend = "NAME"`, a model written `NAME/MODEL` (split at the
first `/`: `openrouter/anthropic/claude-sonnet-4` is model `anthropic/claude-sonnet-4` on `openrouter`), or
an endpoint table `[backends.NAME]` with `kind = "openai"` that adds a name."""

from __future__ import annotations

import importlib
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sparc_cloud.backends.base import BackendKind

# name -> the module that defines its KIND. The names double as built-in backend names.
KINDS: dict[str, str] = {
    "gemini": "sparc_cloud.backends.gemini",
    "codex": "sparc_cloud.backends.codex",
    "openai": "sparc_cloud.backends.openai",
}
# What the default project uses: `doctor` checks these when no project is named.
DEFAULT_BACKENDS: tuple[str, ...] = ("gemini", "codex")
# Modules adding to the CLI (import-free beyond typer): each may define `APP` (a typer sub-app, added under
# its `NAME`) and `OPTION_HELP` (help texts of the run options it gives meaning to: environment, branch, fallback).
CLI_MODULES: tuple[str, ...] = ("sparc_cloud.backends.codex_cli", "sparc_cloud.backends.gemini_cli")
# The run options a kind gives meaning to (`--environment`, `--branch`, `--fallback`) -> the setting each sets.
OPTION_SETTINGS: dict[str, str] = {"environment": "codex_environment", "branch": "codex_branch",
                                   "fallback": "gemini_fallback"}
# Each provider's simulator routes (`sim/<provider>.py`: NAME, ROUTES, serve_lines; with a login also its
# credential file and the settings that aim a client at the simulator). The server dispatches through them.
SIM_MODULES: tuple[str, ...] = ("sparc_cloud.sim.gemini", "sparc_cloud.sim.codex", "sparc_cloud.sim.chat")
# Kinds that `[backends.NAME]` tables may name (they talk to a URL the user chooses).
ENDPOINT_KINDS: tuple[str, ...] = ("openai",)


# The backend a bare model name in `[limits."MODEL"]` means (the default project's text backend).
BARE_MODEL_BACKEND = "gemini"


def limit_key(name: str) -> tuple[str, str, str]:
    """The limiter key of a `[limits."NAME"]` table (the one rule; the run and the simulator both use it).

    `KIND.OP` (a registered kind, e.g. `codex.poll`) -> that backend's operation OP (create, poll, ...);
    `BACKEND/MODEL` -> that backend's requests for MODEL (`BACKEND/*`: all its models); a bare model name ->
    `BARE_MODEL_BACKEND`'s requests for that model."""
    if "/" in name:
        backend, model = name.split("/", 1)
        return (backend, "generate", model)
    kind, dot, operation = name.partition(".")
    if dot and operation and kind in KINDS:
        return (kind, operation, "*")
    return (BARE_MODEL_BACKEND, "generate", name)


# Each phase's backend and model when the project file names none: (backend, model, synthesis model).
PHASE_DEFAULTS: dict[str, tuple[str, str, str | None]] = {
    "specification": ("gemini", "gemini-2.5-flash", "gemini-2.5-pro"),
    "pseudocode": ("gemini", "gemini-2.5-flash", None),
    "architecture": ("gemini", "gemini-2.5-pro", None),
    "refinement": ("codex", "codex", None),
    "completion": ("gemini", "gemini-2.5-pro", None),
}
DEFAULT_BACKEND, DEFAULT_MODEL = "gemini", "gemini-2.5-flash"  # a phase table that names neither
EXAMPLE_MODEL = "openai/gpt-4.1"  # how error messages show a BACKEND/MODEL


def fit_model(backend: str, model: str) -> str:
    """The model a phase runs when it names a backend but keeps the default model: a Codex phase runs `codex`."""
    if backend == "codex" and model.startswith("gemini"):
        return "codex"
    return model


def load_kind(kind: str) -> BackendKind:
    """The registry entry of a kind (its module is imported on first use)."""
    module = importlib.import_module(KINDS[kind])
    entry: BackendKind = module.KIND
    return entry


def kind_name(name: str, endpoints: Mapping[str, str]) -> str | None:
    """The kind behind a backend name (`endpoints`: the project's `[backends.NAME]` kinds); None if unknown."""
    if name in endpoints:
        return endpoints[name]
    return name if name in KINDS else None


def known_names(endpoints: Iterable[str] = ()) -> list[str]:
    """Every backend name a project may use: the built-in ones and its own endpoint tables."""
    return sorted({*KINDS, *endpoints})


def split_model(model: str) -> tuple[str | None, str]:
    """`BACKEND/MODEL` -> (BACKEND, MODEL) split at the first `/`; a bare model -> (None, model)."""
    if "/" in model:
        backend, rest = model.split("/", 1)
        return backend, rest
    return None, model
