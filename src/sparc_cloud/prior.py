"""What the run folder already holds for a rerun or a resume: the bundle (or one rebuilt from the journal), the
journal's newer records, the user's edits, the cloud tasks to re-attach to, and every check made on them before
the first call (another project's or backend's run, doctored contracts, missing earlier phases). `planned` is
the same reading with nothing written: the dry run's plan."""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from string import Template

from sparc_cloud.backends.assemble import price_table
from sparc_cloud.bundle import AgentRecord, Bundle, new_phase, utc_now
from sparc_cloud.contracts import Architecture
from sparc_cloud.costs import record_cost
from sparc_cloud.errors import ConfigError, SparcError
from sparc_cloud.options import RunOptions, continue_command, default_folder
from sparc_cloud.phases import ARCHITECT, GROWS_AT, PHASES, Plan, plan_for
from sparc_cloud.project import Project, load_project, load_templates
from sparc_cloud.runfolder import JournalState, RunFolder, TaskMark, check_contracts
from sparc_cloud.safefs import UnsafePath, check_component

log = logging.getLogger("sparc_cloud")


def check_prerequisites(plan: Plan, selected: list[int], records: dict[str, AgentRecord], source: str,
                         options: RunOptions) -> None:
    if GROWS_AT in selected and GROWS_AT - 1 not in selected and not plan.project.components and \
            plan.architecture is None and ARCHITECT in records and records[ARCHITECT].status == "completed":
        raise ConfigError(
            f"Phase {GROWS_AT} builds the components the architecture names, and the architecture in {source} has "
            f"no contract (it was made by an earlier version, or edited). Run "
            f"`{continue_command(options, phases=f'{GROWS_AT - 1}-{max(selected)}')}` (or list [[components]] in "
            "the project file).")
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


@dataclass
class Prior:
    """What the run folder already holds for a rerun or a resume."""

    bundle: Bundle | None = None
    records: dict[str, AgentRecord] = field(default_factory=dict)
    journal: JournalState = field(default_factory=lambda: JournalState(run_id=None))


@dataclass(frozen=True)
class Planned:
    """What a run would do, checked as `run` checks it (the dry run's plan). `architecture` is the one in the run
    folder that phase 4 follows when phase 3 is not rerun (None: the architecture of this run will decide)."""

    project: Project
    templates: dict[str, Template]
    selected: list[int]
    folder: Path
    architecture: Architecture | None


def planned(options: RunOptions) -> Planned:
    """What `run` would run, read from the project and the run folder with nothing created, written or called:
    every refusal `run` makes before its first call (a damaged or doctored folder, another project's or
    backend's run, a missing earlier phase, nothing to resume) is raised here too."""
    project, _ = load_project(options.project)
    templates = load_templates(project)
    selected = selected_phases(options)
    folder = RunFolder(options.output or default_folder(options.settings, project))
    prior = load_prior(options, folder, project, selected, price_table(project, options.settings.prices))
    plan = plan_for(project, templates, prior.records)
    check_prerequisites(plan, selected, prior.records, str(folder.bundle_path), options)
    architecture = plan.architecture if GROWS_AT - 1 not in selected else None
    return Planned(project, templates, selected, folder.path, architecture)


def selected_phases(options: RunOptions) -> list[int]:
    """The phases this session runs (`--phases`, cut at `--pause-after`)."""
    selected = options.phases or sorted(PHASES)
    if options.pause_after is not None:
        selected = [n for n in selected if n <= options.pause_after]
        if not selected:
            raise ConfigError(f"--pause-after {options.pause_after} leaves no phase to run out of "
                              f"{','.join(map(str, options.phases or []))}.")
    return selected


def load_prior(options: RunOptions, folder: RunFolder, project: Project, selected: list[int],
                prices: dict[str, tuple[float, float]]) -> Prior:
    """Stage 1: the records a rerun or resume builds on (bundle, journal, the user's edits), checked."""
    prior = Prior()
    if options.phases or options.resume:
        prior.bundle, prior.journal = load_previous(folder, project, prices)
        if prior.bundle is None and options.resume:
            raise ConfigError(f"Nothing to resume in {folder.path}: it has no bundle.json and no journal of a "
                              "run. Run without --resume.")
        if prior.bundle is not None:
            prior.records = prior.bundle.records()
            prior.records.update(prior.journal.records)
            for warning in folder.warnings:
                if options.console is not None:
                    options.console.write(warning + "\n")
            merge_journal(prior.bundle, prior.records)
            refuse_other_backend(prior.bundle, prior.records, options, folder)
            for aid in folder.apply_edits(prior.records):
                if options.console is not None:
                    options.console.write(f"using your edited output of {aid}\n")
    return prior


def merge_journal(bundle: Bundle, records: dict[str, AgentRecord]) -> None:
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


def load_previous(folder: RunFolder, project: Project, prices: dict[str, tuple[float, float]]
                   ) -> tuple[Bundle | None, JournalState]:
    """The run already in the folder: its bundle, else one rebuilt from the journal's header (a run killed
    before its first phase ended), and what the journal adds to it. (None, empty) when there is no run."""
    existing = folder.load_bundle() if folder.bundle_path.exists() else None
    journal = folder.read_journal(existing.run_id if existing else None,
                                  cost=lambda record: record_cost(prices, record))
    if existing is None and journal.run_id is not None:
        check_component(journal.run_id, "the run id", str(folder.journal_path))  # it becomes a path later
        header = journal.header or {}
        first = next(iter(journal.records.values()), None)
        started = str(header.get("started_at") or (first.started_at if first else None) or utc_now())
        existing = Bundle(project=str(header.get("project") or project.name),
                          project_source=str(header.get("project_source") or ""), run_id=journal.run_id,
                          started_at=started, backend=str(header.get("backend") or record_backend(first, "live")))
        log.info("rebuilt the bundle of run %s from %s", journal.run_id, folder.journal_path)
    if existing is not None and existing.project != project.name:
        raise ConfigError(f"{folder.path} holds a run of project {existing.project!r}, not {project.name!r}. Use "
                          "--output to pick that project's folder.")
    if existing is not None:  # the contracts it read back are checked as an edited .json is
        check_contracts(existing.records().values(), folder.bundle_path)
    check_contracts(journal.records.values(), folder.journal_path)
    return existing, journal


def live_tasks(journal: JournalState, records: dict[str, AgentRecord]) -> dict[str, TaskMark]:
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


def record_backend(record: AgentRecord | None, default: str) -> str:
    return (record.run_backend if record is not None else None) or default


def previous_run_id(folder: RunFolder, fallback: str) -> tuple[str, Path]:
    """The id of the run a fresh run moves into history/, and the file it was read from."""
    try:
        return folder.load_bundle().run_id, folder.bundle_path
    except UnsafePath:
        raise  # a doctored bundle: refused (exit 2), never guessed around
    except SparcError:
        pass
    with contextlib.suppress(OSError):
        state = folder.read_journal(None)
        if state.run_id:
            return state.run_id, folder.journal_path
    return "unreadable-" + fallback, folder.bundle_path


def refuse_other_backend(bundle: Bundle, records: dict[str, AgentRecord], options: RunOptions,
                          folder: RunFolder) -> None:
    """Results of the simulator must never pass for a model's (nor the reverse): continuing a run on another
    backend than the one that made its records is refused."""
    made_by: dict[str, list[str]] = {}
    legacy = bundle.sessions[0].backend if bundle.sessions and bundle.sessions[0].backend else bundle.backend
    for record in records.values():
        if record.status == "skipped" and not record.run_backend:
            continue
        made_by.setdefault(record_backend(record, legacy), []).append(record.id)
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
