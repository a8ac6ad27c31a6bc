"""Loopback simulator of every registered backend's endpoints (one server; each provider's routes in its module)."""

from sparc_cloud.sim.config import Fault, SimConfig, TaskScript, load_scenario
from sparc_cloud.sim.server import Simulator

__all__ = ["Fault", "SimConfig", "Simulator", "TaskScript", "load_scenario"]
