"""`sparc-cloud report`: what a run did and cost, per phase and per agent, as a table, JSON or Markdown."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sparc_cloud.bundle import AgentRecord, load_bundle
from sparc_cloud.costs import priced
from sparc_cloud.critical_path import from_bundle as critical_path_of
from sparc_cloud.critical_path import session_records
from sparc_cloud.runfolder import RunFolder
from sparc_cloud.terminal import plural


def build_report(run_dir: Path, prices: Mapping[str, tuple[float, float]]) -> dict[str, Any]:
    """The report as plain data (what `--json` prints).

    Costs are estimates at today's price table. An agent's cost is shown also when a later session reused its
    result; the run's total counts every agent that ran in any session (the journal is the ledger), so a resume
    or a rerun never makes a run look cheaper than it was."""
    bundle = load_bundle(run_dir / "bundle.json")
    ledger = RunFolder(run_dir).read_journal(bundle.run_id, cost=lambda record: priced(prices, record))
    phases = []
    throttled: dict[str, float] = {}
    by_backend: dict[str, dict[str, Any]] = {}
    total_cost = 0.0
    for phase in bundle.phases:
        rows: list[dict[str, Any]] = []
        for a in phase.agents:
            cost = priced(prices, a) or (a.cost_usd or 0.0)  # no price today: what it cost when it ran
            total_cost += cost
            throttled[a.model] = round(throttled.get(a.model, 0.0) + a.throttled_s, 3)
            share = by_backend.setdefault(a.backend, {"agents": 0, "tokens": 0, "cost_usd": 0.0})
            share["agents"] += 1
            share["tokens"] += a.usage.total_tokens
            share["cost_usd"] = round(share["cost_usd"] + cost, 6)
            rows.append({
                "id": a.id, "title": a.title, "status": a.status, "model": a.model, "backend": a.backend,
                "latency_s": a.latency_s, "attempts": a.attempts, "rate_limited_429": a.rate_limited,
                "throttled_s": a.throttled_s, "tokens": a.usage.total_tokens, "tokens_estimated": a.usage_estimated,
                "cost_usd": round(cost, 6), "reused": a.reused, "edited": a.edited,
                "error": a.error, **_contract_fields(a),
            })
        phases.append({"number": phase.number, "name": phase.name, "status": phase.status, "stale": phase.stale,
                       "stale_reason": phase.stale_reason, "agents": rows,
                       "latency_s": round(sum(r["latency_s"] for r in rows), 3),
                       "tokens": sum(r["tokens"] for r in rows),
                       "cost_usd": round(sum(r["cost_usd"] for r in rows), 6)})
    wall = float(bundle.totals.get("wall_time_s") or 0.0)
    # The agents of the session the wall time belongs to: the latest that ran any (a no-op resume ran none).
    agent_time = sum(a.latency_s for a in session_records(bundle))
    path = critical_path_of(bundle)
    return {
        "project": bundle.project, "run_id": bundle.run_id, "backend": bundle.backend,
        "started_at": bundle.started_at, "finished_at": bundle.finished_at,
        "phases": phases,
        "totals": {
            "agents": bundle.totals.get("agents", {}),
            "tokens": bundle.totals.get("tokens", {}),
            "cost_usd": round(ledger.spent_usd if ledger.record_lines else max(total_cost, bundle.spent_usd), 6),
            "records_cost_usd": round(total_cost, 6),
            "sessions": max(1, len(bundle.sessions)),
            "wall_time_s": wall,
            "sequential_estimate_s": round(agent_time, 3),
            "speedup": round(agent_time / wall, 2) if wall else None,
            "throttled_s_by_model": {m: s for m, s in throttled.items() if s},
            "by_backend": by_backend,
        },
        "prices_usd_per_million_tokens": {m: list(p) for m, p in prices.items()},
        **critical_path_fields(path.to_dict() if path is not None else None),
    }


def _contract_fields(a: AgentRecord) -> dict[str, Any]:
    """How an agent's answer met its contract: valid, repaired (after one turn), broken; and what was wrong."""
    if a.contract is None:
        state = None
    elif a.output_json is not None:
        state = "repaired" if a.contract_repaired else "valid"
    else:
        state = "broken" if a.contract_errors else None
    return {"contract": a.contract, "contract_status": state, "contract_errors": a.contract_errors or [],
            "schema_fallback": a.schema_fallback}


def contract_lines(report: dict[str, Any]) -> list[str]:
    """One line per agent whose answer broke its contract (repaired or not) or whose server refused the schema."""
    lines = []
    for phase in report["phases"]:
        for a in phase["agents"]:
            if a.get("contract_errors"):
                how = "repaired by one repair turn" if a["contract_status"] == "repaired" else "broken twice"
                lines.append(f"Contract {a['contract']} of {a['id']}: {how}; the first answer broke it: "
                             + "; ".join(a["contract_errors"][:3]))
            if a.get("schema_fallback"):
                lines.append(f"Contract {a['contract']} of {a['id']}: the server refused the JSON Schema; asked again "
                             f"with {'response_format json_object and ' if a['schema_fallback'] == 'json_object' else ''}"
                             "the schema in the prompt")
    return lines


def critical_path_fields(path: dict[str, Any] | None) -> dict[str, Any]:
    """The critical-path keys of the report (`critical_path`, `lower_bound_s`, `makespan_s`, `ratio`, ...); empty
    values when no agent ran in the latest session."""
    if path is None:
        return {"critical_path": [], "critical_path_steps": [], "lower_bound_s": None, "makespan_s": None,
                "ratio": None, "throttled_on_critical_path_s": 0.0}
    return path


def critical_path_lines(report: dict[str, Any]) -> list[str]:
    """The critical path in words: its agents and their times, the bound it sets, the makespan, their ratio and
    the time lost to throttling on it."""
    steps = report.get("critical_path_steps") or []
    if not steps:
        return ["Critical path: no agent ran in the latest session."]
    chain = " -> ".join(f"{s['id']} ({s['duration_s']:.2f} s)" for s in steps)
    made = report.get("makespan_s")
    ratio = report.get("ratio")
    tail = (f"; measured makespan {made:.2f} s, ratio {ratio:.3f}" if made is not None and ratio is not None
            else "; makespan not measured yet")
    return [f"Critical path: {chain}",
            f"Lower bound {report['lower_bound_s']:.2f} s{tail}; "
            f"{report['throttled_on_critical_path_s']:.2f} s lost to throttling on the path."]


def to_markdown(report: dict[str, Any]) -> str:
    """The report as a Markdown table, for a pull request."""
    t = report["totals"]
    lines = [
        f"### sparc-cloud run `{report['run_id']}` of **{report['project']}** ({report['backend']})",
        "",
        f"{t['agents'].get('completed', 0)} completed, {t['agents'].get('failed', 0)} failed, "
        f"{t['agents'].get('skipped', 0)} skipped; {t['tokens'].get('total_tokens', 0):,} tokens; "
        f"estimated ${t['cost_usd']:.4f} over {t['sessions']} session(s); "
        f"wall {t['wall_time_s']:.1f} s vs {t['sequential_estimate_s']:.1f} s "
        f"one at a time (speed-up {t['speedup']}).",
        "",
        "| phase | agent | status | model | latency s | attempts | 429s | tokens | est. $ |",
        "|---|---|---|---|---:|---:|---:|---:|---:|",
    ]
    for phase in report["phases"]:
        label = f"{phase['number']} {phase['name']}" + (" (stale)" if phase["stale"] else "")
        for a in phase["agents"]:
            status = a["status"] + (" (reused)" if a["reused"] else "") + (" (edited)" if a["edited"] else "")
            lines.append(f"| {label} | {a['id']} | {status} | {a['model']} | {a['latency_s']:.2f} | {a['attempts']} | "
                         f"{a['rate_limited_429']} | {a['tokens']:,} | {a['cost_usd']:.4f} |")
    if backend_line(report):
        lines += ["", str(backend_line(report))]
    if t["throttled_s_by_model"]:
        lines += ["", "Time lost to throttling: " + ", ".join(f"{m} {s:.1f} s" for m, s in t["throttled_s_by_model"].items())]
    lines += ["", *critical_path_lines(report)]
    lines += [f"\n{line}" for line in contract_lines(report)]
    lines += [f"\nPhase {p['number']} ({p['name']}) is stale: {p['stale_reason'] or 'its inputs changed'}."
              for p in report["phases"] if p["stale"]]
    return "\n".join(lines) + "\n"


_COLUMNS = ("agent", "status", "model", "latency s", "attempts", "429s", "throttled s", "tokens", "est. $")


def _cells(a: dict[str, Any]) -> list[str]:
    status = a["status"] + (" (reused)" if a["reused"] else "") + (" (edited)" if a["edited"] else "") + (
        f" ({a['contract_status']})" if a.get("contract_status") in ("repaired", "broken") else "")
    return [a["id"], status, a["model"], f"{a['latency_s']:.2f}", str(a["attempts"]), str(a["rate_limited_429"]),
            f"{a['throttled_s']:.1f}", f"{a['tokens']:,}", f"{a['cost_usd']:.4f}"]


def _phase_title(phase: dict[str, Any]) -> str:
    stale = f", stale: {phase['stale_reason'] or 'its inputs changed'}" if phase["stale"] else ""
    return f"Phase {phase['number']}: {phase['name']} ({phase['status']}{stale})"


def _totals_line(report: dict[str, Any]) -> str:
    t = report["totals"]
    return (f"Total: {t['tokens'].get('total_tokens', 0):,} tokens, estimated ${t['cost_usd']:.4f} over "
            f"{t['sessions']} session(s), wall "
            f"{t['wall_time_s']:.1f} s, {t['sequential_estimate_s']:.1f} s one agent at a time (speed-up {t['speedup']}).")


def backend_line(report: dict[str, Any]) -> str | None:
    """`By backend: NAME N agents, T tokens, $C; ...` (`1 agent`) when a run used more than one backend."""
    shares = report["totals"].get("by_backend") or {}
    if len(shares) < 2:
        return None
    parts = []
    for name, share in shares.items():
        tokens = f"{share['tokens']:,} token" + ("" if share["tokens"] == 1 else "s")
        parts.append(f"{name} {plural(share['agents'], 'agent')}, {tokens}, ${share['cost_usd']:.4f}")
    return "By backend: " + "; ".join(parts)


def plain_text(report: dict[str, Any]) -> str:
    """The report as plain aligned text, every cell in full (for pipes, files and narrow terminals)."""
    lines: list[str] = []
    for phase in report["phases"]:
        rows = [list(_COLUMNS), *(_cells(a) for a in phase["agents"])]
        widths = [max(len(r[i]) for r in rows) for i in range(len(_COLUMNS))]
        lines.append(_phase_title(phase))
        for row in rows:
            lines.append("  ".join(c.ljust(w) if i < 3 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths,
                                                                                                       strict=True))).rstrip())
        lines.append("")
    lines.append(_totals_line(report))
    lines += [line for line in (backend_line(report),) if line]
    t = report["totals"]
    if t["throttled_s_by_model"]:
        lines.append("Time lost to throttling: " + ", ".join(f"{m} {s:.1f} s" for m, s in t["throttled_s_by_model"].items()))
    lines += critical_path_lines(report)
    lines += contract_lines(report)
    return "\n".join(lines) + "\n"


def print_table(report: dict[str, Any]) -> None:
    """The report as rich tables on a terminal wide enough for every cell; plain text otherwise (off a TTY, or
    a narrow terminal): no cell is ever cut short."""
    import sys

    from rich.console import Console
    from rich.measure import Measurement
    from rich.table import Table

    console = Console()
    tables = []
    for phase in report["phases"]:
        table = Table(title=_phase_title(phase), title_justify="left")
        for column in _COLUMNS:
            table.add_column(column, justify="left" if column in ("agent", "status", "model") else "right",
                             no_wrap=True)
        for a in phase["agents"]:
            table.add_row(*_cells(a))
        tables.append(table)
    unbounded = console.options.update(max_width=10_000)
    if not console.is_terminal or any(Measurement.get(console, unbounded, t).maximum > console.width for t in tables):
        sys.stdout.write(plain_text(report))
        sys.stdout.flush()
        return
    for table in tables:
        console.print(table)
    t = report["totals"]
    console.print(_totals_line(report), highlight=False, markup=False)
    if backend_line(report):
        console.print(backend_line(report), highlight=False, markup=False)
    if t["throttled_s_by_model"]:
        console.print("Time lost to throttling: " + ", ".join(f"{m} {s:.1f} s" for m, s in t["throttled_s_by_model"].items()),
                      highlight=False, markup=False)
    for line in critical_path_lines(report) + contract_lines(report):
        console.print(line, highlight=False, markup=False)
