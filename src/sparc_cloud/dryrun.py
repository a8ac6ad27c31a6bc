"""`run --dry-run`: the plan (agents, models, order, limits) and what it should cost and take, before anything
is spent. Nothing is called and no file is written; credentials are not read.

The estimates rest on two stated assumptions: each agent takes the typical latency of its model (the middle of
the simulator's latency range, which is modelled on the services: Gemini flash ~20 s, pro ~30 s, a Codex task
~60 s) and writes a typical amount of output (TYPICAL_OUTPUT_TOKENS). Prompts are the project's real templates
with every input an agent reads counted at that typical size. Time is the critical path of the DAG under the
rate limits, each agent starting as soon as its dependencies and its limiter allow."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sparc_cloud.costs import cost_usd
from sparc_cloud.critical_path import Node, schedule
from sparc_cloud.http.ratelimit import DEFAULT_LIMITS, FALLBACK_LIMIT, Key, RateLimit
from sparc_cloud.phases import PHASES, Output, Plan, render_prompt
from sparc_cloud.sim import SimConfig

TYPICAL_OUTPUT_TOKENS = {"gemini": 2_000, "codex": 4_000}


def limit_key(backend: str, model: str) -> Key:
    """The limiter an agent's calls go through."""
    return ("gemini", "generate", model) if backend == "gemini" else ("codex", "create", "*")


def typical_latency_s(backend: str, model: str) -> float:
    """The middle of the simulator's latency range for a model (Codex: a task's)."""
    lo, hi = SimConfig().latency_for("codex-task" if backend == "codex" else model)
    return (lo + hi) / 2


def estimate(plan: Plan, selected: list[int], limits: Mapping[Key, RateLimit],
             prices: Mapping[str, tuple[float, float]], *, concurrency: int, time_scale: float = 1.0) -> dict[str, Any]:
    """The plan of the selected phases with per-agent estimates, the order, the limits, and the totals."""
    agents = [a for a in plan.agents if a.phase in selected]
    chosen = {a.id for a in agents}
    rows: list[dict[str, Any]] = []
    nodes: list[Node] = []
    for agent in agents:
        outputs = {d: Output("x" * 4 * TYPICAL_OUTPUT_TOKENS.get(plan.by_id[d].backend, 2_000))
                   for d in agent.depends_on}
        system, prompt = render_prompt(plan, agent, outputs)
        prompt_tokens = (len(system) + len(prompt)) // 4
        output_tokens = TYPICAL_OUTPUT_TOKENS.get(agent.backend, 2_000)
        latency = typical_latency_s(agent.backend, agent.model) * time_scale
        rows.append({"id": agent.id, "phase": agent.phase, "title": agent.title, "backend": agent.backend,
                     "model": agent.model, "depends_on": list(agent.depends_on),
                     "prompt_tokens": prompt_tokens, "output_tokens": output_tokens,
                     "cost_usd": round(cost_usd(prices, f"{agent.backend}/{agent.model}", prompt_tokens, output_tokens), 6),
                     "latency_s": round(latency, 3)})
        nodes.append(Node(agent.id, tuple(d for d in agent.depends_on if d in chosen), latency))
    tat: dict[Key, float] = {}
    by_id = {a.id: a for a in agents}

    def slot(node: Node, ready: float) -> float:
        agent = by_id[node.id]
        key = limit_key(agent.backend, agent.model)
        limit = limits.get(key, FALLBACK_LIMIT)
        interval = limit.interval(time_scale)
        start = max(ready, tat.get(key, 0.0) - (limit.burst - 1) * interval)
        tat[key] = max(tat.get(key, 0.0), start) + interval
        return start

    ideal = schedule(nodes, slot)
    for row in rows:
        row["start_s"] = round(ideal.start[row["id"]], 3)
    used = sorted({limit_key(a.backend, a.model) for a in agents})
    return {
        "project": plan.project.name, "phases": selected,
        "agents": rows,
        "order": [[r["id"] for r in rows if r["phase"] == n] for n in selected],
        "limits": {"/".join(k): {"per_minute": limits.get(k, FALLBACK_LIMIT).per_minute,
                                 "burst": limits.get(k, FALLBACK_LIMIT).burst} for k in used},
        "concurrency": concurrency,
        "estimated_cost_usd": round(sum(r["cost_usd"] for r in rows), 4),
        "estimated_time_s": round(ideal.length_s, 1),
        "critical_path": [s.agent_id for s in ideal.path],
        "assumptions": {"output_tokens": dict(TYPICAL_OUTPUT_TOKENS), "time_scale": time_scale},
    }


def merged_limits(project_limits: Mapping[Key, RateLimit]) -> dict[Key, RateLimit]:
    """The default limits with the project's overrides."""
    return {**DEFAULT_LIMITS, **project_limits}


def format_plan(data: dict[str, Any], backend: str) -> str:
    """The estimate as text for a terminal."""
    lines = [f"Dry run of {data['project']} on {backend}: nothing is called, nothing is written.", ""]
    for number, ids in zip(data["phases"], data["order"], strict=True):
        lines.append(f"Phase {number}: {PHASES[number][1]}")
        for row in (r for r in data["agents"] if r["id"] in ids):
            after = f" after {', '.join(row['depends_on'])}" if row["depends_on"] else ""
            lines.append(f"  {row['id']:<16} {row['backend']:<6} {row['model']:<18} ~{row['prompt_tokens']:,} in / "
                         f"~{row['output_tokens']:,} out tokens, ~${row['cost_usd']:.4f}, ~{row['latency_s']:.0f} s, "
                         f"starts at ~{row['start_s']:.0f} s{after}")
    lines.append("")
    lines.append(f"Limits: concurrency {data['concurrency']}; " + "; ".join(
        f"{k} {v['per_minute']:g}/min (burst {v['burst']})" for k, v in data["limits"].items()))
    lines.append(f"Estimated cost: ${data['estimated_cost_usd']:.4f} at list prices (Code Assist and Codex Cloud bill "
                 "through subscriptions).")
    lines.append(f"Estimated time: ~{data['estimated_time_s']:.0f} s along the critical path "
                 f"{' -> '.join(data['critical_path'])}.")
    lines.append("Estimates assume typical latencies and outputs; `sparc-cloud report` shows what a run really took.")
    return "\n".join(lines) + "\n"
