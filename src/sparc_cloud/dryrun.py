"""`run --dry-run`: the plan (agents, models, order, limits) and what it should cost and take, before anything
is spent. Nothing is called and no file is written; credentials are not read.

The estimates rest on two stated assumptions: each agent takes the typical latency of its model (the middle of
the simulator's latency range, which is modelled on the services) and writes a typical amount of output (each
backend kind's `typical_output_tokens`). Prompts are the project's real templates
with every input an agent reads counted at that typical size. Time is the critical path of the DAG under the
rate limits, each agent starting as soon as its dependencies and its limiter allow."""

from __future__ import annotations

import shutil
import textwrap
from collections.abc import Mapping
from typing import Any

from sparc_cloud.backends.assemble import kind_of
from sparc_cloud.backends.base import BackendKind
from sparc_cloud.backends.registry import KINDS, load_kind
from sparc_cloud.contracts import Architecture, Component
from sparc_cloud.costs import cost_usd
from sparc_cloud.critical_path import Node, schedule
from sparc_cloud.http.ratelimit import FALLBACK_LIMIT, Key, RateLimit
from sparc_cloud.phases import GROWS_AT, PHASES, AgentSpec, Output, Plan, render_prompt
from sparc_cloud.project import Project
from sparc_cloud.sim import SimConfig

ASSUMED_COMPONENTS = 4  # phase 4's size in a dry run of a project that leaves the split to the architecture


def assumed_architecture(project: Project) -> Architecture | None:
    """For a project with no `[[components]]`, an architecture of ASSUMED_COMPONENTS independent placeholder
    components, so the dry run can show and price phase 4 (the real split is decided at run time); else None."""
    if project.components:
        return None
    return Architecture(components=[Component(name=f"assumed component {i}", responsibility="decided at run time")
                                    for i in range(1, ASSUMED_COMPONENTS + 1)])


def call_key(kind: BackendKind, agent: AgentSpec) -> Key:
    """The limiter an agent's calls go through (its backend kind says which)."""
    return kind.call_key(agent.backend, agent.model)


def limit_for(limits: Mapping[Key, RateLimit], key: Key) -> RateLimit:
    """The limit a key gets: exact, then the model wildcard, then the fallback (as the run's limiters decide)."""
    return limits.get(key) or limits.get((key[0], key[1], "*")) or FALLBACK_LIMIT


def typical_latency_s(kind: BackendKind, model: str) -> float:
    """The middle of the simulator's latency range for a model (or for what the kind names instead)."""
    lo, hi = SimConfig().latency_for(kind.latency_name(model))
    return (lo + hi) / 2


def agent_latency_s(backend: str, model: str) -> float:
    """The typical latency of an agent on a backend name, where no project is at hand (the live view): a built-in
    kind by its name, an endpoint table's name as the model itself."""
    lo, hi = SimConfig().latency_for(load_kind(backend).latency_name(model) if backend in KINDS else model)
    return (lo + hi) / 2


def _output_tokens(project: Project, agent: AgentSpec) -> int:
    return kind_of(agent.backend, project).typical_output_tokens


def estimate(plan: Plan, selected: list[int], limits: Mapping[Key, RateLimit],
             prices: Mapping[str, tuple[float, float]], *, concurrency: int, time_scale: float = 1.0) -> dict[str, Any]:
    """The plan of the selected phases with per-agent estimates, the order, the limits, and the totals."""
    agents = [a for a in plan.agents if a.phase in selected]
    chosen = {a.id for a in agents}
    rows: list[dict[str, Any]] = []
    nodes: list[Node] = []
    kinds = {a.backend: kind_of(a.backend, plan.project) for a in agents}
    for agent in agents:
        outputs = {d: Output("x" * 4 * _output_tokens(plan.project, plan.by_id[d])) for d in agent.depends_on}
        system, prompt = render_prompt(plan, agent, outputs)
        prompt_tokens = (len(system) + len(prompt)) // 4
        output_tokens = kinds[agent.backend].typical_output_tokens
        latency = typical_latency_s(kinds[agent.backend], agent.model) * time_scale
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
        key = call_key(kinds[agent.backend], agent)
        limit = limit_for(limits, key)
        interval = limit.interval(time_scale)
        start = max(ready, tat.get(key, 0.0) - (limit.burst - 1) * interval)
        tat[key] = max(tat.get(key, 0.0), start) + interval
        return start

    ideal = schedule(nodes, slot)
    for row in rows:
        row["start_s"] = round(ideal.start[row["id"]], 3)
    used = sorted({call_key(kinds[a.backend], a) for a in agents})
    return {
        "project": plan.project.name, "phases": selected,
        "agents": rows,
        "order": [[r["id"] for r in rows if r["phase"] == n] for n in selected],
        "limits": _limit_rows(limits, used),
        "billing_notes": sorted({k.billing_note for k in kinds.values() if k.billing_note}),
        "concurrency": concurrency,
        "estimated_cost_usd": round(sum(r["cost_usd"] for r in rows), 4),
        "estimated_time_s": round(ideal.length_s, 1),
        "critical_path": [s.agent_id for s in ideal.path],
        "assumptions": {"output_tokens": {n: k.typical_output_tokens for n, k in kinds.items()}, "time_scale": time_scale,
                        "components": (None if plan.project.components
                                       else sum(1 for a in plan.agents if a.template == "component"))},
    }


def _limit_rows(limits: Mapping[Key, RateLimit], used: list[Key]) -> dict[str, dict[str, float]]:
    """Each limiter the agents use, and each other limit of their backends (a `[backends.NAME]` table's
    tokens_per_minute, a poll budget), by its key."""
    backends = {k[0] for k in used}
    operations = {(k[0], k[1]) for k in used}
    keys = [*used, *sorted(k for k in limits if k[0] in backends and (k[0], k[1]) not in operations)]
    rows: dict[str, dict[str, float]] = {}
    for key in keys:
        limit = limit_for(limits, key)
        rows["/".join(key)] = {"per_minute": limit.per_minute, "burst": limit.burst}
    return rows


def format_plan(data: dict[str, Any], backend: str, columns: int | None = None) -> str:
    """The estimate as text for a terminal, each line wrapped to `columns` (the terminal's width; 100 in a pipe)
    with its continuation indented under it."""
    width_ = columns or shutil.get_terminal_size((100, 24)).columns
    out: list[str] = []

    def put(text: str, indent: str = "") -> None:
        out.extend(textwrap.wrap(text, width=max(40, width_), initial_indent=indent,
                                 subsequent_indent=indent + "    ", break_on_hyphens=False) or [""])

    put(f"Dry run of {data['project']} on {backend}: nothing is called, nothing is written.")
    put("")
    width = max([16, *(len(r["id"]) for r in data["agents"])])
    for number, ids in zip(data["phases"], data["order"], strict=True):
        put(f"Phase {number}: {PHASES[number][1]}")
        assumed = data.get("assumptions", {}).get("components")
        source = data.get("assumptions", {}).get("architecture_from")
        if number == GROWS_AT and source:
            put(f"(the components of the architecture in {source})", "  ")
        elif number == GROWS_AT and assumed is not None:
            put(f"(the architecture decides these components at run time; priced here as {assumed} independent "
                "ones)", "  ")
        for row in (r for r in data["agents"] if r["id"] in ids):
            after = f" after {', '.join(row['depends_on'])}" if row["depends_on"] else ""
            put(f"{row['id']:<{width}} {row['backend']:<6} {row['model']:<18} ~{row['prompt_tokens']:,} in / "
                f"~{row['output_tokens']:,} out tokens, ~${row['cost_usd']:.4f}, ~{row['latency_s']:.0f} s, "
                f"starts at ~{row['start_s']:.0f} s{after}", "  ")
    put("")
    put(f"Limits: concurrency {data['concurrency']}; " + "; ".join(
        f"{k} {v['per_minute']:g}/min (burst {v['burst']})" for k, v in data["limits"].items()))
    notes = "; ".join(data.get("billing_notes") or [])
    put(f"Estimated cost: ${data['estimated_cost_usd']:.4f} at list prices" + (f" ({notes})." if notes else "."))
    put(f"Estimated time: ~{data['estimated_time_s']:.0f} s along the critical path "
        f"{' -> '.join(data['critical_path'])}.")
    put("Estimates assume typical latencies and outputs; `sparc-cloud report` shows what a run really took.")
    return "\n".join(out) + "\n"
