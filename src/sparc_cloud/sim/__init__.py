"""Loopback simulator of every registered backend's endpoints (one server; each provider's routes in its module).

The names below load on first use: provider modules import small pieces of this package (`sim.specs`) while
the registry composes the simulator's configuration, so importing the package itself loads nothing."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sparc_cloud.sim.config import Fault, SimConfig, TaskScript, load_scenario
    from sparc_cloud.sim.server import Simulator

__all__ = ["Fault", "SimConfig", "Simulator", "TaskScript", "load_scenario"]
_WHERE = {"Fault": "config", "SimConfig": "config", "TaskScript": "config", "load_scenario": "config",
          "Simulator": "server"}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(f"sparc_cloud.sim.{_WHERE[name]}"), name)
    raise AttributeError(f"module 'sparc_cloud.sim' has no attribute {name!r}")
