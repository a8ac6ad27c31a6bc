"""A run's backends: which the selected agents use, built with their limits and prices.

Limits stack, later winning: each kind's defaults, then a `[backends.NAME]` table's, then the project's
`[limits."..."]` (named by `registry.limit_key`). Prices stack the same way: each kind's list prices, the
user's SPARC_PRICES, then a `[backends.NAME]` table's `prices` (keyed `NAME/MODEL`)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from sparc_cloud.backends.base import Backend, BackendKind, BuildContext
from sparc_cloud.backends.registry import KINDS, kind_name, limit_key, load_kind
from sparc_cloud.errors import ConfigError
from sparc_cloud.http.ratelimit import Key, RateLimit
from sparc_cloud.project import Project


def kind_of(name: str, project: Project) -> BackendKind:
    """The registry entry behind a backend name of this project."""
    kind = kind_name(name, project.endpoint_kinds())
    if kind is None:
        raise ConfigError(f"Unknown backend {name!r}. Known backends: {', '.join(sorted(KINDS))} and the project's "
                          "[backends.NAME] tables.")
    return load_kind(kind)


def project_limits(project: Project) -> dict[Key, RateLimit]:
    """The project's `[limits."NAME"]` overrides as limiter keys."""
    return {limit_key(name): RateLimit(per_minute=limit.per_minute, burst=limit.burst)
            for name, limit in project.limits.items()}


def run_limits(project: Project, names: Iterable[str]) -> dict[Key, RateLimit]:
    """Every limit of these backends: kind defaults, endpoint tables, then the project's overrides."""
    out: dict[Key, RateLimit] = {}
    for name in names:
        out.update(kind_of(name, project).limits(name, project.backends.get(name)))
    out.update(project_limits(project))
    return out


def price_table(project: Project, user_prices: Mapping[str, tuple[float, float]]) -> dict[str, tuple[float, float]]:
    """Model -> USD per million tokens (input, output) for a run of this project."""
    table: dict[str, tuple[float, float]] = {}
    for name in project.backends_used():
        table.update(kind_of(name, project).prices)
    table.update(user_prices)
    for name, endpoint in project.backends.items():
        table.update({f"{name}/{model}": price for model, price in endpoint.prices.items()})
    return table


def known_prices(user_prices: Mapping[str, tuple[float, float]]) -> dict[str, tuple[float, float]]:
    """Every registered kind's list prices under the user's (for reports, where no project is at hand)."""
    table: dict[str, tuple[float, float]] = {}
    for kind in KINDS:
        table.update(load_kind(kind).prices)
    table.update(user_prices)
    return table


def default_limits() -> dict[Key, RateLimit]:
    """Every registered kind's default limits (for tools that run without a project: benchmarks, doctor)."""
    out: dict[Key, RateLimit] = {}
    for kind in KINDS:
        out.update(load_kind(kind).limits(kind, None))
    return out


def build_backends(ctx: BuildContext, names: Iterable[str]) -> dict[str, Backend]:
    """Build each named backend (reading its credentials now: a missing login stops the run before any call)."""
    return {name: kind_of(name, ctx.project).build(ctx, name) for name in names}
