"""The `sparc-cloud` command: wires settings and flags to the pipeline and maps errors to exit codes.

Exit codes: 0 all agents completed; 1 the run finished with failed agents; 2 usage, configuration or
input error (nothing was called); 130 interrupted (the journal holds every finished agent)."""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import IO, Annotated, Any, NoReturn, cast

import typer
from typer.core import TyperCommand

from sparc_cloud import __version__
from sparc_cloud.terminal import plural


class _PlainUsage(TyperCommand):
    """A command whose usage line shows a required argument as `RUN_DIR`, not typer's `{RUN_DIR}`."""

    def collect_usage_pieces(self, ctx: Any) -> list[str]:
        return [piece[1:-1] if piece.startswith("{") and piece.endswith("}") else piece
                for piece in super().collect_usage_pieces(ctx)]

app = typer.Typer(
    name="sparc-cloud",
    help="Run the five SPARC phases (specification, pseudocode, architecture, refinement, completion) as a "
         "pipeline of cloud LLM agents, any backend for any phase.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
    # Each line of the examples fits 80 columns; the closing paragraph is wrapped to the terminal by click.
    epilog="\b\nExamples:\n"
           "  # the whole job, no account needed\n"
           "  sparc-cloud run --project memory-extension --backend sim\n"
           "  # the plan, cost and time; nothing spent\n"
           "  sparc-cloud run --project memory-extension --dry-run\n"
           "  # with a live web dashboard\n"
           "  sparc-cloud run --project memory-extension --dashboard\n"
           "  # the newest run: cost, times, critical path\n"
           "  sparc-cloud report\n"
           "  # check credentials, with the fix for each\n"
           "  sparc-cloud doctor\n"
           "\n"
           "Output: results on stdout, progress and messages on stderr; --json where offered. "
           "Settings: flags, then SPARC_* environment variables or .env, then the project file.",
)
sim_app = typer.Typer(help="The loopback simulator of every backend.", no_args_is_help=True)
app.add_typer(sim_app, name="sim")


def _cli_extensions() -> tuple[dict[str, str], dict[str, str]]:
    """Add each kind's sub-app (`sparc-cloud NAME ...`) and gather the help and the old spellings (still accepted,
    hidden) of the run options kinds give meaning to (environment, branch, fallback). The modules import only
    typer: `--help` stays fast."""
    import importlib

    from sparc_cloud.backends.registry import CLI_MODULES

    helps: dict[str, str] = {}
    aliases: dict[str, str] = {}
    for name in CLI_MODULES:
        module = importlib.import_module(name)
        if hasattr(module, "APP"):
            app.add_typer(module.APP, name=module.NAME)
        helps.update(getattr(module, "OPTION_HELP", {}))
        aliases.update(getattr(module, "OPTION_ALIASES", {}))
    return helps, aliases


_HELP, _ALIASES = _cli_extensions()


def fail(message: str, code: int = 2) -> NoReturn:
    """Print `error: message` on stderr (control characters escaped) and exit with `code`."""
    from sparc_cloud.terminal import echo

    echo(f"error: {message}", err=True)  # control characters from files and servers escaped
    raise typer.Exit(code)


_fail = fail


def _option_settings() -> dict[str, str]:
    """The settings behind the run options kinds give meaning to (`registry.OPTION_SETTINGS`)."""
    from sparc_cloud.backends.registry import OPTION_SETTINGS

    return OPTION_SETTINGS


# Settings fields as the user types them on the command line, for error messages.
_FLAGS = {"agent_timeout_s": "--agent-timeout", "run_deadline_s": "--deadline", "sim_time_scale": "--sim-time-scale",
          **{setting: f"--{option}" for option, setting in _option_settings().items()}}


def load_cli_settings(*, flags: dict[str, str] | None = None, **overrides: Any) -> Any:
    """Settings from the environment with the command line's `overrides`; a bad value exits 2 naming it."""
    from pydantic import ValidationError
    from pydantic_settings import SettingsError

    from sparc_cloud.settings import Settings, describe_settings_error

    try:
        base = Settings()
    except UnicodeDecodeError as exc:
        _fail(f"The settings file {Path('.env').resolve()} is not UTF-8 text ({exc.reason} at byte {exc.start}). "
              "Save it as UTF-8, or remove it.")
    except (ValidationError, SettingsError) as exc:
        _fail(describe_settings_error(exc))
    updates = {k: v for k, v in overrides.items() if v is not None}
    try:
        return Settings.model_validate({**base.model_dump(), **updates})
    except ValidationError as exc:
        first = exc.errors()[0]
        field = str(first["loc"][0])
        flag = {**_FLAGS, **(flags or {})}.get(field, "--" + field.replace("_", "-"))
        from sparc_cloud.terminal import clip

        _fail(f"{flag} is invalid: {clip(str(first['msg']))} (got {clip(repr(first.get('input')))}).")


_settings = load_cli_settings


def _version(value: bool) -> None:
    if value:
        typer.echo(f"sparc-cloud {__version__}")
        raise typer.Exit()


@dataclass(frozen=True)
class Verbosity:
    """What the global -q / -v / --debug flags asked for."""

    quiet: bool = False
    verbose: int = 0
    debug: bool = False


def _verbosity(ctx: typer.Context) -> Verbosity:
    obj = ctx.find_root().obj
    return obj if isinstance(obj, Verbosity) else Verbosity()


@app.callback()
def _root(
    ctx: typer.Context,
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress: only results and errors.")] = False,
    verbose: Annotated[int, typer.Option("--verbose", "-v", count=True, help="Log what happens on stderr (-vv: "
                                                                             "debug detail too).")] = 0,
    debug: Annotated[bool, typer.Option("--debug", help="Debug logging and the traceback of an internal error "
                                                        "(env: SPARC_DEBUG=1).")] = False,
) -> None:
    """sparc-cloud: SPARC phases as cloud agents."""
    import logging

    if quiet and (verbose or debug):
        _fail("-q/--quiet and -v/--verbose/--debug contradict each other: give one.")
    debug = debug or bool(os.environ.get("SPARC_DEBUG"))
    if debug:
        os.environ["SPARC_DEBUG"] = "1"  # main() shows the traceback of an internal error
    ctx.obj = Verbosity(quiet=quiet, verbose=max(verbose, 2 if debug else 0), debug=debug)
    if ctx.obj.verbose:
        logger = logging.getLogger("sparc_cloud")
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        handler.setLevel(logging.DEBUG if ctx.obj.verbose > 1 else logging.INFO)
        # A run's events are on the console already (progress lines, the live view or --json); run.log keeps them.
        handler.addFilter(lambda record: not record.name.startswith("sparc_cloud.events"))
        logger.addHandler(handler)
        if logger.level == logging.NOTSET or logger.level > handler.level:
            logger.setLevel(handler.level)
        ctx.call_on_close(lambda: logger.removeHandler(handler))


@app.command()
def run(
    ctx: typer.Context,
    project: Annotated[str, typer.Option("--project", "-p", help="A built-in project name or a path to a TOML file.")],
    phases: Annotated[str | None, typer.Option(help="Run only these phases: 4, 1,3 or 2-4 (earlier outputs "
                                                    "come from the run folder's bundle).")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Finish an interrupted or partly failed run; completed "
                                                          "agents with the same inputs are not called again.")]
    = False,
    backend: Annotated[str, typer.Option(help="live (the real clouds, your credentials) or sim (the built-in "
                                              "simulator, no account needed).", envvar="SPARC_BACKEND",
                                         show_envvar=True)] = "live",
    output: Annotated[Path | None, typer.Option(help="Run folder (default ./sparc-runs/<project>; env: "
                                                     "SPARC_OUTPUT_DIR replaces ./sparc-runs).")] = None,
    concurrency: Annotated[int | None, typer.Option(help="Agents in flight at once (default 16; env: "
                                                         "SPARC_CONCURRENCY).")] = None,
    environment: Annotated[str | None, typer.Option(help=_HELP.get("environment", "The cloud environment task "
                                                                                "backends run in."))] = None,
    old_environment: Annotated[str | None, typer.Option(_ALIASES.get("environment", "--old-environment"), hidden=True)] = None,
    branch: Annotated[str | None, typer.Option(help=_HELP.get("branch", "Git branch cloud tasks start from."))]
    = None,
    sim_time_scale: Annotated[float | None, typer.Option(help="Simulator time scale (default 0.02: a 20 s call "
                                                              "takes 0.4 s; env: SPARC_SIM_TIME_SCALE).")] = None,
    scenario: Annotated[Path | None, typer.Option(help="Simulator scenario file (faults, latencies, limits).")]
    = None,
    base: Annotated[Path | None, typer.Option(help="The tree a chat model's refinement diffs must apply to "
                                                   "(`git apply --check`; default: an empty tree).")] = None,
    agent_timeout: Annotated[float | None, typer.Option(help="Seconds one agent may take (cloud tasks; default "
                                                             "3600; env: SPARC_AGENT_TIMEOUT_S).")] = None,
    deadline: Annotated[float | None, typer.Option(help="Seconds the whole run may take (default: no limit; env: "
                                                        "SPARC_RUN_DEADLINE_S).")] = None,
    fail_fast: Annotated[bool, typer.Option("--fail-fast", help="Stop at the first failed agent instead of "
                                                                "finishing what can finish.")] = False,
    fallback: Annotated[bool | None, typer.Option("--fallback/--no-fallback", show_default=False, help=_HELP.get(
        "fallback", "Fall back to a cheaper model when a model's quota is exhausted."))] = None,
    old_fallback: Annotated[bool | None, typer.Option(_ALIASES.get("fallback", "--old-fallback/--no-old-fallback"), hidden=True)]
    = None,
    no_progress: Annotated[bool, typer.Option("--no-progress", help="Plain timestamped lines (on stderr) instead "
                                                                    "of a live display.")] = False,
    pause_after: Annotated[int | None, typer.Option(help="Stop cleanly after this phase for review (edit its "
                                                         "Markdown, then run the next phases).")] = None,
    budget_usd: Annotated[float | None, typer.Option(help="Stop dispatching before the estimated cost would "
                                                          "cross this many US dollars.")] = None,
    notify: Annotated[list[str] | None, typer.Option(help="Webhook URL (Slack, Discord or generic JSON) told of "
                                                          "phases done, failures, long throttling and the end; "
                                                          "repeatable.")] = None,
    dashboard: Annotated[bool, typer.Option("--dashboard", help="Serve a live web dashboard of the run on "
                                                                "127.0.0.1 while it runs (the URL is printed; env "
                                                                "SPARC_DASHBOARD_PORT fixes the port).")]
    = False,
    json_out: Annotated[bool, typer.Option("--json", help="Stream every event as a JSON line on stdout (progress "
                                                          "and the summary go to stderr).")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the plan (agents, models, order, limits) and the "
                                                            "estimated cost and time; call nothing.")] = False,
) -> None:
    """Run the SPARC phases of a project.

    Examples:

      sparc-cloud run --project memory-extension --backend sim

      sparc-cloud run --project memory-extension --phases 4

      sparc-cloud run --project ./my-project.toml --resume

      sparc-cloud run --project memory-extension --pause-after 1 --budget-usd 2

      sparc-cloud run --project memory-extension --dry-run

      sparc-cloud run --project memory-extension --backend sim --json | jq .kind
    """
    from sparc_cloud.cliargs import check_flag_numbers, check_run_numbers
    from sparc_cloud.errors import AuthError, Cancelled, SparcError
    from sparc_cloud.phases import parse_phase_selection
    from sparc_cloud.pipeline import RunOptions
    from sparc_cloud.terminal import Console, echo

    options: RunOptions | None = None
    try:
        selection = parse_phase_selection(phases) if phases is not None else None  # --phases "" is refused
        if backend not in ("live", "sim"):
            _fail(_bad_backend(ctx, backend))
        check_flag_numbers(deadline=deadline, budget_usd=budget_usd, agent_timeout=agent_timeout,
                           sim_time_scale=sim_time_scale)
        environment = _one_of("environment", environment, old_environment)
        fallback = _one_of("fallback", fallback, old_fallback)
        kind_options: dict[str, Any] = {"environment": environment, "branch": branch, "fallback": fallback}
        kind_settings: dict[str, Any] = {_option_settings()[k]: v for k, v in kind_options.items()
                                         if k in _option_settings()}
        settings = _settings(concurrency=concurrency, sim_time_scale=sim_time_scale, agent_timeout_s=agent_timeout,
                             run_deadline_s=deadline, **kind_settings)
        check_run_numbers(settings, deadline=deadline, budget_usd=budget_usd, agent_timeout=agent_timeout,
                          sim_time_scale=sim_time_scale)
        sim_config = None
        if scenario is not None:
            from sparc_cloud.sim import SimConfig, load_scenario

            sim_config = load_scenario(scenario, SimConfig(time_scale=settings.sim_time_scale,
                                                           seed=settings.sim_seed))
        from sparc_cloud.pipeline import run as run_pipeline

        if pause_after is not None and not 1 <= pause_after <= 5:
            _fail(f"--pause-after {pause_after}: phases are numbered 1 to 5.")
        for url in notify or []:
            if not url.startswith(("https://", "http://")):
                _fail("--notify needs an http(s) webhook URL.")
        if dry_run:
            _dry_run(RunOptions(project=project, settings=settings, backend=backend, output=output, phases=selection,
                                resume=resume, pause_after=pause_after), json_out)
            raise typer.Exit(0)
        quiet = _verbosity(ctx).quiet
        live = not no_progress and not quiet and sys.stderr.isatty() and not os.environ.get("CI")
        shaping: list[tuple[str, object]] = [
            ("--backend", backend), ("--output", output), ("--concurrency", concurrency), ("--environment", environment),
            ("--sim-time-scale", sim_time_scale), ("--scenario", scenario), ("--base", base),
            ("--agent-timeout", agent_timeout),
            ("--deadline", deadline), ("--budget-usd", budget_usd),
            *[("--notify", url) for url in notify or []],
        ]
        invocation = [part for flag, value in shaping if value is not None for part in (flag, str(value))]
        if fail_fast:
            invocation.append("--fail-fast")
        if fallback is not None:
            invocation.append("--fallback" if fallback else "--no-fallback")
        if no_progress:
            invocation.append("--no-progress")
        options = RunOptions(project=project, settings=settings, backend=backend, output=output, phases=selection,
                             resume=resume, fail_fast=fail_fast, console=None if quiet else cast(IO[str], Console(sys.stderr)),
                             sim_config=sim_config, pause_after=pause_after, budget_usd=budget_usd,
                             notify=list(notify or []), live=live, invocation=invocation, diff_base=base,
                             json_events=cast(IO[str], Console(sys.stdout)) if json_out else None)
        board = _start_run_dashboard(project, settings, output) if dashboard else None
        previous = _install_stop_signals(options)
        try:
            outcome = run_pipeline(options)
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
            if board is not None:
                board.finish()
                board.stop()
                typer.echo(f"dashboard closed; `sparc-cloud dashboard {shlex.quote(str(board.view.folder))}` replays "
                           "the run", err=True)
    except SparcError as exc:
        stopped = options.interrupted_by if options is not None and isinstance(exc, Cancelled) else None
        message = str(exc)
        if isinstance(exc, AuthError) and backend == "live":
            message += " " + _credentials_state(_settings(), project)
        _fail(message, 128 + stopped if stopped else exc.exit_code)
    # a reader that has gone (`| head`) does not change the exit code
    echo(outcome.message, err=outcome.exit_code != 0 or json_out)
    raise typer.Exit(outcome.exit_code)


def _one_of(option: str, value: Any, old_value: Any) -> Any:
    """The value of a run option given by its name or its old spelling (exit 2 when given by both)."""
    if value is not None and old_value is not None:
        old = _ALIASES.get(option, "").split("/")[0]
        _fail(f"{old} is the old spelling of --{option}: give one of them, not both.")
    return value if value is not None else old_value


def _bad_backend(ctx: typer.Context, backend: str) -> str:
    """The error for a backend that is neither live nor sim, naming where it came from."""
    source = ctx.get_parameter_source("backend")
    if source is not None and source.name == "ENVIRONMENT":  # typer may carry its own copy of click's enum
        return (f"SPARC_BACKEND={backend!r} (from the environment): use live or sim. Unset it, or set it to live or "
                "sim (--backend overrides it).")
    return f"--backend {backend!r}: use live or sim."


def _credentials_state(settings: Any, project: str) -> str:
    """Where each backend's login stands (the project's, else the default project's), and the two ways on: the
    simulator and `doctor`."""
    from sparc_cloud.backends.registry import DEFAULT_BACKENDS, kind_name, load_kind
    from sparc_cloud.errors import SparcError
    from sparc_cloud.project import load_project

    try:
        loaded = load_project(project)[0]
        kinds = [kind_name(n, loaded.endpoint_kinds()) for n in loaded.backends_used()]
    except SparcError:
        kinds = list(DEFAULT_BACKENDS)
    states = []
    for kind in dict.fromkeys(k for k in kinds if k is not None):
        login_state = load_kind(kind).login_state
        if login_state is not None:
            states.append(login_state(settings))
    where = "; ".join(states) + ". " if states else ""
    return (f"{where}To try the whole job without an account: `sparc-cloud run --project {project} "
            "--backend sim` (or set SPARC_BACKEND=sim); `sparc-cloud doctor` checks each credential and prints "
            "the fix.")


def _dry_run(options: Any, json_out: bool) -> None:
    """Print the plan and its estimates; nothing is called or written. The run folder is read and checked as the
    run would check it, so a run that would be refused is refused here too (exit 2, the same message)."""
    import json

    from sparc_cloud.backends.assemble import price_table, run_limits
    from sparc_cloud.dryrun import assumed_architecture, estimate, format_plan
    from sparc_cloud.phases import build_plan
    from sparc_cloud.pipeline import planned

    what = planned(options)
    loaded, selected, settings = what.project, what.selected, options.settings
    plan = build_plan(loaded, what.templates, what.architecture or assumed_architecture(loaded))
    names = list(dict.fromkeys(a.backend for a in plan.agents if a.phase in selected))
    data = estimate(plan, selected, run_limits(loaded, names), price_table(loaded, settings.prices),
                    concurrency=settings.concurrency,
                    time_scale=settings.sim_time_scale if options.backend == "sim" else 1.0)
    if what.architecture is not None:
        data["assumptions"].update(components=None, architecture_from=str(what.folder))
    if json_out:
        typer.echo(json.dumps({**data, "backend": options.backend}, indent=2))
    else:
        typer.echo(format_plan(data, options.backend), nl=False)


def _start_run_dashboard(project: str, settings: Any, output: Path | None) -> Any:
    """The dashboard of the run folder a run is about to write, serving until the run ends."""
    from sparc_cloud.dashboard import Dashboard
    from sparc_cloud.dashboard.server import environment_port
    from sparc_cloud.pipeline import default_folder
    from sparc_cloud.project import load_project

    folder = output or default_folder(settings, load_project(project)[0])
    try:
        board = Dashboard(folder, port=environment_port() or 0, following=True).start()
    except OSError as exc:
        _fail(f"the dashboard cannot listen on 127.0.0.1 ({exc.strerror}). Free the port in SPARC_DASHBOARD_PORT "
              "or unset it for a random one.")
    typer.echo(f"dashboard: {board.url}", err=True)
    return board


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
_stopped_by: list[int] = []  # the signal that ended the process, for main()'s exit code


def _install_stop_signals(options: Any) -> dict[int, Any]:
    """SIGINT (Ctrl-C), SIGTERM (containers, CI runners, `kill`) and SIGHUP (a closed terminal) all stop the
    run cleanly: nothing new starts, in-flight HTTP is abandoned, the bundle is written, the `--resume` line is
    printed, the terminal restored, temp files removed; exit 128 + the signal. A second signal quits at once."""
    cancel: threading.Event = options.cancel

    def handler(signum: int, frame: FrameType | None) -> None:
        if cancel.is_set() and options.interrupted_by is not None:
            _stopped_by.append(signum)
            raise KeyboardInterrupt
        options.interrupted_by = signum
        cancel.set()
        name = signal.Signals(signum).name
        hint = " (press Ctrl-C again to quit at once)" if signum == signal.SIGINT else ""
        with contextlib.suppress(OSError, ValueError):  # a hung-up terminal may refuse the write
            typer.echo(f"\n{name}: stopping, keeping every finished agent{hint}", err=True)

    if threading.current_thread() is not threading.main_thread():
        return {}
    return {signum: signal.signal(signum, handler) for signum in STOP_SIGNALS}


@contextlib.contextmanager
def _serving_until_stopped() -> Iterator[None]:
    """For commands that serve until stopped (`dashboard`, `sim serve`): SIGINT, SIGTERM and SIGHUP end the
    wait with KeyboardInterrupt whatever disposition the process inherited (a shell starts background jobs with
    SIGINT ignored, and Python keeps that), so `kill`, a closed terminal and Ctrl-C all stop it cleanly."""
    def handler(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {signum: signal.signal(signum, handler) for signum in STOP_SIGNALS}
    try:
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)


@app.command()
def projects(
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
) -> None:
    """List the built-in projects.

    Example:

      sparc-cloud projects --json
    """
    import json

    from sparc_cloud.catalog import builtin_projects

    if json_out:
        typer.echo(json.dumps([{"name": n, "summary": s} for n, s in builtin_projects().items()], indent=2))
        return
    import shutil
    import textwrap

    width = max(60, shutil.get_terminal_size((100, 24)).columns)
    for name, summary in builtin_projects().items():
        typer.echo(textwrap.fill(summary, width=width, initial_indent=f"{name:<24} ", subsequent_indent=" " * 25))


@app.command()
def report(
    run_dir: Annotated[Path | None, typer.Argument(help="A run folder (default: the newest under ./sparc-runs, or "
                                                        "SPARC_OUTPUT_DIR).", show_default=False,
                                                   metavar="RUN_DIR")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
    markdown: Annotated[bool, typer.Option("--markdown", help="Print a Markdown table for a pull request.")] = False,
) -> None:
    """What a run did and cost: per phase and agent, status, model, latency, attempts, 429s, tokens,
    estimated cost, wall time and the speed-up against one agent at a time.

    Example:

      sparc-cloud report

      sparc-cloud report sparc-runs/memory-extension --markdown
    """
    import json

    from sparc_cloud.backends.assemble import known_prices
    from sparc_cloud.errors import SparcError
    from sparc_cloud.latest import latest_run_folder
    from sparc_cloud.report import build_report, print_table, to_markdown
    from sparc_cloud.terminal import clean_data

    if json_out and markdown:
        _fail("--json and --markdown are two formats of the same report: give one.")
    settings = _settings()
    try:
        if run_dir is None:
            run_dir = latest_run_folder(settings.output_dir)
        data = build_report(run_dir, known_prices(settings.prices))
    except SparcError as exc:
        _fail(str(exc), exc.exit_code)
    if json_out:
        typer.echo(json.dumps(data, indent=2))  # JSON escapes control characters itself
    elif markdown:
        typer.echo(to_markdown(clean_data(data)), nl=False)
    else:
        print_table(clean_data(data, markup=True))


@app.command("dashboard")
def dashboard_cmd(
    run_dir: Annotated[Path | None, typer.Argument(help="A run folder (default: the newest under ./sparc-runs, or "
                                                        "SPARC_OUTPUT_DIR).", show_default=False,
                                                   metavar="RUN_DIR")] = None,
    port: Annotated[int, typer.Option(help="Port on 127.0.0.1 (0: a free one).", envvar="SPARC_DASHBOARD_PORT",
                                      show_envvar=True)] = 0,
) -> None:
    """Serve a live web dashboard of a run on 127.0.0.1 until Ctrl-C: the agents as a DAG coloured by status,
    updating as the run goes (a finished run replays), each agent's prompt, output, diff, worklog, retries, 429s,
    throttled time, tokens and cost, the critical path, elapsed time, cost so far and an ETA. Read-only. The URL
    (printed) carries a random token; the JSON endpoints /api/run and /api/events take the same token.

    Examples:

      sparc-cloud dashboard

      sparc-cloud dashboard sparc-runs/memory-extension --port 8800
    """
    import time

    from sparc_cloud.dashboard import Dashboard
    from sparc_cloud.errors import SparcError
    from sparc_cloud.latest import latest_run_folder

    if run_dir is None:
        try:
            run_dir = latest_run_folder(_settings().output_dir)
        except SparcError as exc:
            _fail(str(exc), exc.exit_code)
    if not run_dir.is_dir():
        _fail(f"{run_dir} is not a run folder (no such directory). Give the folder a run wrote, e.g. "
              "sparc-runs/memory-extension.")
    if not 0 <= port <= 65535:
        _fail(f"--port {port}: give a port from 1 to 65535, or 0 for a free one.")
    try:
        board = Dashboard(run_dir, port=port).start()
    except OSError as exc:
        _fail(f"cannot listen on 127.0.0.1:{port} ({exc.strerror}). Choose another --port, or 0 for a free one.")
    typer.echo(board.url)
    typer.echo(f"dashboard of {run_dir}; press Ctrl-C to stop", err=True)
    try:
        with _serving_until_stopped():
            while True:
                time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        board.stop()
    typer.echo("dashboard stopped", err=True)


@app.command()
def doctor(
    environment: Annotated[str | None, typer.Option(help=_HELP.get("doctor_environment", "The cloud environment "
                                                                                       "to check."))] = None,
    old_environment: Annotated[str | None, typer.Option(_ALIASES.get("environment", "--old-environment"), hidden=True)] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON for scripts (same exit code).")] = False,
    project: Annotated[str | None, typer.Option(help="Check the backends this project uses (a built-in name or a "
                                                     ".toml path); default: the default project's.")] = None,
) -> None:
    """Check each backend's credentials (present, readable, mode, expiry) and what it needs (a cloud project, an
    environment, a server that answers), for the default project or a --project, and print the exact fix for each
    problem. Exit 1 when something must be fixed.

    Example:

      sparc-cloud doctor --environment memory-extension
      sparc-cloud doctor --project examples/mixed.toml
    """
    from sparc_cloud.doctor import run_doctor
    from sparc_cloud.errors import SparcError
    from sparc_cloud.project import load_project
    from sparc_cloud.terminal import echo  # server messages in details: control characters escaped

    loaded = None
    if project is not None:
        try:
            loaded = load_project(project)[0]
        except SparcError as exc:
            _fail(str(exc), exc.exit_code)
    checks = run_doctor(_settings(), _one_of("environment", environment, old_environment), loaded)
    if json_out:
        import json

        failed = sum(c.level == "fail" for c in checks)
        typer.echo(json.dumps({"ok": not failed, "checks": [{"name": c.name, "level": c.level, "detail": c.detail,
                                                             "fix": c.fix or None} for c in checks]}, indent=2))
        raise typer.Exit(1 if failed else 0)
    marks = {"ok": "ok  ", "warn": "WARN", "fail": "FAIL"}
    for check in checks:
        echo(f"[{marks[check.level]}] {check.name}: {check.detail}")
        if check.fix and check.level != "ok":
            echo(f"       fix: {check.fix}")
    failed = sum(c.level == "fail" for c in checks)
    total = plural(len(checks), "check")
    typer.echo(f"{total}, {failed} to fix." if failed else f"{total}, all usable.")
    raise typer.Exit(1 if failed else 0)


@app.command("export", cls=_PlainUsage)
def export_cmd(
    run_dir: Annotated[Path, typer.Argument(help="A run folder.", metavar="RUN_DIR")],
    to: Annotated[Path, typer.Option("--to", help="Directory or git checkout to write into (not inside the run "
                                                  "folder).")],
    partial: Annotated[bool, typer.Option(help="Export a run whose phase 4 has failed or skipped agents (what "
                                               "is missing is named).")] = False,
    stale_ok: Annotated[bool, typer.Option("--stale-ok", help="Export a run with stale phases (made from inputs "
                                                              "that changed since, e.g. after --phases 3 with a "
                                                              "new goal) as they are; without it such a run is "
                                                              "refused, naming the command that updates it.")]
    = False,
) -> None:
    """Apply the run's diffs into a directory or git checkout and write the phase documents under
    docs/sparc/: all of it, or (when a diff does not apply or a write fails) nothing at all.

    Example:

      sparc-cloud export sparc-runs/memory-extension --to ../memory-extension
    """
    from sparc_cloud.errors import SparcError
    from sparc_cloud.export import export_run
    from sparc_cloud.terminal import echo

    try:
        result = export_run(run_dir, to, partial=partial, stale_ok=stale_ok)
    except SparcError as exc:
        _fail(str(exc), exc.exit_code)
    echo(f"applied {len(result.patches)} diff(s) ({', '.join(result.patches) or 'none'}) and wrote "
         f"{len(result.documents)} document(s) under {to / 'docs' / 'sparc'}")
    if result.missing:
        echo(f"not exported (--partial): {', '.join(result.missing)}")
    if result.stale:
        echo(f"exported although stale (--stale-ok): {'; '.join(result.stale)}")


@app.command(cls=_PlainUsage)
def init(
    name: Annotated[str, typer.Argument(help="Project name (letters, digits, '.', '_', '-').", metavar="NAME")],
    directory: Annotated[Path, typer.Option("--dir", help="Where to write NAME.toml.")] = Path("."),
) -> None:
    """Write a commented project file to start from.

    Example:

      sparc-cloud init my-service && sparc-cloud run --project my-service.toml --backend sim
    """
    from sparc_cloud.errors import SparcError
    from sparc_cloud.scaffold import write_project

    try:
        path = write_project(name, directory)
    except SparcError as exc:
        _fail(str(exc), exc.exit_code)
    typer.echo(f"wrote {path}; edit it, then: sparc-cloud run --project {path} --backend sim")


@sim_app.command("serve")
def sim_serve(
    port: Annotated[int, typer.Option(help="Port on 127.0.0.1 (0 = any free port).")] = 8765,
    scenario: Annotated[Path | None, typer.Option(help="Scenario file (TOML or JSON).")] = None,
    time_scale: Annotated[float | None, typer.Option(help="Time scale (default SPARC_SIM_TIME_SCALE or 0.02).")]
    = None,
    write_creds: Annotated[Path | None, typer.Option(help="Write credential files the simulator accepts under "
                                                          "this folder (one file per backend's login).")] = None,
) -> None:
    """Serve the simulator until Ctrl-C, for your own tools and CI.

    Example:

      sparc-cloud sim serve --port 8765 --write-creds /tmp/simhome
    """
    from sparc_cloud.errors import SparcError
    from sparc_cloud.sim import SimConfig, Simulator, load_scenario

    settings = _settings(flags={"sim_time_scale": "--time-scale"}, sim_time_scale=time_scale)
    try:
        config = SimConfig(time_scale=settings.sim_time_scale, seed=settings.sim_seed)
        if scenario:
            config = load_scenario(scenario, config)
        sim = Simulator(config, port=port)
        paths = sim.write_credentials(write_creds) if write_creds else None
    except SparcError as exc:
        _fail(str(exc), exc.exit_code)
    typer.echo(f"simulator listening on {sim.url} (time scale {config.time_scale})")
    for line in sim.serve_lines(paths):
        typer.echo(f"  {line}")
    try:
        with _serving_until_stopped():
            sim.serve_forever()
    except KeyboardInterrupt:
        typer.echo("simulator stopped")
    finally:
        sim.stop()


def main() -> None:
    """Console-script entry point."""
    from sparc_cloud.terminal import is_closed_pipe, silence

    try:
        app()
    except KeyboardInterrupt:
        signum = _stopped_by[-1] if _stopped_by else signal.SIGINT
        with contextlib.suppress(OSError, ValueError):
            typer.echo("interrupted", err=True)
        sys.exit(128 + signum)
    except Exception as exc:  # a bug, not a user mistake: short message, traceback on request
        if is_closed_pipe(exc):  # the reader of our output has gone (`| head`): stop quietly
            silence(sys.stdout)
            sys.exit(1)
        if os.environ.get("SPARC_DEBUG"):
            raise
        typer.echo(f"internal error: {type(exc).__name__}: {exc}\nThis is a bug in sparc-cloud. Run again with "
                   "SPARC_DEBUG=1 to see the traceback, and report it.", err=True)
        sys.exit(1)
