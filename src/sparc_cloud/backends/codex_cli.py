"""What the Codex kind adds to the CLI: the `codex envs` command and the help of the run options it gives meaning
to (`--environment`, `--branch`). Imports only typer at load time: the CLI reads it for `--help`."""

from __future__ import annotations

from typing import Annotated

import typer

NAME = "codex"
APP = typer.Typer(help="Codex Cloud helpers.", no_args_is_help=True)
OPTION_HELP = {
    "environment": "The Codex environment (id or name) phase 4's tasks run in (env: SPARC_CODEX_ENVIRONMENT; "
                   "`sparc-cloud codex envs` lists yours).",
    "branch": "Git branch the Codex tasks start from (default: the project's [codex] branch, else this checkout's "
              "branch, else main; env: SPARC_CODEX_BRANCH).",
    "doctor_environment": "Codex environment id or name to check (env: SPARC_CODEX_ENVIRONMENT).",
}
OPTION_ALIASES = {"environment": "--codex-env"}  # the old spelling, still accepted (hidden)


@APP.command("envs")
def envs(
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
) -> None:
    """List your Codex Cloud environments (id, name, pinned, task count); --environment takes a name or an id.

    Example:

      sparc-cloud codex envs
    """
    import threading

    from sparc_cloud.cli import fail, load_cli_settings
    from sparc_cloud.clients.codex import make_codex
    from sparc_cloud.clients.factory import ClientContext
    from sparc_cloud.errors import SparcError
    from sparc_cloud.http.clock import RealClock
    from sparc_cloud.redact import SecretRegistry
    from sparc_cloud.terminal import echo, plural

    settings = load_cli_settings()
    try:
        ctx = ClientContext(settings=settings, clock=RealClock(threading.Event()), secrets=SecretRegistry())
        found = make_codex(ctx).environments()
    except SparcError as exc:
        fail(str(exc), exc.exit_code)
    if json_out:
        import json

        typer.echo(json.dumps([{"id": e.id, "label": e.label, "is_pinned": e.is_pinned, "task_count": e.task_count}
                               for e in found], indent=2))
        return
    if not found:
        typer.echo("No Codex environments. Create one at https://chatgpt.com/codex/settings/environments.")
    for env in found:  # ids and labels come from the server: control characters escaped
        echo(f"{env.id:<36} {env.label or '-':<28} {'pinned' if env.is_pinned else '':<6} {plural(env.task_count, 'task')}")
