"""The live progress view: one row per agent, grouped by phase, fed by the run's event stream."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from sparc_cloud.critical_path import Progress, time_left
from sparc_cloud.dryrun import agent_latency_s
from sparc_cloud.events import Event
from sparc_cloud.phases import PHASES, AgentSpec
from sparc_cloud.terminal import clean

WIDE = 110  # narrower terminals get the compact layout: no model column, the "why waiting" note on its own line

_STYLE = {"queued": "dim", "running": "cyan", "waiting": "yellow", "completed": "green", "reused": "green",
          "failed": "bold red", "skipped": "magenta"}


@dataclass
class _Row:
    agent: AgentSpec
    status: str = "queued"
    started: float | None = None
    elapsed: float | None = None
    retries: int = 0
    tokens: int = 0
    note: str = ""


class LiveProgress:
    """An event sink that keeps one row per agent and renders them (use as a context manager)."""

    def __init__(self, agents: list[AgentSpec], console: Console | None = None) -> None:
        self.rows = {a.id: _Row(a) for a in agents}
        self.console = console or Console(stderr=True)  # progress goes to stderr: stdout carries results only
        self.started = time.monotonic()
        self.live: Live | None = None
        self.spent_usd = 0.0  # what the run has cost so far (the pipeline keeps it up to date)

    def __call__(self, event: Event) -> None:
        row = self.rows.get(event.agent_id or "")
        if row is None:
            return
        now = time.monotonic()
        data: dict[str, Any] = event.data if isinstance(event.data, dict) else {}
        if event.kind == "agent_started":
            row.status, row.started, row.note = "running", now, ""
        elif event.kind == "agent_waiting":
            row.status, row.note = "waiting", event.message
        elif event.kind in ("agent_retrying", "agent_rate_limited"):
            row.retries += 1
            row.status, row.note = "waiting", event.message
        elif event.kind == "agent_repairing":
            row.status, row.note = "running", "repair turn: " + event.message
        elif event.kind == "agent_attached":
            row.status, row.started, row.note = "running", row.started or now, event.message
        elif event.kind == "agent_polled":
            row.status, row.note = "running", f"task {data.get('status', '')}"
        elif event.kind in ("agent_finished", "agent_failed", "agent_skipped", "agent_reused"):
            row.status = {"agent_finished": "completed", "agent_failed": "failed", "agent_skipped": "skipped",
                          "agent_reused": "reused"}[event.kind]
            row.elapsed = (now - row.started) if row.started else 0.0
            row.tokens = int(data.get("tokens") or 0)
            row.note = event.message if event.kind in ("agent_failed", "agent_skipped") else ""
        if self.live is not None:
            self.live.refresh()

    def replace_phase(self, number: int, agents: list[AgentSpec]) -> None:
        """The agents of a phase the run decided late (phase 4 after the architecture): rows follow them."""
        kept = {aid: row for aid, row in self.rows.items() if row.agent.phase != number}
        fresh = {a.id: self.rows.get(a.id) or _Row(a) for a in agents}
        ordered = sorted([*kept.items(), *fresh.items()], key=lambda item: item[1].agent.phase)
        self.rows = dict(ordered)
        if self.live is not None:
            self.live.refresh()

    def mark_skipped(self, agent_id: str, reason: str) -> None:
        """Record an agent the runner skipped without running it."""
        row = self.rows.get(agent_id)
        if row is not None and row.status in ("queued", "running", "waiting"):
            row.status, row.note = "skipped", reason

    def footer(self, now: float | None = None) -> str:
        """Elapsed time, per-phase counts (done/total), statuses, tokens, cost so far and an ETA."""
        now = time.monotonic() if now is None else now
        phases: dict[int, list[_Row]] = {}
        for row in self.rows.values():
            phases.setdefault(row.agent.phase, []).append(row)
        per_phase = "  ".join(f"P{n} {sum(r.status in ('completed', 'reused') for r in rows)}/{len(rows)}"
                              for n, rows in sorted(phases.items()))
        counts: dict[str, int] = {}
        for row in self.rows.values():
            counts[row.status] = counts.get(row.status, 0) + 1
        tokens = sum(r.tokens for r in self.rows.values())
        eta = self.eta(now)
        eta_text = "done" if eta == 0.0 else ("estimating" if eta is None else f"~{eta:.0f}s")
        return (f"{now - self.started:.1f}s  {per_phase}  " + " ".join(f"{k} {v}" for k, v in counts.items())
                + f"  tokens {tokens:,}  ${self.spent_usd:.4f} so far  ETA {eta_text}")

    def eta(self, now: float | None = None) -> float | None:
        """Seconds until the last agent should finish (None until one has finished to estimate from)."""
        now = time.monotonic() if now is None else now
        items = []
        for row in self.rows.values():
            if row.status in ("reused", "skipped"):
                continue
            done = row.status in ("completed", "failed")
            running = (now - row.started) if row.started is not None and not done else 0.0
            items.append(Progress(row.agent.id, tuple(row.agent.depends_on), row.agent.model, done,
                                  row.elapsed or 0.0, running, agent_latency_s(row.agent.backend, row.agent.model)))
        return time_left(items)

    def _narrow(self, now: float) -> Group:
        """The compact layout: agent, status, elapsed, retries, tokens; the note on its own line, in full."""
        width = max([len(r.agent.id) for r in self.rows.values()] + [5]) + 2
        lines: list[Text] = [Text(f"{'agent':<{width}} {'status':<9} {'elapsed':>7} {'retries':>7} {'tokens':>8}",
                                  style="bold")]
        last_phase = None
        for row in self.rows.values():
            if row.agent.phase != last_phase:
                last_phase = row.agent.phase
                lines.append(Text(f"Phase {last_phase}: {PHASES[last_phase][1]}", style="bold"))
            elapsed = row.elapsed if row.elapsed is not None else (now - row.started if row.started else None)
            line = Text(f"  {row.agent.id:<{width - 2}} ")
            line.append(f"{row.status:<9}", style=_STYLE.get(row.status, ""))
            line.append(f" {f'{elapsed:.1f}s' if elapsed is not None else '':>7} {str(row.retries or ''):>7} "
                        f"{f'{row.tokens:,}' if row.tokens else '':>8}")
            lines.append(line)
            if row.note:
                lines.append(Text(f"      {clean(row.note, one_line=True)}", style="dim"))
        lines.append(Text(self.footer(now), style="bold"))
        return Group(*lines)

    def __rich__(self) -> Group:
        now = time.monotonic()
        if self.console.width < WIDE:
            return self._narrow(now)
        table = Table(expand=True, show_edge=False, pad_edge=False)
        for column, justify in (("agent", "left"), ("status", "left"), ("model", "left"), ("elapsed", "right"),
                                ("retries", "right"), ("tokens", "right"), ("", "left")):
            table.add_column(column, justify=justify, no_wrap=column != "")  # type: ignore[arg-type]
        last_phase = None
        for row in self.rows.values():
            if row.agent.phase != last_phase:
                last_phase = row.agent.phase
                table.add_row(Text(f"Phase {last_phase}: {PHASES[last_phase][1]}", style="bold"), "", "", "", "", "",
                              "")
            elapsed = row.elapsed if row.elapsed is not None else (now - row.started if row.started else None)
            # Text, not markup; control characters from project files and servers escaped.
            table.add_row(Text(f"  {row.agent.id}"), Text(row.status, style=_STYLE.get(row.status, "")),
                          Text(clean(row.agent.model, one_line=True)), f"{elapsed:.1f}s" if elapsed is not None else "",
                          str(row.retries or ""), f"{row.tokens:,}" if row.tokens else "",
                          Text(clean(row.note, one_line=True)[:90], style="dim"))
        return Group(table, Text(self.footer(now), style="bold"))

    def __enter__(self) -> LiveProgress:
        self.live = Live(self, console=self.console, refresh_per_second=4, transient=False)
        self.live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.live is not None:
            self.live.refresh()
            self.live.__exit__(None, None, None)
            self.live = None
