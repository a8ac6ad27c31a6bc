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


def _fail(message: str, code: int = 2) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def _settings(**overrides: Any) -> Any:
    from pydantic import ValidationError

    from sparc_cloud.settings import Settings

    try:
        base = Settings()
    except ValidationError as exc:
        first = exc.errors()[0]
        name = "SPARC_" + ".".join(str(p) for p in first["loc"]).upper()
        _fail(f"setting {name} is invalid: {first['msg']} (got {first.get('input')!r}). Fix it in the "
              "environment or .env.")
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
    sim_time_scale: Annotated[float | None, typer.Option(help="Simulator time scale (default 0.02: a 20 s call "
                                                              "takes 0.4 s).")] = None,
    scenario: Annotated[Path | None, typer.Option(help="Simulator scenario file (faults, latencies, limits).")]
    = None,
    agent_timeout: Annotated[float | None, typer.Option(help="Seconds one agent may take (Codex tasks).")] = None,
    deadline: Annotated[float | None, typer.Option(help="Seconds the whole run may take.")] = None,
    fail_fast: Annotated[bool, typer.Option(help="Stop at the first failed agent instead of finishing what "
                                                 "can finish.")] = False,
    no_progress: Annotated[bool, typer.Option(help="Plain timestamped lines instead of a live display.")] = False,
) -> None:
    """Run the SPARC phases of a project.

    Examples:

      sparc-cloud run --project memory-extension --backend sim

      sparc-cloud run --project memory-extension --phases 4

      sparc-cloud run --project ./my-project.toml --resume
    """
    from sparc_cloud.errors import SparcError
    from sparc_cloud.phases import parse_phase_selection

    try:
        selection = parse_phase_selection(phases) if phases else None
        if backend not in ("live", "sim"):
            _fail(f"--backend {backend!r}: use live or sim.")
        settings = _settings(concurrency=concurrency, codex_environment=codex_env, sim_time_scale=sim_time_scale,
                             agent_timeout_s=agent_timeout, run_deadline_s=deadline)
        sim_config = None
        if scenario is not None:
            from sparc_cloud.sim import SimConfig, load_scenario

            sim_config = load_scenario(scenario, SimConfig(time_scale=settings.sim_time_scale,
                                                           seed=settings.sim_seed))
        from sparc_cloud.pipeline import RunOptions
        from sparc_cloud.pipeline import run as run_pipeline

        options = RunOptions(project=project, settings=settings, backend=backend, output=output, phases=selection,
                             resume=resume, fail_fast=fail_fast, console=sys.stdout, sim_config=sim_config)
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
    except SparcError as exc:
        _fail(str(exc), exc.exit_code)
    except OSError as exc:
        _fail(f"cannot listen on 127.0.0.1:{port}: {exc.strerror}. Choose another --port.")
    typer.echo(f"simulator listening on {sim.url} (time scale {config.time_scale})")
    typer.echo(f"  SPARC_GEMINI_BASE_URL={sim.gemini_base_url}")
    typer.echo(f"  SPARC_GEMINI_API_BASE_URL={sim.url}")
    typer.echo(f"  SPARC_GEMINI_OAUTH_TOKEN_URL={sim.url}/token")
    typer.echo(f"  SPARC_CODEX_BASE_URL={sim.codex_base_url}")
    typer.echo(f"  SPARC_CODEX_REFRESH_URL={sim.url}/oauth/token")
    typer.echo(f"  counters: {sim.url}/_sim/counters")
    if write_creds:
        paths = sim.write_credentials(write_creds)
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
