"""One `sparc-cloud run`: project -> plan -> run folder -> backends -> Runner -> journal and bundle.

This is where the pieces meet; each piece stays ignorant of the others (see docs/ARCHITECTURE.md)."""

from __future__ import annotations

import contextlib
import logging
import secrets as pysecrets
import shlex
import signal
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING

from sparc_cloud.agents import AgentExecutor, Backends
from sparc_cloud.bundle import AgentRecord, Bundle, Session, compute_totals, new_phase, phase_status, utc_now
from sparc_cloud.clients.factory import ClientContext, cloud_lines, make_codex, make_gemini
from sparc_cloud.clients.gitref import resolve_branch
from sparc_cloud.costs import Budget, record_cost
from sparc_cloud.errors import Cancelled, ConfigError, RunFolderWriteError, SparcError
from sparc_cloud.events import Event, EventBus, JsonlSink, JsonStreamSink, LogSink, PlainConsoleSink
from sparc_cloud.http.clock import RealClock
from sparc_cloud.http.ratelimit import Key, RateLimit
from sparc_cloud.notify import Notifier

if TYPE_CHECKING:
    from sparc_cloud.progress import LiveProgress
from sparc_cloud.phases import PHASES, AgentSpec, Plan, build_plan, phase_dir
from sparc_cloud.project import Project, load_project, load_templates
from sparc_cloud.redact import RedactingFilter, SecretRegistry
from sparc_cloud.runfolder import JournalState, RunFolder, TaskMark
from sparc_cloud.safefs import UnsafePath
from sparc_cloud.settings import Settings
from sparc_cloud.sim import SimConfig, Simulator
from sparc_cloud.simhome import new_home
from sparc_cloud.terminal import clean

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
    # The options the user gave that shaped the run (as typed: `--backend sim --scenario x.toml ...`), repeated
    # in every "continue with" command so that pasting it runs the same way. None: built from the fields above.
    invocation: list[str] | None = None
    interrupted_by: int | None = None  # the signal that stopped the run (SIGINT, SIGTERM, SIGHUP)
    json_events: IO[str] | None = None  # `run --json`: every event as a JSON line on this stream (stdout)


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
    stream = folder.open_stream(folder.log_path.name)  # no link followed; a failed write stops the run, no traceback
    handler = logging.StreamHandler(stream)
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
        stream.close()


def continue_command(options: RunOptions, *, resume: bool = False, phases: str | None = None) -> str:
    """The command that goes on with this run, repeating every option that shaped it, quoted for a shell."""
    args = ["sparc-cloud", "run", "--project", options.project]
    if options.invocation is not None:
        args += options.invocation
    else:
        args += ["--backend", options.backend]
        if options.output is not None:
            args += ["--output", str(options.output)]
    if phases:
        args += ["--phases", phases]
    if resume:
        args.append("--resume")
    return shlex.join(args)


def _check_prerequisites(plan: Plan, selected: list[int], records: dict[str, AgentRecord], source: str,
                         options: RunOptions) -> None:
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
                    f"Run `{continue_command(options, phases=str(dep_phase))}` first (or "
                    f"`{continue_command(options, phases=f'{dep_phase}-{max(selected)}')}`)."
                )


class _Sim:
    """The simulator a `--backend sim` run uses (in-process, or one already serving at SPARC_SIM_URL) and the
    settings that aim the clients at it."""

    def __init__(self, options: RunOptions) -> None:
        self.sim: Simulator | None = None
        self.home: tempfile.TemporaryDirectory[str] | None = None
        base = options.settings
        if options.simulator is None and base.sim_url:
            overrides, self.time_scale = _remote_sim(base)
            self.owned = False
        else:
            config = options.sim_config or SimConfig(time_scale=base.sim_time_scale, seed=base.sim_seed)
            self.owned = options.simulator is None
            self.sim = options.simulator or Simulator(config).start()
            self.home = new_home()  # named after this process; dead processes' leftovers are removed
            overrides = self.sim.client_settings(Path(self.home.name))
            self.time_scale = self.sim.config.time_scale
        self.settings = Settings.model_validate({**base.model_dump(), **overrides})

    def close(self) -> None:
        if self.owned and self.sim is not None:
            self.sim.stop()
        if self.home is not None:
            self.home.cleanup()


def _remote_sim(settings: Settings) -> tuple[dict[str, object], float]:
    """Client settings and time scale for the simulator at SPARC_SIM_URL, with the credential files that
    `sim serve --write-creds` wrote into SPARC_SIM_CREDS."""
    import requests

    from sparc_cloud.sim.server import client_settings

    url = (settings.sim_url or "").rstrip("/")
    if settings.sim_creds is None:
        raise ConfigError(f"SPARC_SIM_URL={url} needs SPARC_SIM_CREDS: the folder you gave `sparc-cloud sim serve "
                          "--write-creds DIR` (the simulator only accepts the credentials it wrote).")
    paths = {"gemini": settings.sim_creds / ".gemini" / "oauth_creds.json",
             "codex": settings.sim_creds / ".codex" / "auth.json"}
    missing = [str(p) for p in paths.values() if not p.is_file()]
    if missing:
        raise ConfigError(f"SPARC_SIM_CREDS={settings.sim_creds} has no {' or '.join(missing)}. Start the simulator "
                          f"with `sparc-cloud sim serve --write-creds {settings.sim_creds}`.")
    try:
        answer = requests.get(url + "/_sim/counters", timeout=5)
        scale = float(answer.json()["time_scale"])
    except (requests.RequestException, ValueError, KeyError, TypeError):
        raise ConfigError(f"No sparc-cloud simulator answers at SPARC_SIM_URL={url}. Start one with `sparc-cloud sim "
                          "serve --write-creds DIR`, or unset SPARC_SIM_URL to use one inside the run.") from None
    return client_settings(url, paths), scale


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
    folder.on_failure = options.cancel.set  # a failed write into the folder stops the run at once
    folder.resume_command = continue_command(options, resume=True)
    sim: _Sim | None = None
    secrets = SecretRegistry()
    try:
        existing: Bundle | None = None
        records: dict[str, AgentRecord] = {}
        journal = JournalState(run_id=None)
        if options.phases or options.resume:
            existing, journal = _load_previous(folder, project, settings)
            if existing is None and options.resume:
                raise ConfigError(f"Nothing to resume in {folder.path}: it has no bundle.json and no journal of a "
                                  "run. Run without --resume.")
            if existing is not None:
                records = existing.records()
                records.update(journal.records)
                for warning in folder.warnings:
                    if options.console is not None:
                        options.console.write(warning + "\n")
                _merge_journal(existing, records)
                _refuse_other_backend(existing, records, options, folder)
                for aid in folder.apply_edits(records):
                    if options.console is not None:
                        options.console.write(f"using your edited output of {aid}\n")
        _check_prerequisites(plan, selected, records, str(folder.bundle_path), options)

        if options.backend == "sim":
            sim = _Sim(options)
            if sim.sim is not None:  # a simulator at SPARC_SIM_URL knows the environments it was started with
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
                moved = folder.archive_previous(_previous_run_id(folder, run_id))
                if moved:
                    log.info("moved the previous run to %s", moved)
            bundle = Bundle(project=project.name, project_source=source, run_id=run_id, started_at=now,
                            backend=options.backend)
            records = {}
            journal = JournalState(run_id=run_id)
        else:
            bundle = existing
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

        with _logging_to(folder, secrets):
            attach = _live_tasks(journal, records) if bundle is existing else {}
            return _execute(options, plan, selected, folder, bundle, records, backends, ctx, secrets, session,
                            settings, attach)
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


def _load_previous(folder: RunFolder, project: Project, settings: Settings) -> tuple[Bundle | None, JournalState]:
    """The run already in the folder: its bundle, else one rebuilt from the journal's header (a run killed
    before its first phase ended), and what the journal adds to it. (None, empty) when there is no run."""
    existing = folder.load_bundle() if folder.bundle_path.exists() else None
    journal = folder.read_journal(existing.run_id if existing else None,
                                  cost=lambda record: record_cost(settings.prices, record))
    if existing is None and journal.run_id is not None:
        header = journal.header or {}
        first = next(iter(journal.records.values()), None)
        started = str(header.get("started_at") or (first.started_at if first else None) or utc_now())
        existing = Bundle(project=str(header.get("project") or project.name),
                          project_source=str(header.get("project_source") or ""), run_id=journal.run_id,
                          started_at=started, backend=str(header.get("backend") or _record_backend(first, "live")))
        log.info("rebuilt the bundle of run %s from %s", journal.run_id, folder.journal_path)
    if existing is not None and existing.project != project.name:
        raise ConfigError(f"{folder.path} holds a run of project {existing.project!r}, not {project.name!r}. Use "
                          "--output to pick that project's folder.")
    return existing, journal


def _live_tasks(journal: JournalState, records: dict[str, AgentRecord]) -> dict[str, TaskMark]:
    """Cloud tasks an earlier session started and may still be running or done: those a resume re-attaches to.

    Tasks journaled as started (or being created) with no result recorded after, and tasks of agents that failed
    while their task was still alive (timeout, polling that failed for good)."""
    marks = dict(journal.tasks)
    for record in records.values():
        if record.id in marks or record.status != "failed" or not record.task_id:
            continue
        if record.task_status in ("failed", "cancelled"):
            continue
        marks[record.id] = TaskMark(record.id, "started", record.inputs_hash, record.environment_id, record.branch,
                                    task_id=record.task_id)
    return marks


def _record_backend(record: AgentRecord | None, default: str) -> str:
    return (record.run_backend if record is not None else None) or default


def _previous_run_id(folder: RunFolder, fallback: str) -> str:
    """The id of the run a fresh run moves into history/."""
    try:
        return folder.load_bundle().run_id
    except UnsafePath:
        raise  # a doctored bundle: refused (exit 2), never guessed around
    except SparcError:
        pass
    with contextlib.suppress(OSError):
        state = folder.read_journal(None)
        if state.run_id:
            return state.run_id
    return "unreadable-" + fallback


def _refuse_other_backend(bundle: Bundle, records: dict[str, AgentRecord], options: RunOptions,
                          folder: RunFolder) -> None:
    """Results of the simulator must never pass for a model's (nor the reverse): continuing a run on another
    backend than the one that made its records is refused."""
    made_by: dict[str, list[str]] = {}
    legacy = bundle.sessions[0].backend if bundle.sessions and bundle.sessions[0].backend else bundle.backend
    for record in records.values():
        if record.status == "skipped" and not record.run_backend:
            continue
        made_by.setdefault(_record_backend(record, legacy), []).append(record.id)
    if not records:
        made_by.setdefault(bundle.backend, [])
    other = sorted(b for b in made_by if b != options.backend)
    if not other:
        return
    ids = made_by[other[0]]
    shown = ", ".join(ids[:4]) + (f" and {len(ids) - 4} more" if len(ids) > 4 else "")
    kind = {"sim": "on the simulator (--backend sim)", "live": "on the real clouds (--backend live)"}
    raise ConfigError(
        f"The run in {folder.path} was made {kind.get(other[0], 'with --backend ' + other[0])}"
        f"{': ' + shown if shown else ''}. Building on it with --backend {options.backend} would pass those results "
        f"off as {'real model output' if options.backend == 'live' else 'simulated'} and mix both in one bundle. "
        f"Start a fresh run instead (the same command without --resume/--phases moves the old run into "
        f"{folder.path / 'history'}), or pick another --output folder."
    )


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


def phase_reads(plan: Plan) -> dict[int, set[int]]:
    """For each phase, the earlier phases whose outputs its agents read."""
    reads: dict[int, set[int]] = {n: set() for n in PHASES}
    for agent in plan.agents:
        reads[agent.phase].update(plan.by_id[d].phase for d in agent.depends_on if plan.by_id[d].phase != agent.phase)
    return reads


def _mark_stale(plan: Plan, bundle: Bundle, selected: list[int], executor: AgentExecutor) -> dict[int, str]:
    """Mark the phases not run now that are stale, with why; return {phase: reason}.

    A phase is stale when one of its agents would now get different inputs (a phase it reads was rerun with
    another output, or an output it reads was edited), or when a phase it reads is stale itself."""
    records = bundle.records()
    reads = phase_reads(plan)
    stale: dict[int, str] = {}
    for phase in sorted(bundle.phases, key=lambda p: p.number):
        if phase.number in selected or not phase.agents:
            phase.stale, phase.stale_reason = False, None
            continue
        reason = None
        for rec in phase.agents:
            agent = plan.by_id.get(rec.id)
            if agent is None or rec.status != "completed":
                continue
            deps = {d: records[d] for d in agent.depends_on if d in records}
            if rec.inputs_hash != executor.digest(agent, deps):
                rerun = sorted(n for n in reads[phase.number] if n in selected)
                what = (", ".join(f"phase {n} ({PHASES[n][1]})" for n in rerun) + " was rerun with another output"
                        if rerun else "an output it reads was edited, or the project file changed")
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


def _execute(options: RunOptions, plan: Plan, selected: list[int], folder: RunFolder, bundle: Bundle,
             records: dict[str, AgentRecord], backends: Backends, ctx: ClientContext, secrets: SecretRegistry,
             session: Session, settings: Settings, attach: dict[str, TaskMark]) -> RunOutcome:
    from sparc_cloud.runner import Runner, RunnerHooks

    bus = EventBus(secrets)
    jsonl = JsonlSink(folder.open_stream(folder.events_path.name), secrets)
    bus.add(jsonl)
    bus.add(LogSink(logging.getLogger("sparc_cloud.events")))
    live: LiveProgress | None = None
    if options.live:
        from sparc_cloud.progress import LiveProgress as _Live

        live = _Live([a for a in plan.agents if a.phase in selected])
        live.spent_usd = bundle.spent_usd
        bus.add(live)
    elif options.console is not None:
        bus.add(PlainConsoleSink(options.console))
    if options.json_events is not None:
        bus.add(JsonStreamSink(options.json_events, secrets))
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
    budget = Budget(options.budget_usd, settings.prices, spent=bundle.spent_usd) \
        if options.budget_usd is not None else None
    def on_task(mark: TaskMark) -> None:
        _write_or_stop(options, folder, mark.id, lambda: folder.append_task_mark(bundle.run_id, mark))

    executor = AgentExecutor(plan, backends, bus=bus, clock=ctx.clock, secrets=secrets, reuse=reuse,
                             agent_timeout_s=settings.agent_timeout_s * scale, budget=budget, run_id=bundle.run_id,
                             run_backend=options.backend, prices=settings.prices, attach=attach, on_task=on_task)

    def on_started(agent: AgentSpec) -> None:
        bus.emit(Event("agent_queued", agent.id, agent.phase, f"{agent.backend} {agent.model}"))

    def on_finished(record: AgentRecord) -> None:
        phases[record.phase].agents.append(record)
        if record.status == "skipped" and record.inputs_hash is None:  # skipped by the runner, not the executor
            bus.emit(Event("agent_skipped", record.id, record.phase, record.error or ""))
        if not record.reused:  # a reused record is in the bundle or the journal already: never appended twice
            spent = record_cost(settings.prices, record)
            session.spent_usd = round(session.spent_usd + spent, 8)
            bundle.spent_usd = round(bundle.spent_usd + spent, 8)
            if live is not None:
                live.spent_usd = bundle.spent_usd

            def save() -> None:
                folder.append_journal(bundle.run_id, record)
                folder.write_outputs(record)

            _write_or_stop(options, folder, record.id, save)
        elif not folder.output_path(record).exists():  # a reused record's Markdown is there unless deleted
            _write_or_stop(options, folder, record.id, lambda: folder.write_outputs(record))

    def on_phase_done(number: int) -> None:
        phase = phases[number]
        order = {a.id: i for i, a in enumerate(plan.agents)}
        phase.agents.sort(key=lambda r: order.get(r.id, 0))
        phase.status = phase_status(phase.agents, len(plan.phase_agents(number)))
        phase.stale, phase.stale_reason = False, None
        phase.finished_at = utc_now()
        bundle.totals = compute_totals(bundle)
        _write_or_stop(options, folder, None, lambda: folder.write_bundle(bundle))
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
        exit_code = 128 + (options.interrupted_by or signal.SIGINT)
    finally:
        if live is not None:
            for aid, rec in runner.records.items():
                if rec.status == "skipped":
                    live.mark_skipped(aid, rec.error or "")
            live.__exit__(None, None, None)
    stale = _mark_stale(plan, bundle, selected, executor)
    for number, reason in stale.items():
        bus.emit(Event("phase_stale", phase=number, message=f"{PHASES[number][1]} is stale: {reason}",
                       data={"reason": reason}))
    wall = ctx.clock.now() - start
    failed = [r for r in done.values() if r.status != "completed"]
    if exit_code == 0 and failed:
        exit_code = 1
    bundle.finished_at = utc_now()
    bundle.totals = compute_totals(bundle, wall)
    session.finished_at = bundle.finished_at
    session.exit_code = exit_code
    folder.write_bundle(bundle)
    msg = _summary(options, plan, selected, folder, bundle, done, wall, exit_code, budget, stale)
    counts = {s: sum(1 for r in done.values() if r.status == s) for s in ("completed", "failed", "skipped")}
    bus.emit(Event("run_done", message=msg.splitlines()[0], data={"exit_code": exit_code, **counts}))
    jsonl.close()
    if notifier is not None:
        msg += "".join(f"\n{line}" for line in notifier.close())  # names each webhook that failed
    log.info("phase folders: %s", ", ".join(phase_dir(n) for n in selected))
    if folder.failure is not None:  # a log or event write failed (disk full): the run stopped; say so once
        raise folder.failure
    return RunOutcome(exit_code=exit_code, folder=folder.path, bundle=bundle, message=secrets.redact(msg))


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
    msg = (f"{counts['completed']} completed ({reused} reused), {counts['failed']} failed, {counts['skipped']} "
           f"skipped in {wall:.1f} s; {bundle.totals['tokens']['total_tokens']:,} tokens; "
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
            span = str(rest[0]) if len(rest) == 1 else (f"{rest[0]}-{rest[-1]}" if rest == list(
                range(rest[0], rest[-1] + 1)) else ",".join(map(str, rest)))
            msg += (f"\nPaused after phase {options.pause_after} for review. Edit the Markdown under "
                    f"{folder.path / phase_dir(options.pause_after)} if you like, then go on with "
                    f"`{continue_command(options, phases=span)}`.")
    if stale:
        lo, hi = min(stale), max(stale)
        lines = "; ".join(f"phase {n} ({PHASES[n][1]}): {why}" for n, why in sorted(stale.items()))
        msg += f"\nStale: {lines}. Bring them up to date with `{continue_command(options, phases=f'{lo}-{hi}')}`."
    return msg


__all__ = ["RunOptions", "RunOutcome", "run"]
