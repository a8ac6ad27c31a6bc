"""One `sparc-cloud run`: project -> plan -> run folder -> backends -> Runner -> journal and bundle.

This is where the pieces meet; each piece stays ignorant of the others (see DESIGN.md)."""

from __future__ import annotations

import logging
import secrets as pysecrets
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING

from sparc_cloud.agents import AgentExecutor, Backends
from sparc_cloud.bundle import AgentRecord, Bundle, Session, compute_totals, new_phase, phase_status, utc_now
from sparc_cloud.clients.factory import ClientContext, cloud_lines, make_codex, make_gemini
from sparc_cloud.clients.gitref import resolve_branch
from sparc_cloud.costs import Budget
from sparc_cloud.errors import Cancelled, ConfigError, RunFolderWriteError, SparcError
from sparc_cloud.events import Event, EventBus, JsonlSink, LogSink, PlainConsoleSink
from sparc_cloud.http.clock import RealClock
from sparc_cloud.http.ratelimit import Key, RateLimit
from sparc_cloud.notify import Notifier

if TYPE_CHECKING:
    from sparc_cloud.progress import LiveProgress
from sparc_cloud.phases import PHASES, AgentSpec, Plan, build_plan, phase_dir
from sparc_cloud.project import Project, load_project, load_templates
from sparc_cloud.redact import RedactingFilter, SecretRegistry
from sparc_cloud.runfolder import RunFolder
from sparc_cloud.settings import Settings
from sparc_cloud.sim import SimConfig, Simulator

log = logging.getLogger("sparc_cloud")


@dataclass
class RunOptions:
    """Everything `sparc-cloud run` was asked to do."""

    project: str
    settings: Settings
    backend: str = "live"
    output: Path | None = None
    phases: list[int] | None = None
    resume: bool = False
    fail_fast: bool = False
    console: IO[str] | None = None
    sim_config: SimConfig | None = None
    simulator: Simulator | None = None  # an already running simulator to use (benchmarks, tests)
    pause_after: int | None = None
    budget_usd: float | None = None
    notify: list[str] = field(default_factory=list)
    live: bool = False  # a live progress table instead of plain lines on `console`
    cancel: threading.Event = field(default_factory=threading.Event)


@dataclass
class RunOutcome:
    """What the CLI reports and how it exits."""

    exit_code: int
    folder: Path
    bundle: Bundle | None
    message: str


def default_folder(settings: Settings, project: Project) -> Path:
    """`./sparc-runs/<project>/` unless SPARC_OUTPUT_DIR says otherwise."""
    return (settings.output_dir or Path("sparc-runs")) / project.name


def project_limits(project: Project) -> dict[Key, RateLimit]:
    """The project's rate-limit overrides as limiter keys."""
    out: dict[Key, RateLimit] = {}
    for name, limit in project.limits.items():
        rl = RateLimit(per_minute=limit.per_minute, burst=limit.burst)
        if name.startswith("codex."):
            out[("codex", name.split(".", 1)[1], "*")] = rl
        else:
            out[("gemini", "generate", name)] = rl
    return out


@contextmanager
def _logging_to(folder: RunFolder, secrets: SecretRegistry) -> Iterator[None]:
    handler = logging.FileHandler(folder.log_path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    handler.addFilter(RedactingFilter(secrets))
    root = logging.getLogger("sparc_cloud")
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        yield
    finally:
        root.removeHandler(handler)
        handler.close()


def _check_prerequisites(plan: Plan, selected: list[int], records: dict[str, AgentRecord], source: str,
                         project_ref: str) -> None:
    for agent in plan.agents:
        if agent.phase not in selected:
            continue
        for dep in agent.depends_on:
            dep_phase = plan.by_id[dep].phase
            if dep_phase in selected:
                continue
            rec = records.get(dep)
            if rec is None or rec.status != "completed":
                name = PHASES[dep_phase][0]
                state = "has no result" if rec is None else f"is {rec.status}"
                raise ConfigError(
                    f"Phase {agent.phase} needs phase {dep_phase} ({name}) first: {dep} {state} in {source}. "
                    f"Run `sparc-cloud run --project {project_ref} --phases {dep_phase}` first (or run "
                    f"--phases {dep_phase}-{max(selected)})."
                )


class _Sim:
    """The in-process simulator and the settings that aim the clients at it."""

    def __init__(self, options: RunOptions) -> None:
        config = options.sim_config or SimConfig(time_scale=options.settings.sim_time_scale,
                                                 seed=options.settings.sim_seed)
        self.owned = options.simulator is None
        self.sim = options.simulator or Simulator(config).start()
        config = self.sim.config
        self.home = tempfile.TemporaryDirectory(prefix="sparc-sim-creds-")
        overrides = self.sim.client_settings(Path(self.home.name))
        self.settings = Settings.model_validate({**options.settings.model_dump(), **overrides})
        self.time_scale = config.time_scale

    def close(self) -> None:
        if self.owned:
            self.sim.stop()
        self.home.cleanup()


def run(options: RunOptions) -> RunOutcome:
    """Run (or rerun, or resume) a project. Raises ConfigError/AuthError before any call for bad input."""
    settings = options.settings
    project, source = load_project(options.project)
    templates = load_templates(project)
    plan = build_plan(project, templates)
    selected = options.phases or sorted(PHASES)
    if options.pause_after is not None:
        selected = [n for n in selected if n <= options.pause_after]
        if not selected:
            raise ConfigError(f"--pause-after {options.pause_after} leaves no phase to run out of "
                              f"{','.join(map(str, options.phases or []))}.")
    folder = RunFolder(options.output or default_folder(settings, project))
    folder.prepare(create_parents=options.output is None)
    folder.lock()
    sim: _Sim | None = None
    secrets = SecretRegistry()
    try:
        existing: Bundle | None = None
        records: dict[str, AgentRecord] = {}
        if options.phases or options.resume:
            if folder.bundle_path.exists():
                existing = folder.load_bundle()
                if existing.project != project.name:
                    raise ConfigError(f"{folder.bundle_path} belongs to project {existing.project!r}, not "
                                      f"{project.name!r}. Use --output to pick that project's folder.")
                records = existing.records()
                for rec in folder.read_journal(existing.run_id):
                    records[rec.id] = rec
                for warning in folder.warnings:
                    if options.console is not None:
                        options.console.write(warning + "\n")
                _merge_journal(existing, records)
                for aid in folder.apply_edits(records):
                    if options.console is not None:
                        options.console.write(f"using your edited output of {aid}\n")
            elif options.resume:
                raise ConfigError(f"Nothing to resume in {folder.path}: it has no bundle.json. Run without --resume.")
        _check_prerequisites(plan, selected, records, str(folder.bundle_path), options.project)

        if options.backend == "sim":
            sim = _Sim(options)
            sim.sim.add_environment(settings.codex_environment or project.codex.environment)
            settings = sim.settings
            time_scale = sim.time_scale
        elif options.backend == "live":
            time_scale = 1.0
        else:
            raise ConfigError(f"--backend {options.backend!r}: use live or sim.")

        clock = RealClock(options.cancel)
        needed = {a.backend for a in plan.agents if a.phase in selected}
        ctx = ClientContext(settings=settings, clock=clock, secrets=secrets, time_scale=time_scale,
                            limits=None, pool_size=settings.concurrency)
        assert ctx.limiters is not None
        ctx.limiters.limits.update(project_limits(project))
        fallback = {"gemini-2.5-pro": "gemini-2.5-flash"} if (project.gemini.fallback or settings.gemini_fallback) \
            else None
        backends = Backends()
        # Credentials are read now, so a missing login stops the run before any call.
        if "gemini" in needed:
            gemini = make_gemini(ctx, fallback=fallback)
            backends.gemini = lambda: gemini
        if "codex" in needed:
            codex = make_codex(ctx)
            backends.codex = lambda: codex

        now = utc_now()
        if existing is None or not (options.phases or options.resume):
            run_id = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + pysecrets.token_hex(3)
            if folder.bundle_path.exists() or folder.journal_path.exists():
                old_id = run_id
                try:
                    old_id = folder.load_bundle().run_id
                except SparcError:
                    old_id = "unreadable-" + run_id
                moved = folder.archive_previous(old_id)
                if moved:
                    log.info("moved the previous run to %s", moved)
            bundle = Bundle(project=project.name, project_source=source, run_id=run_id, started_at=now,
                            backend=options.backend)
            records = {}
        else:
            bundle = existing
            bundle.backend = options.backend
        mode = "resume" if options.resume else ("rerun" if options.phases else "run")
        session = Session(started_at=now, mode=mode, phases=selected)
        bundle.sessions.append(session)

        with _logging_to(folder, secrets):
            return _execute(options, plan, selected, folder, bundle, records, backends, ctx, secrets, session,
                            settings)
    finally:
        if sim is not None:
            sim.close()
        folder.close()
        folder.discard_if_unused()


def _merge_journal(bundle: Bundle, records: dict[str, AgentRecord]) -> None:
    """Make the bundle hold the newest record of every agent (the journal may be ahead of the bundle)."""
    known: set[str] = set()
    for phase in bundle.phases:
        phase.agents = [records.get(a.id, a) for a in phase.agents]
        known.update(a.id for a in phase.agents)
    for record in records.values():
        if record.id not in known:
            phase_ = bundle.phase(record.phase)
            if phase_ is None:
                phase_ = new_phase(record.phase)
                bundle.phases = sorted([*bundle.phases, phase_], key=lambda p: p.number)
            phase_.agents.append(record)


def _resolve_codex_env(options: RunOptions, settings: Settings, project: Project, backends: Backends) -> None:
    wanted = settings.codex_environment or project.codex.environment
    if options.backend == "sim" and not wanted:
        wanted = "memory-extension"
    client = backends.codex_client()
    if not wanted:
        names = ", ".join(f"{e.label} ({e.id})" for e in client.environments()) or "none"
        raise ConfigError("No Codex environment is configured for phase 4. Set --codex-env (or "
                          f"SPARC_CODEX_ENVIRONMENT, or [codex] environment in the project). Yours: {names}.")
    backends.codex_environment_id = client.resolve_environment(wanted).id
    backends.codex_branch = resolve_branch(settings.codex_branch, project.codex.branch).branch


def _mark_stale(plan: Plan, bundle: Bundle, selected: list[int], executor: AgentExecutor) -> None:
    """A phase not run now is stale when any of its agents would now get different inputs."""
    records = bundle.records()
    for phase in bundle.phases:
        if phase.number in selected or not phase.agents:
            continue
        changed = False
        for rec in phase.agents:
            agent = plan.by_id.get(rec.id)
            if agent is None or rec.status != "completed":
                continue
            deps = {d: records[d] for d in agent.depends_on if d in records}
            if rec.inputs_hash != executor.digest(agent, deps):
                changed = True
                break
        phase.stale = changed


def _execute(options: RunOptions, plan: Plan, selected: list[int], folder: RunFolder, bundle: Bundle,
             records: dict[str, AgentRecord], backends: Backends, ctx: ClientContext, secrets: SecretRegistry,
             session: Session, settings: Settings) -> RunOutcome:
    from sparc_cloud.runner import Runner, RunnerHooks

    bus = EventBus(secrets)
    jsonl = JsonlSink(folder.events_path, secrets)
    bus.add(jsonl)
    bus.add(LogSink(logging.getLogger("sparc_cloud.events")))
    live: LiveProgress | None = None
    if options.live:
        from sparc_cloud.progress import LiveProgress as _Live

        live = _Live([a for a in plan.agents if a.phase in selected])
        bus.add(live)
    elif options.console is not None:
        bus.add(PlainConsoleSink(options.console))
    notifier = Notifier(options.notify, plan.project.name, secrets, time_scale=ctx.time_scale) if options.notify else None
    if notifier is not None:
        bus.add(notifier)
    if options.console is not None:  # where the run goes, before its first call
        for line in cloud_lines(backends.gemini_client() if backends.gemini else None,
                                backends.codex_client() if backends.codex else None,
                                codex_environment=settings.codex_environment or plan.project.codex.environment,
                                codex_branch=resolve_branch(settings.codex_branch, plan.project.codex.branch).branch):
            options.console.write(line + "\n")
        options.console.flush()
    try:
        if backends.codex is not None:
            _resolve_codex_env(options, settings, plan.project, backends)
        if backends.gemini is not None and backends.gemini_client().config.mode == "code-assist":
            backends.gemini_client().project_id()
    except SparcError:
        jsonl.close()
        if notifier is not None:
            notifier.close(0)
        raise

    phases = {p.number: p for p in bundle.phases}
    for number in selected:
        phases[number] = new_phase(number)
        phases[number].started_at = utc_now()
    bundle.phases = [phases[n] for n in sorted(phases)]
    run_agents = [a for a in plan.agents if a.phase in selected]
    reuse = records if options.resume else {}
    prior = {aid: rec for aid, rec in records.items() if plan.by_id.get(aid) and plan.by_id[aid].phase not in selected}
    # In sim mode every duration is simulated time: timeouts and deadlines shrink with the time scale.
    scale = ctx.time_scale
    budget = Budget(options.budget_usd, settings.prices) if options.budget_usd is not None else None
    executor = AgentExecutor(plan, backends, bus=bus, clock=ctx.clock, secrets=secrets, reuse=reuse,
                             agent_timeout_s=settings.agent_timeout_s * scale, budget=budget)

    def on_started(agent: AgentSpec) -> None:
        bus.emit(Event("agent_queued", agent.id, agent.phase, f"{agent.backend} {agent.model}"))

    def on_finished(record: AgentRecord) -> None:
        phases[record.phase].agents.append(record)
        if record.status == "skipped" and record.inputs_hash is None:  # skipped by the runner, not the executor
            bus.emit(Event("agent_skipped", record.id, record.phase, record.error or ""))
        try:
            folder.append_journal(bundle.run_id, record)
            folder.write_outputs(record)
        except OSError as exc:
            options.cancel.set()
            raise RunFolderWriteError(
                f"Writing to the run folder {folder.path} failed ({exc.strerror or exc}) after {record.id} finished. "
                f"Every agent that finished before it is saved in {folder.journal_path}. Free some space (or fix "
                f"the folder's permissions), then continue with `sparc-cloud run --project {options.project} "
                f"--resume{' --output ' + str(options.output) if options.output else ''}`."
            ) from None

    def on_phase_done(number: int) -> None:
        phase = phases[number]
        order = {a.id: i for i, a in enumerate(plan.agents)}
        phase.agents.sort(key=lambda r: order.get(r.id, 0))
        phase.status = phase_status(phase.agents, len(plan.phase_agents(number)))
        phase.stale = False
        phase.finished_at = utc_now()
        bundle.totals = compute_totals(bundle)
        folder.write_bundle(bundle)
        bus.emit(Event("phase_done", phase=number, message=f"{PHASES[number][1]}: {phase.status}",
                       data={"status": phase.status}))

    start = ctx.clock.now()  # the makespan counts from the first dispatch, after the pre-flight checks
    bus.emit(Event("run_started", message=f"{plan.project.name}: phases {','.join(map(str, selected))} on "
                                          f"{options.backend} -> {folder.path}"))
    runner = Runner(run_agents, executor, prior=prior, concurrency=settings.concurrency, cancel=options.cancel,
                    clock=ctx.clock, hooks=RunnerHooks(on_started, on_finished, on_phase_done),
                    fail_fast=options.fail_fast,
                    deadline_s=settings.run_deadline_s * scale if settings.run_deadline_s else None)
    exit_code = 0
    try:
        if live is not None:
            live.__enter__()
        done = runner.run()
    except Cancelled:
        done = runner.records
        exit_code = 130
    finally:
        if live is not None:
            for aid, rec in runner.records.items():
                if rec.status == "skipped":
                    live.mark_skipped(aid, rec.error or "")
            live.__exit__(None, None, None)
    _mark_stale(plan, bundle, selected, executor)
    wall = ctx.clock.now() - start
    failed = [r for r in done.values() if r.status != "completed"]
    if exit_code == 0 and failed:
        exit_code = 1
    bundle.finished_at = utc_now()
    bundle.totals = compute_totals(bundle, wall)
    session.finished_at = bundle.finished_at
    session.exit_code = exit_code
    folder.write_bundle(bundle)
    counts = {s: sum(1 for r in done.values() if r.status == s) for s in ("completed", "failed", "skipped")}
    reused = sum(1 for r in done.values() if r.reused)
    msg = (f"{counts['completed']} completed ({reused} reused), {counts['failed']} failed, {counts['skipped']} "
           f"skipped in {wall:.1f} s; {bundle.totals['tokens']['total_tokens']:,} tokens. Run folder: {folder.path}")
    if exit_code == 130:
        msg = (f"Interrupted: {len(done)} agent(s) finished and are saved in {folder.journal_path}. "
               f"Continue with `sparc-cloud run --project {options.project} --resume"
               f"{' --output ' + str(options.output) if options.output else ''}`.")
    elif budget is not None and budget.exhausted:
        msg += (f"\nStopped before crossing the budget ({budget.exhausted}); ${budget.spent:.4f} spent. Raise "
                f"--budget-usd and continue with `sparc-cloud run --project {options.project} --resume"
                f"{' --output ' + str(options.output) if options.output else ''}`.")
    elif failed:
        first = failed[0]
        msg += (f"\nFirst problem: {first.id}: {first.error}\nFix it, then finish the run with "
                f"`sparc-cloud run --project {options.project} --resume"
                f"{' --output ' + str(options.output) if options.output else ''}`.")
    if exit_code == 0 and options.pause_after is not None and options.pause_after < max(PHASES):
        nxt = options.pause_after + 1
        msg += (f"\nPaused after phase {options.pause_after} for review. Edit the Markdown under "
                f"{folder.path / phase_dir(options.pause_after)} if you like, then go on with "
                f"`sparc-cloud run --project {options.project} --phases {nxt}-{max(PHASES)}"
                f"{' --output ' + str(options.output) if options.output else ''}`.")
    bus.emit(Event("run_done", message=msg.splitlines()[0], data={"exit_code": exit_code, **counts}))
    jsonl.close()
    if notifier is not None:
        notifier.close()
    log.info("phase folders: %s", ", ".join(phase_dir(n) for n in selected))
    return RunOutcome(exit_code=exit_code, folder=folder.path, bundle=bundle, message=secrets.redact(msg))


__all__ = ["RunOptions", "RunOutcome", "run"]
