"""What `sparc-cloud run` was asked to do (`RunOptions`), what it answers (`RunOutcome`), and the command that
goes on with a run: the vocabulary the pipeline, the folder checks and the CLI share."""

from __future__ import annotations

import shlex
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from sparc_cloud.bundle import Bundle
from sparc_cloud.phases import PHASES
from sparc_cloud.project import Project
from sparc_cloud.settings import Settings
from sparc_cloud.sim import SimConfig, Simulator


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
    diff_base: Path | None = None  # `--base DIR`: the tree chat-model refinement diffs must apply to


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


def continue_command(options: RunOptions, *, resume: bool = False, phases: str | None = None) -> str:
    """The command that goes on with this run, repeating every option that shaped it, quoted for a shell."""
    args = ["sparc-cloud", "run", "--project", options.project]
    if options.invocation is not None:
        args += options.invocation
    else:
        args += ["--backend", options.backend]
        if options.output is not None:
            args += ["--output", str(options.output)]
    if phases is None and resume and (options.phases or options.pause_after is not None):
        # A resume continues exactly the selection that was interrupted (and nothing after it).
        chosen = [n for n in options.phases or sorted(PHASES) if options.pause_after is None or n <= options.pause_after]
        phases = phase_span(chosen) if chosen else None
    if phases:
        args += ["--phases", phases]
    if resume:
        args.append("--resume")
    return shlex.join(args)


def phase_span(numbers: list[int]) -> str:
    """Phases as `--phases` takes them: `4`, `3-5`, `1,3`."""
    ordered = sorted(set(numbers))
    if len(ordered) == 1:
        return str(ordered[0])
    if ordered == list(range(ordered[0], ordered[-1] + 1)):
        return f"{ordered[0]}-{ordered[-1]}"
    return ",".join(map(str, ordered))
