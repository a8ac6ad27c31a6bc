"""The `sparc-cloud` command: wires settings and flags to the pipeline and maps errors to exit codes.

Exit codes: 0 all agents completed; 1 the run finished with failed agents; 2 usage, configuration or
input error (nothing was called); 130 interrupted (the journal holds every finished agent)."""

from __future__ import annotations

import os
import signal
import sys
import threading
from pathlib import Path
from types import FrameType
from typing import Annotated, Any, NoReturn

import typer

from sparc_cloud import __version__

app = typer.Typer(
    name="sparc-cloud",
    help="Run the five SPARC phases (specification, pseudocode, architecture, refinement, completion) as a "
         "pipeline of Gemini and Codex Cloud agents.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)
sim_app = typer.Typer(help="The loopback simulator of both clouds.", no_args_is_help=True)
app.add_typer(sim_app, name="sim")
codex_app = typer.Typer(help="Codex Cloud helpers.", no_args_is_help=True)
app.add_typer(codex_app, name="codex")


def _fail(message: str, code: int = 2) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def _settings(**overrides: Any) -> Any:
    from pydantic import ValidationError
    from pydantic_settings import SettingsError

    from sparc_cloud.settings import Settings, describe_settings_error

    try:
        base = Settings()
    except (ValidationError, SettingsError) as exc:
        _fail(describe_settings_error(exc))
    updates = {k: v for k, v in overrides.items() if v is not None}
    try:
        return Settings.model_validate({**base.model_dump(), **updates})
    except ValidationError as exc:
        first = exc.errors()[0]
        flag = "--" + str(first["loc"][0]).replace("_", "-")
        _fail(f"{flag} is invalid: {first['msg']} (got {first.get('input')!r}).")


def _version(value: bool) -> None:
    if value:
        typer.echo(f"sparc-cloud {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
) -> None:
    """sparc-cloud: SPARC phases as cloud agents."""


@app.command()
def run(
    project: Annotated[str, typer.Option("--project", "-p", help="A built-in project name or a path to a TOML file.")],
    phases: Annotated[str | None, typer.Option(help="Run only these phases: 4, 1,3 or 2-4 (earlier outputs "
                                                    "come from the run folder's bundle).")] = None,
    resume: Annotated[bool, typer.Option(help="Finish an interrupted or partly failed run; completed agents "
                                              "with the same inputs are not called again.")] = False,
    backend: Annotated[str, typer.Option(help="live (the real clouds, your credentials) or sim (the built-in "
                                              "simulator, no account needed).")] = "live",
    output: Annotated[Path | None, typer.Option(help="Run folder (default ./sparc-runs/<project>).")] = None,
    concurrency: Annotated[int | None, typer.Option(help="Agents in flight at once (default 16).")] = None,
    codex_env: Annotated[str | None, typer.Option(help="Codex environment id or name for phase 4.")] = None,
    branch: Annotated[str | None, typer.Option(help="Git branch the Codex tasks start from (default: the project's "
                                                    "[codex] branch, else this checkout's branch, else main).")]
    = None,
    sim_time_scale: Annotated[float | None, typer.Option(help="Simulator time scale (default 0.02: a 20 s call "
                                                              "takes 0.4 s).")] = None,
    scenario: Annotated[Path | None, typer.Option(help="Simulator scenario file (faults, latencies, limits).")]
    = None,
    agent_timeout: Annotated[float | None, typer.Option(help="Seconds one agent may take (Codex tasks).")] = None,
    deadline: Annotated[float | None, typer.Option(help="Seconds the whole run may take.")] = None,
    fail_fast: Annotated[bool, typer.Option(help="Stop at the first failed agent instead of finishing what "
                                                 "can finish.")] = False,
    gemini_fallback: Annotated[bool | None, typer.Option(help="Fall back from gemini-2.5-pro to gemini-2.5-flash "
                                                              "when pro's quota is exhausted (recorded per agent).")]
    = None,
    no_progress: Annotated[bool, typer.Option(help="Plain timestamped lines instead of a live display.")] = False,
    pause_after: Annotated[int | None, typer.Option(help="Stop cleanly after this phase for review (edit its "
                                                         "Markdown, then run the next phases).")] = None,
    budget_usd: Annotated[float | None, typer.Option(help="Stop dispatching before the estimated cost would "
                                                          "cross this many US dollars.")] = None,
    notify: Annotated[list[str] | None, typer.Option(help="Webhook URL (Slack, Discord or generic JSON) told of "
                                                          "phases done, failures, long throttling and the end; "
                                                          "repeatable.")] = None,
) -> None:
    """Run the SPARC phases of a project.

    Examples:

      sparc-cloud run --project memory-extension --backend sim

      sparc-cloud run --project memory-extension --phases 4

      sparc-cloud run --project ./my-project.toml --resume

      sparc-cloud run --project memory-extension --pause-after 1 --budget-usd 2
    """
    from sparc_cloud.errors import SparcError
    from sparc_cloud.phases import parse_phase_selection

    try:
        selection = parse_phase_selection(phases) if phases else None
        if backend not in ("live", "sim"):
            _fail(f"--backend {backend!r}: use live or sim.")
        settings = _settings(concurrency=concurrency, codex_environment=codex_env, codex_branch=branch,
                             sim_time_scale=sim_time_scale,
                             agent_timeout_s=agent_timeout, run_deadline_s=deadline, gemini_fallback=gemini_fallback)
        sim_config = None
        if scenario is not None:
            from sparc_cloud.sim import SimConfig, load_scenario

            sim_config = load_scenario(scenario, SimConfig(time_scale=settings.sim_time_scale,
                                                           seed=settings.sim_seed))
        from sparc_cloud.pipeline import RunOptions
        from sparc_cloud.pipeline import run as run_pipeline

        if pause_after is not None and not 1 <= pause_after <= 5:
            _fail(f"--pause-after {pause_after}: phases are numbered 1 to 5.")
        if budget_usd is not None and budget_usd <= 0:
            _fail(f"--budget-usd {budget_usd:g}: give a positive amount of US dollars.")
        for url in notify or []:
            if not url.startswith(("https://", "http://")):
                _fail("--notify needs an http(s) webhook URL.")
        live = not no_progress and sys.stdout.isatty() and not os.environ.get("CI")
        options = RunOptions(project=project, settings=settings, backend=backend, output=output, phases=selection,
                             resume=resume, fail_fast=fail_fast, console=sys.stdout, sim_config=sim_config,
                             pause_after=pause_after, budget_usd=budget_usd, notify=list(notify or []), live=live)
        previous = _install_sigint(options.cancel)
        try:
            outcome = run_pipeline(options)
        finally:
            if previous is not None:
                signal.signal(signal.SIGINT, previous)
    except SparcError as exc:
        _fail(str(exc), exc.exit_code)
    typer.echo(outcome.message, err=outcome.exit_code != 0)
    raise typer.Exit(outcome.exit_code)


def _install_sigint(cancel: threading.Event) -> Any:
    """First Ctrl-C: stop the run cleanly (journal kept, exit 130). Second: stop at once."""

    def handler(signum: int, frame: FrameType | None) -> None:
        if cancel.is_set():
            raise KeyboardInterrupt
        cancel.set()
        typer.echo("\ninterrupted: stopping (press Ctrl-C again to quit at once)", err=True)

    if threading.current_thread() is threading.main_thread():
        return signal.signal(signal.SIGINT, handler)
    return None


@app.command()
def projects() -> None:
    """List the built-in projects.

    Example:

      sparc-cloud projects
    """
    from sparc_cloud.catalog import builtin_projects

    for name, summary in builtin_projects().items():
        typer.echo(f"{name:<24} {summary}")


@app.command()
def report(
    run_dir: Annotated[Path, typer.Argument(help="A run folder.")] = Path("sparc-runs/memory-extension"),
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
    markdown: Annotated[bool, typer.Option(help="Print a Markdown table for a pull request.")] = False,
) -> None:
    """What a run did and cost: per phase and agent, status, model, latency, attempts, 429s, tokens,
    estimated cost, wall time and the speed-up against one agent at a time.

    Example:

      sparc-cloud report sparc-runs/memory-extension --markdown
    """
    import json

    from sparc_cloud.errors import SparcError
    from sparc_cloud.report import build_report, print_table, to_markdown

    settings = _settings()
    try:
        data = build_report(run_dir, settings.prices)
    except SparcError as exc:
        _fail(str(exc), exc.exit_code)
    if json_out:
        typer.echo(json.dumps(data, indent=2))
    elif markdown:
        typer.echo(to_markdown(data), nl=False)
    else:
        print_table(data)


@app.command()
def doctor(
    codex_env: Annotated[str | None, typer.Option(help="Codex environment id or name to check.")] = None,
) -> None:
    """Check credentials (present, readable, mode, expiry), the Gemini project and the Codex environment,
    and print the exact fix for each problem. Exit 1 when something must be fixed.

    Example:

      sparc-cloud doctor --codex-env memory-extension
    """
    from sparc_cloud.doctor import run_doctor

    checks = run_doctor(_settings(), codex_env)
    marks = {"ok": "ok  ", "warn": "WARN", "fail": "FAIL"}
    for check in checks:
        typer.echo(f"[{marks[check.level]}] {check.name}: {check.detail}")
        if check.fix and check.level != "ok":
            typer.echo(f"       fix: {check.fix}")
    failed = sum(c.level == "fail" for c in checks)
    typer.echo(f"{len(checks)} checks, {failed} to fix." if failed else f"{len(checks)} checks, all usable.")
    raise typer.Exit(1 if failed else 0)


@codex_app.command("envs")
def codex_envs() -> None:
    """List your Codex Cloud environments (id, name, pinned, task count); --codex-env takes a name or an id.

    Example:

      sparc-cloud codex envs
    """
    import threading

    from sparc_cloud.clients.factory import ClientContext, make_codex
    from sparc_cloud.errors import SparcError
    from sparc_cloud.http.clock import RealClock
    from sparc_cloud.redact import SecretRegistry

    settings = _settings()
    try:
        ctx = ClientContext(settings=settings, clock=RealClock(threading.Event()), secrets=SecretRegistry())
        envs = make_codex(ctx).environments()
    except SparcError as exc:
        _fail(str(exc), exc.exit_code)
    if not envs:
        typer.echo("No Codex environments. Create one at https://chatgpt.com/codex/settings/environments.")
    for env in envs:
        typer.echo(f"{env.id:<36} {env.label or '-':<28} {'pinned' if env.is_pinned else '':<6} "
                   f"{env.task_count} tasks")


@app.command("export")
def export_cmd(
    run_dir: Annotated[Path, typer.Argument(help="A run folder.")],
    to: Annotated[Path, typer.Option("--to", help="Directory or git checkout to write into.")],
) -> None:
    """Apply the run's Codex diffs into a directory or git checkout (each checked first; nothing is touched
    if one does not apply) and write the phase documents under docs/sparc/.

    Example:

      sparc-cloud export sparc-runs/memory-extension --to ../memory-extension
    """
    from sparc_cloud.errors import SparcError
    from sparc_cloud.export import export_run

    try:
        result = export_run(run_dir, to)
    except SparcError as exc:
        _fail(str(exc), exc.exit_code)
    typer.echo(f"applied {len(result.patches)} diff(s) ({', '.join(result.patches) or 'none'}) and wrote "
               f"{len(result.documents)} document(s) under {to / 'docs' / 'sparc'}")


@app.command()
def init(
    name: Annotated[str, typer.Argument(help="Project name (letters, digits, '.', '_', '-').")],
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
                                                          "this folder (.gemini/ and .codex/).")] = None,
) -> None:
    """Serve the simulator until Ctrl-C, for your own tools and CI.

    Example:

      sparc-cloud sim serve --port 8765 --write-creds /tmp/simhome
    """
    from sparc_cloud.errors import SparcError
    from sparc_cloud.sim import SimConfig, Simulator, load_scenario

    settings = _settings(sim_time_scale=time_scale)
    try:
        config = SimConfig(time_scale=settings.sim_time_scale, seed=settings.sim_seed)
        if scenario:
            config = load_scenario(scenario, config)
        sim = Simulator(config, port=port)
        paths = sim.write_credentials(write_creds) if write_creds else None
    except SparcError as exc:
        _fail(str(exc), exc.exit_code)
    typer.echo(f"simulator listening on {sim.url} (time scale {config.time_scale})")
    typer.echo(f"  SPARC_GEMINI_BASE_URL={sim.gemini_base_url}")
    typer.echo(f"  SPARC_GEMINI_API_BASE_URL={sim.url}")
    typer.echo(f"  SPARC_GEMINI_OAUTH_TOKEN_URL={sim.url}/token")
    typer.echo(f"  SPARC_CODEX_BASE_URL={sim.codex_base_url}")
    typer.echo(f"  SPARC_CODEX_REFRESH_URL={sim.url}/oauth/token")
    typer.echo(f"  counters: {sim.url}/_sim/counters")
    if paths:
        client_id, _ = sim.oauth_client()
        typer.echo(f"  SPARC_GEMINI_CREDS={paths['gemini']}")
        typer.echo(f"  SPARC_CODEX_AUTH={paths['codex']}")
        typer.echo(f"  SPARC_GEMINI_OAUTH_CLIENT_ID={client_id} (the secret is in sparc_cloud.sim.state)")
    try:
        sim.serve_forever()
    except KeyboardInterrupt:
        typer.echo("simulator stopped")
    finally:
        sim.stop()


def main() -> None:
    """Console-script entry point."""
    try:
        app()
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        sys.exit(130)
    except Exception as exc:  # a bug, not a user mistake: short message, traceback on request
        if os.environ.get("SPARC_DEBUG"):
            raise
        typer.echo(f"internal error: {type(exc).__name__}: {exc}\nThis is a bug in sparc-cloud. Run again with "
                   "SPARC_DEBUG=1 to see the traceback, and report it.", err=True)
        sys.exit(1)
