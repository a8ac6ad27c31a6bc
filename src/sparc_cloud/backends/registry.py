"""The registry: backend names -> their kinds (the providers), and the rules that name them in project files.

Adding a provider is one module under `backends/` that defines `KIND` (a `BackendKind`) plus one line in
`KINDS` below. Kinds load on first use, so project validation can read the names without loading clients.

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
# Kinds that `[backends.NAME]` tables may name (they talk to a URL the user chooses).
ENDPOINT_KINDS: tuple[str, ...] = ("openai",)


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
