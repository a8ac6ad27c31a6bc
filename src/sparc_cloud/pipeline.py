"""One `sparc-cloud run`: project -> plan -> run folder -> backends -> Runner -> journal and bundle.

This is where the pieces meet; each piece stays ignorant of the others (see docs/ARCHITECTURE.md)."""

from __future__ import annotations

import logging
import secrets as pysecrets
import signal
import tempfile
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from sparc_cloud.agents import AgentExecutor
from sparc_cloud.backends.assemble import build_backends, price_table, project_limits, run_limits
from sparc_cloud.backends.base import Backend, BuildContext
from sparc_cloud.bundle import (
    AgentRecord,
    Bundle,
    PhaseRecord,
    Session,
    compute_totals,
    new_phase,
    phase_status,
    utc_now,
)
from sparc_cloud.clients.factory import ClientContext
from sparc_cloud.costs import Budget, record_cost
from sparc_cloud.errors import Cancelled, ConfigError, RunFolderWriteError, SparcError
from sparc_cloud.events import Event, EventBus, JsonlSink, JsonStreamSink, LogSink, PlainConsoleSink
from sparc_cloud.http.clock import RealClock
from sparc_cloud.notify import Notifier
from sparc_cloud.options import RunOptions, RunOutcome, continue_command, default_folder, phase_span
from sparc_cloud.phases import GROWS_AT, PHASES, AgentSpec, Plan, phase_dir, plan_for
from sparc_cloud.prior import (
    Planned,
    Prior,
    check_prerequisites,
    live_tasks,
    load_prior,
    planned,
    previous_run_id,
    selected_phases,
)
from sparc_cloud.project import Project, load_project, load_templates
from sparc_cloud.redact import RedactingFilter, SecretRegistry
from sparc_cloud.runfolder import JournalState, RunFolder, TaskMark
from sparc_cloud.settings import Settings
from sparc_cloud.sim import SimConfig, Simulator
from sparc_cloud.sim.remote import remote_settings
from sparc_cloud.simhome import new_home
from sparc_cloud.terminal import clean

if TYPE_CHECKING:
    from sparc_cloud.progress import LiveProgress
    from sparc_cloud.runner import RunnerHooks

log = logging.getLogger("sparc_cloud")


@contextmanager
def _logging_to(folder: RunFolder, secrets: SecretRegistry) -> Iterator[None]:
    stream = folder.open_stream(folder.log_path.name)  # no link followed; a failed write stops the run, no traceback
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    handler.addFilter(RedactingFilter(secrets))
    handler.setLevel(logging.INFO)
    root = logging.getLogger("sparc_cloud")
    # Every handler already there (the console's under -v) masks the run's secrets as run.log does.
    masking = RedactingFilter(secrets)
    others = list(root.handlers)
    for other in others:
        other.addFilter(masking)
    root.addHandler(handler)
    before = root.level
    # run.log takes INFO and up; a lower level asked for on the console (-vv) stays in force during the run.
    root.setLevel(min(before, logging.INFO) if before else logging.INFO)
    try:
        yield
    finally:
        root.setLevel(before)
        root.removeHandler(handler)
        for other in others:
            other.removeFilter(masking)
        handler.close()
        stream.close()


class _Sim:
    """The simulator a `--backend sim` run uses (in-process, or one already serving at SPARC_SIM_URL) and the
    settings that aim the clients at it."""

    def __init__(self, options: RunOptions) -> None:
        self.sim: Simulator | None = None
        self.home: tempfile.TemporaryDirectory[str] | None = None
        base = options.settings
        if options.simulator is None and base.sim_url:
            overrides, self.time_scale = remote_settings(base)
            self.owned = False
            self.url = (base.sim_url or "").rstrip("/")
        else:
            config = options.sim_config or SimConfig(time_scale=base.sim_time_scale, seed=base.sim_seed)
            self.owned = options.simulator is None
            self.sim = options.simulator or Simulator(config).start()
            self.home = new_home()  # named after this process; dead processes' leftovers are removed
            overrides = self.sim.client_settings(Path(self.home.name))
            self.time_scale = self.sim.config.time_scale
            self.url = self.sim.url
        self.settings = Settings.model_validate({**base.model_dump(), **overrides})

    def close(self) -> None:
        if self.owned and self.sim is not None:
            self.sim.stop()
        if self.home is not None:
            self.home.cleanup()


@dataclass
class _Run:
    """One session of a run, as the stages after the backends are built share it."""

    options: RunOptions
    plan: Plan
    selected: list[int]
    folder: RunFolder
    bundle: Bundle
    session: Session
    records: dict[str, AgentRecord]
    backends: dict[str, Backend]
    ctx: ClientContext
    secrets: SecretRegistry
    settings: Settings
    prices: dict[str, tuple[float, float]]
    attach: dict[str, TaskMark]
    earlier: dict[int, list[str]] = field(default_factory=dict)  # agents the selected phases had before this session
    kept: dict[int, PhaseRecord] = field(default_factory=dict)  # the selected phases' records before this session
    not_rerun: list[str] = field(default_factory=list)  # agents never started now whose earlier record stays
    dropped: list[str] = field(default_factory=list)  # of those, the ones the grown phase no longer has


def run(options: RunOptions) -> RunOutcome:
    """Run (or rerun, or resume) a project. Raises ConfigError/AuthError before any call for bad input.

    The stages: load the project and the prior records, aim at the clouds (or the simulator), build the
    backends, open the session in the run folder, then `_execute` (pre-flight, run, summarise)."""
    project, source = load_project(options.project)
    templates = load_templates(project)
    selected = selected_phases(options)
    folder = RunFolder(options.output or default_folder(options.settings, project))
    folder.prepare(create_parents=options.output is None)
    folder.lock()
    folder.on_failure = options.cancel.set  # a failed write into the folder stops the run at once
    folder.resume_command = continue_command(options, resume=True)
    sim: _Sim | None = None
    secrets = SecretRegistry()
    try:
        prices = price_table(project, options.settings.prices)
        prior = load_prior(options, folder, project, selected, prices)
        plan = plan_for(project, templates, prior.records)  # phase 4 as the architecture in the folder says
        check_prerequisites(plan, selected, prior.records, str(folder.bundle_path), options)
        settings, time_scale = options.settings, 1.0
        if options.backend == "sim":
            sim = _Sim(options)
            settings, time_scale = sim.settings, sim.time_scale
        elif options.backend != "live":
            raise ConfigError(f"--backend {options.backend!r}: use live or sim.")
        ctx = ClientContext(settings=settings, clock=RealClock(options.cancel), secrets=secrets,
                            time_scale=time_scale, limits=None, pool_size=settings.concurrency)
        backends = _build_backends(options, plan, selected, ctx, sim)
        bundle, session, records, journal = _open_session(options, folder, project, source, selected, prior)
        with _logging_to(folder, secrets):
            attach = live_tasks(journal, records) if bundle is prior.bundle else {}
            return _execute(_Run(options, plan, selected, folder, bundle, session, records, backends, ctx, secrets,
                                 settings, prices, attach))
    finally:
        if sim is not None:
            sim.close()
        folder.close()
        folder.discard_if_unused()


def _build_backends(options: RunOptions, plan: Plan, selected: list[int], ctx: ClientContext,
                    sim: _Sim | None) -> dict[str, Backend]:
    """Stage 2: the backends the selected agents use, with their limits (credentials are read now)."""
    names = list(dict.fromkeys(a.backend for a in plan.agents if a.phase in selected))
    assert ctx.limiters is not None
    ctx.limiters.limits.update(run_limits(plan.project, names))
    build = BuildContext(client=ctx, project=plan.project, run_backend=options.backend,
                         sim_url=sim.url if sim is not None else None,
                         simulator=sim.sim if sim is not None else None, diff_base=_diff_base(options))
    return build_backends(build, names)


def _diff_base(options: RunOptions) -> Path | None:
    """`--base DIR`, checked: an existing folder."""
    if options.diff_base is None:
        return None
    if not options.diff_base.is_dir():
        raise ConfigError(f"--base {options.diff_base} is not a folder. Give the folder (a checkout) the refinement "
                          "diffs must apply to, or leave --base out to check them against an empty tree.")
    return options.diff_base.resolve()


def _open_session(options: RunOptions, folder: RunFolder, project: Project, source: str, selected: list[int],
                  prior: Prior) -> tuple[Bundle, Session, dict[str, AgentRecord], JournalState]:
    """Stage 3: the bundle this session writes (a new run's, or the prior one), with its session entry."""
    now = utc_now()
    records, journal = prior.records, prior.journal
    if prior.bundle is None or not (options.phases or options.resume):
        run_id = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + pysecrets.token_hex(3)
        if folder.bundle_path.exists() or folder.journal_path.exists():
            moved = folder.archive_previous(*previous_run_id(folder, run_id))
            if moved:
                log.info("moved the previous run to %s", moved)
        bundle = Bundle(project=project.name, project_source=source, run_id=run_id, started_at=now,
                        backend=options.backend)
        records = {}
        journal = JournalState(run_id=run_id)
    else:
        bundle = prior.bundle
        bundle.backend = options.backend
    bundle.spent_usd = round(max(bundle.spent_usd, journal.spent_usd), 8)
    mode = "resume" if options.resume else ("rerun" if options.phases else "run")
    session = Session(started_at=now, mode=mode, phases=selected, backend=options.backend)
    bundle.sessions.append(session)
    # From here on the folder always has a bundle: `report` works mid-run, and a kill at any moment leaves
    # bundle + journal, which is all `--resume` needs. The journal's header makes it enough on its own.
    folder.write_bundle(bundle)
    if journal.header is None:
        folder.append_run_header(bundle)
    return bundle, session, records, journal


def phase_reads(plan: Plan) -> dict[int, set[int]]:
    """For each phase, the earlier phases whose outputs its agents read."""
    reads: dict[int, set[int]] = {n: set() for n in PHASES}
    for agent in plan.agents:
        reads[agent.phase].update(plan.by_id[d].phase for d in agent.depends_on if plan.by_id[d].phase != agent.phase)
    return reads


def _mark_stale(plan: Plan, bundle: Bundle, selected: list[int], executor: AgentExecutor,
                kept: Collection[str] = ()) -> dict[int, str]:
    """Mark the phases that are stale, with why; return {phase: reason}.

    A phase is stale when one of its agents would now get different inputs (a phase it reads was rerun with
    another output, or an output it reads was edited), or when a phase it reads is stale itself: a fixed point,
    reached in one pass because a phase reads only earlier ones. A phase just rerun is stale too when it read a
    stale phase (its agents ran on outdated inputs), or when some of its agents were not rerun."""
    records = bundle.records()
    reads = phase_reads(plan)
    ran = {rec.phase for rec in records.values() if rec.id not in kept and rec.status != "skipped" and not rec.reused}
    stale: dict[int, str] = {}
    for phase in sorted(bundle.phases, key=lambda p: p.number):
        if not phase.agents:
            phase.stale, phase.stale_reason = False, None
            continue
        reason = _grown_reason(plan, phase) if phase.number == GROWS_AT else None
        for rec in phase.agents if reason is None else []:
            agent = plan.by_id.get(rec.id)
            if agent is None or rec.status != "completed":
                continue
            deps = {d: records[d] for d in agent.depends_on if d in records}
            if rec.inputs_hash != executor.digest(agent, deps):
                if rec.id in kept:  # a rerun stopped part way: this agent kept a result made from older inputs
                    reason = f"its inputs changed: {rec.id} was not rerun, and what it reads changed"
                    break
                rerun = sorted(n for n in reads[phase.number] if n in selected and n in ran)
                what = (", ".join(f"phase {n} ({PHASES[n][1]})" for n in rerun) +
                        (" was" if len(rerun) == 1 else " were") + " rerun with another output"
                        if rerun else "an output it reads changed since it ran (an earlier rerun or an edit), or "
                                      "the project file changed")
                reason = f"its inputs changed: {what}"
                break
        if reason is None:
            upstream = sorted(n for n in reads[phase.number] if n in stale)
            if upstream:
                reason = "it reads " + ", ".join(f"phase {n} ({PHASES[n][1]})" for n in upstream) + \
                         (", which is stale" if len(upstream) == 1 else ", which are stale")
        phase.stale, phase.stale_reason = reason is not None, reason
        if reason is not None:
            stale[phase.number] = reason
    return stale


def _grown_reason(plan: Plan, phase: PhaseRecord) -> str | None:
    """Why phase 4's agents no longer match the architecture's components (None: they do)."""
    have = [a.id for a in phase.agents]
    want = [a.id for a in plan.phase_agents(phase.number)]
    new, gone = [a for a in want if a not in have], [a for a in have if a not in want]
    if not new and not gone:
        return None
    parts = ([f"new: {', '.join(new)}"] if new else []) + ([f"gone: {', '.join(gone)}"] if gone else [])
    return f"the architecture now names other components ({'; '.join(parts)})"


@dataclass
class _Sinks:
    """Where a run's events go."""

    bus: EventBus
    jsonl: JsonlSink
    live: LiveProgress | None
    notifier: Notifier | None

    def close(self) -> list[str]:
        """Close the event file and the webhooks; the lines naming each webhook that failed."""
        self.jsonl.close()
        return self.notifier.close() if self.notifier is not None else []


def _execute(r: _Run) -> RunOutcome:
    """Stages 4-6: wire the events, pre-flight every backend, run the agents, summarise."""
    sinks = _wire_events(r)
    try:
        _preflight(r)
    except SparcError:
        sinks.jsonl.close()
        if sinks.notifier is not None:
            sinks.notifier.close(0)
        raise
    executor, phases, budget = _executor(r, sinks)
    start = r.ctx.clock.now()  # the makespan counts from the first dispatch, after the pre-flight checks
    done, exit_code = _run_agents(r, sinks, executor, phases)
    return _summarise(r, sinks, executor, done, exit_code, r.ctx.clock.now() - start, budget)


def _wire_events(r: _Run) -> _Sinks:
    """The event bus and its sinks: the run's events file, the log, the console or live view, JSON, webhooks."""
    options = r.options
    bus = EventBus(r.secrets)
    jsonl = JsonlSink(r.folder.open_stream(r.folder.events_path.name), r.secrets)
    bus.add(jsonl)
    bus.add(LogSink(logging.getLogger("sparc_cloud.events")))
    live: LiveProgress | None = None
    if options.live:
        from sparc_cloud.progress import LiveProgress as _Live

        live = _Live([a for a in r.plan.agents if a.phase in r.selected])
        live.spent_usd = r.bundle.spent_usd
        bus.add(live)
    elif options.console is not None:
        bus.add(PlainConsoleSink(options.console))
    if options.json_events is not None:
        bus.add(JsonStreamSink(options.json_events, r.secrets))
    notifier = Notifier(options.notify, r.plan.project.name, r.secrets, time_scale=r.ctx.time_scale) \
        if options.notify else None
    if notifier is not None:
        bus.add(notifier)
    return _Sinks(bus, jsonl, live, notifier)


def _preflight(r: _Run) -> None:
    """Say where the run goes (one line per place, before its first call), then each backend's checks."""
    if r.options.console is not None:
        for backend in r.backends.values():
            for line in backend.describe():
                r.options.console.write(line + "\n")
        r.options.console.flush()
    for backend in r.backends.values():
        backend.preflight()


def _executor(r: _Run, sinks: _Sinks) -> tuple[AgentExecutor, dict[int, PhaseRecord], Budget | None]:
    """The agent executor of this session, the phases it fills, and the budget guard (if any)."""
    phases = {p.number: p for p in r.bundle.phases}
    r.kept = {n: phases[n] for n in r.selected if n in phases}
    r.earlier = {n: [a.id for a in phases[n].agents] for n in r.selected if n in phases}
    for number in r.selected:
        phases[number] = new_phase(number)
        phases[number].started_at = utc_now()
    r.bundle.phases = [phases[n] for n in sorted(phases)]
    budget = Budget(r.options.budget_usd, r.prices, spent=r.bundle.spent_usd) \
        if r.options.budget_usd is not None else None

    def on_task(mark: TaskMark) -> None:
        _write_or_stop(r.options, r.folder, mark.id, lambda: r.folder.append_task_mark(r.bundle.run_id, mark))

    # In sim mode every duration is simulated time: timeouts and deadlines shrink with the time scale.
    executor = AgentExecutor(r.plan, r.backends, bus=sinks.bus, clock=r.ctx.clock, secrets=r.secrets,
                             reuse=r.records if r.options.resume else {},
                             agent_timeout_s=r.settings.agent_timeout_s * r.ctx.time_scale, budget=budget,
                             run_id=r.bundle.run_id, run_backend=r.options.backend, prices=r.prices,
                             attach=r.attach, on_task=on_task)
    return executor, phases, budget


def _earlier_result(r: _Run, record: AgentRecord) -> AgentRecord | None:
    """The finished (completed or failed) record the agent had before this session, if any."""
    phase = r.kept.get(record.phase)
    earlier = next((a for a in phase.agents if a.id == record.id), None) if phase is not None else None
    return earlier if earlier is not None and earlier.status != "skipped" else None


def _keep_unstarted(r: _Run) -> None:
    """Put back the earlier records of the selected phases' agents this session never got to (Ctrl-C, a
    signal, a wave that never started): a rerun that did not run an agent never loses its earlier result."""
    for number, before in r.kept.items():
        index = next((i for i, p in enumerate(r.bundle.phases) if p.number == number), None)
        if index is None:
            continue
        phase = r.bundle.phases[index]
        present = {a.id for a in phase.agents}
        back = [a for a in before.agents if a.id not in present and a.id in r.plan.by_id]
        if not back:
            continue
        r.not_rerun.extend(a.id for a in back if a.id not in r.not_rerun and a.status != "skipped")
        if not phase.agents:  # nothing of this phase ran now: it stays as it was
            r.bundle.phases[index] = before.model_copy(update={"agents": back})
            continue
        order = {a.id: i for i, a in enumerate(r.plan.agents)}
        phase.agents = sorted([*phase.agents, *back], key=lambda rec: order.get(rec.id, 0))
        phase.status = phase_status(phase.agents, len(r.plan.phase_agents(number)))


class _Recorder:
    """The runner's hooks for one run: journal and write each result, count its cost, write each finished phase."""

    def __init__(self, r: _Run, sinks: _Sinks, phases: dict[int, PhaseRecord]) -> None:
        self.r, self.bus, self.live, self.phases = r, sinks.bus, sinks.live, phases

    def hooks(self) -> RunnerHooks:
        from sparc_cloud.runner import RunnerHooks

        return RunnerHooks(self.on_started, self.on_finished, self.on_phase_done)

    def on_started(self, agent: AgentSpec) -> None:
        self.bus.emit(Event("agent_queued", agent.id, agent.phase, f"{agent.backend} {agent.model}"))

    def on_finished(self, record: AgentRecord) -> None:
        r, folder = self.r, self.r.folder
        earlier = _earlier_result(r, record) if record.status == "skipped" and not record.reused else None
        if earlier is not None:
            # Never started now (budget, deadline, fail-fast, a failed dependency): the earlier result is still
            # the latest one. It stays in the bundle; nothing is journaled or written over its files.
            self.phases[record.phase].agents.append(earlier)
            r.not_rerun.append(record.id)
            self.bus.emit(Event("agent_reused", record.id, record.phase,
                                f"not rerun ({record.error or 'not started'}); its earlier result stays"))
            return
        if record.status == "skipped" and record.inputs_hash is None:  # skipped by the runner, not the executor
            self.bus.emit(Event("agent_skipped", record.id, record.phase, record.error or ""))
        self.phases[record.phase].agents.append(record)
        if not record.reused:  # a reused record is in the bundle or the journal already: never appended twice
            spent = record_cost(r.prices, record)
            r.session.spent_usd = round(r.session.spent_usd + spent, 8)
            r.bundle.spent_usd = round(r.bundle.spent_usd + spent, 8)
            if self.live is not None:
                self.live.spent_usd = r.bundle.spent_usd

            def save() -> None:
                folder.append_journal(r.bundle.run_id, record)
                folder.write_outputs(record)

            _write_or_stop(r.options, folder, record.id, save)
        elif not folder.output_path(record).exists():  # a reused record's Markdown is there unless deleted
            _write_or_stop(r.options, folder, record.id, lambda: folder.write_outputs(record))

    def on_phase_done(self, number: int) -> None:
        r, phase = self.r, self.phases[number]
        order = {a.id: i for i, a in enumerate(r.plan.agents)}
        phase.agents.sort(key=lambda rec: order.get(rec.id, 0))
        phase.status = phase_status(phase.agents, len(r.plan.phase_agents(number)))
        phase.stale, phase.stale_reason = False, None
        phase.finished_at = utc_now()
        r.bundle.totals = compute_totals(r.bundle)
        _write_or_stop(r.options, r.folder, None, lambda: r.folder.write_bundle(r.bundle))
        self.bus.emit(Event("phase_done", phase=number, message=f"{PHASES[number][1]}: {phase.status}",
                            data={"status": phase.status}))


def _run_agents(r: _Run, sinks: _Sinks, executor: AgentExecutor,
                phases: dict[int, PhaseRecord]) -> tuple[dict[str, AgentRecord], int]:
    """Dispatch the selected agents; journal each result and write each finished phase. -> (records, exit).

    The agents run in two waves: the phases before the one the architecture decides, then (with the plan
    grown from the architecture that just ran) that phase and those after. Nothing of phase 4 can start before
    the architecture ends, so the split costs no time."""
    options, live = r.options, sinks.live
    recorder = _Recorder(r, sinks, phases)
    sinks.bus.emit(Event("run_started", message=f"{r.plan.project.name}: phases {','.join(map(str, r.selected))} "
                                                f"on {options.backend} -> {r.folder.path}"))
    scale = r.ctx.time_scale
    deadline = r.settings.run_deadline_s * scale if r.settings.run_deadline_s else None
    done: dict[str, AgentRecord] = {}
    exit_code = 0
    started = r.ctx.clock.now()
    stop_reason: str | None = None
    try:
        if live is not None:
            live.__enter__()
        for wave in ([n for n in r.selected if n < GROWS_AT], [n for n in r.selected if n >= GROWS_AT]):
            if not wave:
                continue
            if wave[0] >= GROWS_AT and any(n < GROWS_AT for n in r.selected):
                _grow(r, sinks, executor, {**r.records, **done})
            if wave[0] >= GROWS_AT:
                _drop(r, sinks)
            if stop_reason is not None:  # fail-fast or the deadline stopped the first wave: nothing more starts
                _skip_wave(r, recorder, wave, done, f"not started: {stop_reason}")
                continue
            left = None if deadline is None else max(0.0, deadline - (r.ctx.clock.now() - started))
            stop_reason, cancelled = _run_wave(r, sinks, executor, recorder, wave, done, left)
            if cancelled:
                exit_code = 128 + (options.interrupted_by or signal.SIGINT)
                break
        if exit_code == 0 and GROWS_AT - 1 in r.selected and GROWS_AT not in r.selected:
            _grow(r, sinks, executor, {**r.records, **done})  # `--phases 3`: phase 4 is judged against it later
    finally:
        if live is not None:
            live.__exit__(None, None, None)
    return done, exit_code


def _skip_wave(r: _Run, recorder: _Recorder, wave: list[int], done: dict[str, AgentRecord], reason: str) -> None:
    """Record every agent of a wave as skipped (the wave before it stopped the run) and close its phases."""
    from sparc_cloud.runner import skipped

    for agent in (a for a in r.plan.agents if a.phase in wave):
        done[agent.id] = skipped(agent, reason)
        recorder.on_finished(done[agent.id])
    for number in wave:
        recorder.on_phase_done(number)


def _run_wave(r: _Run, sinks: _Sinks, executor: AgentExecutor, recorder: _Recorder, wave: list[int],
              done: dict[str, AgentRecord], left_s: float | None) -> tuple[str | None, bool]:
    """Run the agents of a wave's phases; their records go into `done`. -> (why the runner stopped, cancelled)."""
    from sparc_cloud.runner import Runner

    agents = [a for a in r.plan.agents if a.phase in wave]
    prior = {aid: rec for aid, rec in {**r.records, **done}.items()
             if r.plan.by_id.get(aid) and r.plan.by_id[aid].phase not in wave}
    runner = Runner(agents, executor, prior=prior, concurrency=r.settings.concurrency, cancel=r.options.cancel,
                    clock=r.ctx.clock, hooks=recorder.hooks(), fail_fast=r.options.fail_fast, deadline_s=left_s)
    try:
        done.update(runner.run())
    except Cancelled:
        done.update(runner.records)
        return runner.stop_reason, True
    finally:
        if sinks.live is not None:
            for aid, rec in runner.records.items():
                if rec.status == "skipped":
                    sinks.live.mark_skipped(aid, rec.error or "")
    return runner.stop_reason, False


def _drop(r: _Run, sinks: _Sinks) -> None:
    """Journal and say which agents of the phase now run left it (components the architecture no longer names)."""
    r.dropped = [aid for aid in r.earlier.get(GROWS_AT, []) if aid not in r.plan.by_id]
    if not r.dropped:
        return
    _write_or_stop(r.options, r.folder, None, lambda: r.folder.append_dropped(r.bundle.run_id, r.dropped))
    moved: list[str] = []

    def set_aside() -> None:
        if (to := r.folder.set_aside(r.bundle.run_id, GROWS_AT, r.dropped)) is not None:
            moved.append(to)

    _write_or_stop(r.options, r.folder, None, set_aside)
    where = f"; their files moved to {moved[0]}" if moved else ""
    sinks.bus.emit(Event("phase_grown", phase=GROWS_AT, message=f"dropped from the bundle: {', '.join(r.dropped)} "
                         f"(components the architecture no longer names){where}", data={"dropped": r.dropped}))


def _grow(r: _Run, sinks: _Sinks, executor: AgentExecutor, records: dict[str, AgentRecord]) -> None:
    """Rebuild the plan from the architecture that just ran; say how phase 4 changed."""
    before = [a.id for a in r.plan.phase_agents(GROWS_AT)]
    plan = plan_for(r.plan.project, r.plan.templates, records)
    if plan.architecture is None and r.plan.architecture is not None:
        return  # the architecture failed now: phase 4 keeps the components it had (its agents are skipped)
    after = [a.id for a in plan.phase_agents(GROWS_AT)]
    r.plan = executor.plan = plan
    if sinks.live is not None and GROWS_AT in r.selected:
        sinks.live.replace_phase(GROWS_AT, plan.phase_agents(GROWS_AT))
    if before != after:
        names = [a.title.removeprefix("Component: ") for a in plan.phase_agents(GROWS_AT) if a.template == "component"]
        sinks.bus.emit(Event("phase_grown", phase=GROWS_AT,
                             message=f"{PHASES[GROWS_AT][1]} follows the architecture: {len(names)} component(s): "
                                     + ", ".join(names), data={"agents": after, "before": before}))


def _summarise(r: _Run, sinks: _Sinks, executor: AgentExecutor, done: dict[str, AgentRecord], exit_code: int,
               wall: float, budget: Budget | None) -> RunOutcome:
    """Mark stale phases, write the final bundle, emit `run_done`, and build the closing message."""
    options, bundle, bus = r.options, r.bundle, sinks.bus
    _keep_unstarted(r)
    stale = _mark_stale(r.plan, bundle, r.selected, executor, set(r.not_rerun))
    dropped = r.dropped
    for number, reason in stale.items():
        bus.emit(Event("phase_stale", phase=number, message=f"{PHASES[number][1]} is stale: {reason}",
                       data={"reason": reason}))
    failed = [rec for rec in done.values() if rec.status != "completed"]
    if exit_code == 0 and failed:
        exit_code = 1
    bundle.finished_at = utc_now()
    r.session.wall_time_s = round(wall, 3)
    r.session.ran = sum(1 for rec in done.values() if not rec.reused and rec.status != "skipped")
    # A session that only reused earlier results (a no-op --resume) keeps the wall time of the last one that ran.
    walls = [s.wall_time_s for s in bundle.sessions if s.ran and s.wall_time_s is not None]
    bundle.totals = compute_totals(bundle, walls[-1] if walls else wall)
    r.session.finished_at = bundle.finished_at
    r.session.exit_code = exit_code
    r.folder.write_bundle(bundle)
    msg = _summary(options, r.plan, r.selected, r.folder, bundle, done, wall, exit_code, budget, stale)
    if r.not_rerun:
        order = {a.id: i for i, a in enumerate(r.plan.agents)}
        r.not_rerun.sort(key=lambda aid: order.get(aid, 0))
        shown = ", ".join(r.not_rerun[:6]) + (f" and {len(r.not_rerun) - 6} more" if len(r.not_rerun) > 6 else "")
        msg += (f"\nNot rerun: {shown}; {'its' if len(r.not_rerun) == 1 else 'their'} earlier "
                f"{'result stays' if len(r.not_rerun) == 1 else 'results stay'} in the bundle.")
    if dropped:
        msg += f"\nDropped from the bundle: {', '.join(dropped)} (components the architecture no longer names)."
    counts = {s: sum(1 for rec in done.values() if rec.status == s) for s in ("completed", "failed", "skipped")}
    bus.emit(Event("run_done", message=msg.splitlines()[0], data={"exit_code": exit_code, **counts}))
    msg += "".join(f"\n{line}" for line in sinks.close())  # names each webhook that failed
    log.info("phase folders: %s", ", ".join(phase_dir(n) for n in r.selected))
    if r.folder.failure is not None:  # a log or event write failed (disk full): the run stopped; say so once
        raise r.folder.failure
    return RunOutcome(exit_code=exit_code, folder=r.folder.path, bundle=bundle, message=r.secrets.redact(msg))


def _write_or_stop(options: RunOptions, folder: RunFolder, after: str | None, write: Callable[[], None]) -> None:
    """Run a write into the run folder; a failure (disk full, permissions) stops the run with one clear error."""
    try:
        write()
    except OSError as exc:
        options.cancel.set()
        when = f" after {after} finished" if after else ""
        raise RunFolderWriteError(
            f"Writing to the run folder {folder.path} failed ({exc.strerror or exc}){when}. Every agent that "
            f"finished before is saved in {folder.journal_path}. Free some space (or fix the folder's permissions), "
            f"then continue with `{continue_command(options, resume=True)}`."
        ) from None


def _summary(options: RunOptions, plan: Plan, selected: list[int], folder: RunFolder, bundle: Bundle,
             done: dict[str, AgentRecord], wall: float, exit_code: int, budget: Budget | None,
             stale: dict[int, str]) -> str:
    """The closing message: counts, and a command to paste that goes on (with every option that shaped the run)."""
    counts = {s: sum(1 for r in done.values() if r.status == s) for s in ("completed", "failed", "skipped")}
    reused = sum(1 for r in done.values() if r.reused)
    failed = [r for r in done.values() if r.status != "completed"]
    # Tokens: those of this session's agents (what the live view counted), and the run's when they differ.
    now = sum(r.usage.total_tokens for r in done.values() if not r.reused)
    in_run = bundle.totals["tokens"]["total_tokens"]
    tokens = f"{now:,} tokens" if now == in_run else f"{now:,} tokens this session, {in_run:,} in the run"
    msg = (f"{counts['completed']} completed ({reused} reused), {counts['failed']} failed, {counts['skipped']} "
           f"skipped in {wall:.1f} s; {tokens}; "
           f"${bundle.spent_usd:.4f} spent on this run so far. Run folder: {folder.path}")
    if exit_code > 128:
        name = signal.Signals(exit_code - 128).name
        return (f"Interrupted ({name}): {len(done)} agent(s) finished and are saved in {folder.journal_path}. "
                f"Continue with `{continue_command(options, resume=True)}`.")
    if budget is not None and budget.exhausted:
        msg += (f"\nStopped before crossing the budget ({budget.exhausted}); ${budget.spent:.4f} spent on this run "
                f"in all. Raise --budget-usd in `{continue_command(options, resume=True)}` and run it to go on.")
    elif failed:
        first = failed[0]
        msg += (f"\nFirst problem: {first.id}: {clean(first.error or '', one_line=True)}\nFix it, then finish the run with "
                f"`{continue_command(options, resume=True)}`.")
    if exit_code == 0 and options.pause_after is not None:
        rest = [n for n in (options.phases or sorted(PHASES)) if n > options.pause_after]
        if rest:
            span = phase_span(rest)
            msg += (f"\nPaused after phase {options.pause_after} for review. Edit the Markdown under "
                    f"{folder.path / phase_dir(options.pause_after)} if you like, then go on with "
                    f"`{continue_command(options, phases=span)}`.")
    if stale:
        # Every phase that reads a stale one is stale too, so the range from the first stale phase to the last
        # brings all of them up to date in one run.
        lo, hi = min(stale), max(stale)
        lines = "; ".join(f"phase {n} ({PHASES[n][1]}): {why}" for n, why in sorted(stale.items()))
        span = phase_span(list(range(lo, hi + 1)))
        msg += f"\nStale: {lines}. Bring them up to date with `{continue_command(options, phases=span)}`."
    return msg


__all__ = ["RunOptions", "RunOutcome", "project_limits", "run"]


__all__ = ["Planned", "RunOptions", "RunOutcome", "continue_command", "default_folder", "phase_span", "planned", "run"]
