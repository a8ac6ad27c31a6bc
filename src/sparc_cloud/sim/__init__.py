"""Loopback simulator of the Gemini (Code Assist and public API) and Codex Cloud endpoints."""

from sparc_cloud.sim.config import Fault, SimConfig, TaskScript, load_scenario
from sparc_cloud.sim.server import Simulator

__all__ = ["Fault", "SimConfig", "Simulator", "TaskScript", "load_scenario"]
