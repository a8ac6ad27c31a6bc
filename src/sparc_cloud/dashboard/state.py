"""What the dashboard shows, read from a run folder: the plan, the bundle, the journal and the event stream.

Everything here only reads. The bundle is written at the start of a run and after each phase; the journal gets a
line the moment an agent finishes; `events.jsonl` gets every state change. A view of a run in progress merges the
three: the plan gives every agent (also those not started), the journal the newest record of each finished one,
and the events of the latest session the live status of the rest."""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from sparc_cloud.bundle import AgentRecord, Bundle, load_bundle
from sparc_cloud.critical_path import Node, Progress, expected_durations, schedule, time_left
from sparc_cloud.dryrun import agent_latency_s
from sparc_cloud.errors import SparcError
from sparc_cloud.phases import PHASES, Output, Plan, plan_for, render_prompt
from sparc_cloud.runfolder import JournalState

TERMINAL = ("completed", "failed", "skipped", "reused")
_KIND_STATUS = {
    "agent_queued": "queued", "agent_started": "running", "agent_waiting": "waiting", "agent_retrying": "waiting",
    "agent_rate_limited": "waiting", "agent_polled": "running", "agent_attached": "running",
    "agent_repairing": "running",
    "agent_finished": "completed", "agent_failed": "failed", "agent_skipped": "skipped", "agent_reused": "reused",
}


def seconds(stamp: object) -> float | None:
    """An ISO-8601 timestamp as POSIX seconds (None if it is not one)."""
    if not isinstance(stamp, str) or not stamp:
        return None
    try:
        return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def read_no_link(path: Path, offset: int = 0) -> bytes:
    """The bytes of the regular file `path` from `offset`; nothing when it is missing, not a regular file, or a
    symbolic link (a run folder someone sent may carry a link to a file elsewhere: never read through it)."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except OSError:
        return b""
    with os.fdopen(fd, "rb") as handle:
        if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
            return b""
        handle.seek(offset)
        return handle.read()


def event_line(line: str) -> dict[str, Any] | None:
    """One line of `events.jsonl` as an event, None for anything that is not one (damaged, half-written, foreign)."""
    try:
        item = json.loads(line)
    except ValueError:
        return None
    return item if isinstance(item, dict) and isinstance(item.get("kind"), str) else None


def iter_event_lines(path: Path) -> Iterator[dict[str, Any]]:
    """The events of `events.jsonl`, oldest first; a damaged or half-written line is skipped."""
    for line in read_no_link(path).decode("utf-8", errors="replace").splitlines():
        item = event_line(line)
        if item is not None:
            yield item


@dataclass
class AgentLive:
    """What the events of the latest session say about one agent."""

    status: str = "pending"
    started: float | None = None
    finished: float | None = None
    retries: int = 0
    rate_limited: int = 0
    throttled_s: float = 0.0
    polls: int = 0
    note: str = ""


@dataclass
class SessionEvents:
    """The events of the latest session folded per agent."""

    agents: dict[str, AgentLive] = field(default_factory=dict)
    started: float | None = None
    done: float | None = None
    exit_code: int | None = None
    count: int = 0


def fold_events(events: list[dict[str, Any]]) -> SessionEvents:
    """Fold the events after the last `run_started` (the latest session) into per-agent state."""
    last = max((i for i, e in enumerate(events) if e.get("kind") == "run_started"), default=0)
    out = SessionEvents(count=len(events))
    for event in events[last:]:
        kind = str(event.get("kind"))
        at = seconds(event.get("at"))
        data = event.get("data") if isinstance(event.get("data"), dict) else {}
        assert isinstance(data, dict)
        if kind == "run_started":
            out.started = at
        elif kind == "run_done":
            out.done = at
            code = data.get("exit_code")
            out.exit_code = code if isinstance(code, int) else None
        agent_id = event.get("agent_id")
        if not isinstance(agent_id, str) or kind not in _KIND_STATUS:
            continue
        live = out.agents.setdefault(agent_id, AgentLive())
        live.status = _KIND_STATUS[kind]
        live.note = str(event.get("message") or "")
        if kind == "agent_started" or (kind == "agent_attached" and live.started is None):
            live.started = at
        elif kind in ("agent_retrying", "agent_rate_limited"):
            live.retries += 1
            if kind == "agent_rate_limited":
                live.rate_limited += 1
                live.throttled_s += _number(data.get("wait_s"))
        elif kind == "agent_waiting":
            live.throttled_s += _number(data.get("wait_s"))
        elif kind == "agent_polled":
            live.polls += 1
        if live.status in TERMINAL:
            live.finished = at
    return out


def _number(value: object) -> float:
    return float(value) if isinstance(value, int | float) else 0.0


def read_journal(path: Path, run_id: str | None) -> JournalState:
    """The journal's records of `run_id`, read without warnings (a line being written is simply not there yet)."""
    state = JournalState(run_id=run_id)
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return state
    for line in text.splitlines():
        try:
            state.take(json.loads(line), None)
        except (ValueError, KeyError, TypeError, AttributeError):
            continue
    return state


def load_plan(bundle: Bundle | None) -> Plan | None:
    """The plan of the bundle's project, if its project file can still be read (None otherwise)."""
    if bundle is None:
        return None
    from sparc_cloud.project import load_project, load_templates

    source = bundle.project_source.removeprefix("builtin:") if bundle.project_source else bundle.project
    for ref in dict.fromkeys((source, bundle.project)):
        try:
            project, _ = load_project(ref)
            if project.name != bundle.project:
                continue
            return plan_for(project, load_templates(project), bundle.records())  # phase 4 as its architecture says
        except (SparcError, OSError, ValueError):
            continue
    return None


class RunView:
    """A read-only view of one run folder, rebuilt from disk on each call (a run folder is small)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._plan_key: tuple[str, str, str | None] | None = None
        self._plan: Plan | None = None

    @property
    def events_path(self) -> Path:
        """The run's event stream."""
        return self.folder / "events.jsonl"

    def _bundle(self) -> Bundle | None:
        try:
            return load_bundle(self.folder / "bundle.json")
        except SparcError:
            return None

    def _plan_for(self, bundle: Bundle | None) -> Plan | None:
        arch = bundle.records().get("p3-architecture") if bundle is not None else None
        key = (bundle.project, bundle.project_source, arch.finished_at if arch is not None else None) \
            if bundle is not None else None
        if key != self._plan_key:
            self._plan_key, self._plan = key, load_plan(bundle)
        return self._plan

    def _records(self, bundle: Bundle | None) -> dict[str, AgentRecord]:
        records = bundle.records() if bundle is not None else {}
        if bundle is not None:
            records.update(read_journal(self.folder / "journal.jsonl", bundle.run_id).records)
        return records

    def snapshot(self, now: float | None = None) -> dict[str, Any]:
        """The run as the bundle has it, newest journal records merged in, with every agent's live status, the
        (projected) critical path, elapsed time, cost so far and an ETA."""
        import time

        now = time.time() if now is None else now
        bundle = self._bundle()
        plan = self._plan_for(bundle)
        records = self._records(bundle)
        session = fold_events(list(iter_event_lines(self.events_path)))
        last_session = bundle.sessions[-1] if bundle is not None and bundle.sessions else None
        finished = session.done is not None or (last_session is not None and last_session.finished_at is not None)
        selected = set(last_session.phases) if last_session is not None else set(PHASES)

        order: list[tuple[str, int, str, str, str, list[str]]] = []  # id, phase, title, backend, model, deps
        if plan is not None:
            order = [(a.id, a.phase, a.title, a.backend, a.model, list(a.depends_on)) for a in plan.agents]
        known = {o[0] for o in order}
        for other in records.values():
            if other.id not in known:
                order.append((other.id, other.phase, other.title, other.backend, other.model, list(other.depends_on)))
                known.add(other.id)
        agents: list[dict[str, Any]] = []
        for aid, phase, title, backend, model, deps in order:
            rec = records.get(aid)
            live = session.agents.get(aid)
            in_session = phase in selected
            if live is not None:
                status = live.status
            elif rec is not None:
                status = "reused" if rec.reused else rec.status
            else:
                status = "pending"
            if status == "completed" and rec is not None and rec.reused:
                status = "reused"
            started = live.started if live is not None else seconds(rec.started_at if rec else None)
            if rec is not None and status in TERMINAL:
                elapsed: float | None = rec.latency_s
            elif started is not None and status not in TERMINAL and not finished:
                elapsed = max(0.0, now - started)
            else:
                elapsed = None
            agents.append({
                "id": aid, "phase": phase, "title": title or (rec.title if rec else ""), "backend": backend,
                "model": rec.model if rec is not None and status in TERMINAL else model, "depends_on": deps,
                "status": status, "in_session": in_session, "note": live.note if live else "",
                "elapsed_s": round(elapsed, 3) if elapsed is not None else None,
                "latency_s": rec.latency_s if rec else None, "attempts": rec.attempts if rec else 0,
                "retries": live.retries if live else 0,
                "rate_limited_429": max(live.rate_limited if live else 0, rec.rate_limited if rec else 0),
                "throttled_s": round(max(live.throttled_s if live else 0.0, rec.throttled_s if rec else 0.0), 3),
                "tokens": rec.usage.total_tokens if rec else 0, "tokens_estimated": rec.usage_estimated if rec else False,
                "cost_usd": rec.cost_usd if rec and rec.cost_usd is not None else 0.0,
                "error": rec.error if rec else None, "task_id": rec.task_id if rec else None,
                "polls": (rec.polls or 0) if rec else (live.polls if live else 0),
                "stale": False, "critical": False,
            })
        by_id = {a["id"]: a for a in agents}
        path, eta = _projection(agents, finished)
        for aid in path:
            by_id[aid]["critical"] = True
        spent = read_journal(self.folder / "journal.jsonl", bundle.run_id).spent_usd if bundle is not None else 0.0
        cost = max(spent, bundle.spent_usd if bundle is not None else 0.0)
        start = session.started or (seconds(last_session.started_at) if last_session else None)
        end = session.done if session.done is not None else (
            seconds(last_session.finished_at) if last_session and last_session.finished_at else None)
        if end is None and finished:
            end = now
        elapsed_run = (end if end is not None else now) - start if start is not None else None
        counts: dict[str, int] = {}
        for a in agents:
            if a["in_session"]:
                counts[a["status"]] = counts.get(a["status"], 0) + 1
        phases = []
        stale = {p.number: p for p in bundle.phases} if bundle is not None else {}
        for number, (_, name) in sorted(PHASES.items()):
            members = [a for a in agents if a["phase"] == number]
            record = stale.get(number)
            for a in members:
                a["stale"] = bool(record and record.stale)
            phases.append({
                "number": number, "name": name, "agents": members,
                "status": record.status if record is not None else "pending",
                "stale": bool(record and record.stale), "stale_reason": record.stale_reason if record else None,
                "done": sum(1 for a in members if a["status"] in ("completed", "reused")), "total": len(members),
            })
        return {
            "project": bundle.project if bundle else None, "run_id": bundle.run_id if bundle else None,
            "backend": bundle.backend if bundle else None, "started_at": bundle.started_at if bundle else None,
            "finished_at": bundle.finished_at if bundle else None, "totals": bundle.totals if bundle else {},
            "sessions": [s.model_dump() for s in bundle.sessions] if bundle else [],
            "phases": phases,
            "live": {
                "finished": finished, "exit_code": session.exit_code, "elapsed_s": _r(elapsed_run),
                "cost_usd": round(cost, 6), "eta_s": 0.0 if finished else _r(eta), "counts": counts,
                "critical_path": path, "events": session.count,
            },
        }

    def agent(self, agent_id: str) -> dict[str, Any] | None:
        """One agent in full: its record (output, diff, worklog, usage, ...), live counters and, when every
        agent it reads has finished, the prompt it was (or will be) given. None for an unknown id."""
        snap = self.snapshot()
        row = next((a for p in snap["phases"] for a in p["agents"] if a["id"] == agent_id), None)
        if row is None:
            return None
        bundle = self._bundle()
        records = self._records(bundle)
        rec = records.get(agent_id)
        detail: dict[str, Any] = {**row, "record": rec.model_dump(mode="json") if rec else None,
                                  "system": None, "prompt": None}
        plan = self._plan_for(bundle)
        spec = plan.by_id.get(agent_id) if plan is not None else None
        if plan is not None and spec is not None and all(d in records for d in spec.depends_on):
            outputs = {d: Output(records[d].output_text, records[d].diff, records[d].output_json) for d in spec.depends_on}
            detail["system"], detail["prompt"] = render_prompt(plan, spec, outputs)
        return detail


def _r(value: float | None) -> float | None:
    return round(value, 3) if value is not None else None


def _projection(agents: list[dict[str, Any]], finished: bool) -> tuple[list[str], float | None]:
    """The critical path of the latest session (measured where agents finished, expected where they have not)
    and the time left until its end (None while nothing has finished to estimate from)."""
    session = [a for a in agents if a["in_session"] and a["status"] not in ("reused", "skipped")]
    items = [Progress(a["id"], tuple(a["depends_on"]), a["model"], a["status"] in TERMINAL,
                      float(a["latency_s"] or 0.0), float(a["elapsed_s"] or 0.0),
                      agent_latency_s(a["backend"], a["model"])) for a in session]
    expected = expected_durations(items) or {}
    nodes = [Node(i.id, i.depends_on, i.latency_s if i.done else max(expected.get(i.id, 0.0), i.elapsed_s))
             for i in items]
    try:
        path = [s.agent_id for s in schedule(nodes).path]
    except ValueError:
        path = []
    return path, 0.0 if finished else time_left(items)
