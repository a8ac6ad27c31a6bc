"""Checks of `sparc-cloud run`'s numeric flags that the settings model does not make, with the flag named as
the user typed it (`--deadline`, not `run_deadline_s`)."""

from __future__ import annotations

import math

from sparc_cloud.errors import ConfigError
from sparc_cloud.settings import Settings


def _positive(value: float | None, name: str, what: str) -> None:
    if value is not None and not (math.isfinite(value) and value > 0):
        raise ConfigError(f"{name} {value:g}: give {what} (0, negative numbers, nan and inf are refused).")


def check_flag_numbers(*, deadline: float | None, budget_usd: float | None, agent_timeout: float | None,
                       sim_time_scale: float | None) -> None:
    """The same refusal for the flags as typed, before they reach the settings model (whose own words are
    less plain)."""
    _positive(deadline, "--deadline", "a positive number of seconds")
    _positive(budget_usd, "--budget-usd", "a positive amount of US dollars")
    _positive(agent_timeout, "--agent-timeout", "a positive number of seconds")
    _positive(sim_time_scale, "--sim-time-scale", "a positive time scale")


def check_run_numbers(settings: Settings, *, deadline: float | None, budget_usd: float | None,
                      agent_timeout: float | None, sim_time_scale: float | None) -> None:
    """Refuse (exit 2) a deadline, budget, agent timeout or time scale that is not a positive finite number.

    A value from the environment is named by its variable (`SPARC_RUN_DEADLINE_S`), one from a flag by the
    flag."""
    _positive(settings.run_deadline_s, "--deadline" if deadline is not None else "SPARC_RUN_DEADLINE_S",
              "a positive number of seconds")
    _positive(budget_usd, "--budget-usd", "a positive amount of US dollars")
    _positive(settings.agent_timeout_s, "--agent-timeout" if agent_timeout is not None else "SPARC_AGENT_TIMEOUT_S",
              "a positive number of seconds")
    _positive(settings.sim_time_scale, "--sim-time-scale" if sim_time_scale is not None else "SPARC_SIM_TIME_SCALE",
              "a positive time scale")


__all__ = ["check_flag_numbers", "check_run_numbers"]
