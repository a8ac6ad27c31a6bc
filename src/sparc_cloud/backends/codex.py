"""The Codex backend: one Codex Cloud task per agent, in the environment and on the branch of the run.

Keeps the journal's promises: a task is journaled `creating` before its create goes out and `started`
once it has an id, so a resume re-attaches to a live task (or finds a lost create by its marker) instead
of buying it twice."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from sparc_cloud.backends.base import AgentCall, BackendKind, BuildContext, DoctorContext, RunHooks
from sparc_cloud.bundle import AgentRecord, Usage
from sparc_cloud.checks import Check, Level
from sparc_cloud.clients import codex_settings
from sparc_cloud.clients.auth import jwt_claims
from sparc_cloud.clients.codex import CodexClient, TaskDetails, make_codex
from sparc_cloud.clients.codex_auth import CODEX_LOGIN_HINT
from sparc_cloud.clients.codex_gitref import resolve_branch
from sparc_cloud.doctor import duration, file_checks, fix_for
from sparc_cloud.errors import ConfigError, SparcError, TaskFailed, TaskGone
from sparc_cloud.events import Event
from sparc_cloud.http.ratelimit import Key, RateLimit
from sparc_cloud.phases import AgentSpec
from sparc_cloud.redact import hide_userinfo
from sparc_cloud.runfolder import TaskMark
from sparc_cloud.settings import Settings

log = logging.getLogger("sparc_cloud.agents")
# The runbook's measured limits: task creation 10/min; status polls 30/min per account.
OPERATION_LIMITS = {
    "create": RateLimit(*codex_settings.CREATE_LIMIT),
    "poll": RateLimit(per_minute=codex_settings.POLLS_PER_MINUTE, burst=codex_settings.POLL_BURST),
}
SIM_ENVIRONMENT = "memory-extension"  # the environment a `--backend sim` run uses when none is configured


class CodexBackend:
    """Agents as Codex Cloud tasks."""

    def __init__(self, name: str, client: CodexClient, ctx: BuildContext) -> None:
        self.name = name
        self.client = client
        settings, project = ctx.settings, ctx.project
        self.wanted = settings.codex_environment or project.codex.environment
        if ctx.run_backend == "sim" and not self.wanted:
            self.wanted = SIM_ENVIRONMENT
        self.configured = settings.codex_environment or project.codex.environment
        self.branch: str | None = resolve_branch(settings.codex_branch, project.codex.branch).branch
        self.environment_id: str | None = None  # resolved by preflight()

    def same_place(self, earlier: AgentRecord) -> bool:
        """A Codex result is reusable only from the same environment and branch."""
        return (earlier.environment_id, earlier.branch) == (self.environment_id, self.branch)

    def preflight(self) -> None:
        """Resolve the environment (by id or name) before the first task."""
        if not self.wanted:
            names = ", ".join(f"{e.label} ({e.id})" for e in self.client.environments()) or "none"
            raise ConfigError("No Codex environment is configured for phase 4. Set --environment (or "
                              f"SPARC_CODEX_ENVIRONMENT, or [codex] environment in the project). Yours: {names}.")
        self.environment_id = self.client.resolve_environment(self.wanted).id

    def describe(self) -> list[str]:
        """Where the tasks go: URL, account, environment and branch."""
        claims = jwt_claims(self.client.auth.id_token() or "")
        plan = claims.get("https://api.openai.com/auth")
        plan_type = plan.get("chatgpt_plan_type") if isinstance(plan, dict) else None
        email = claims.get("email") or f"the login in {self.client.auth.path}"
        account = f"{email}{f' ({plan_type} plan)' if plan_type else ''}"
        where = f"environment {self.configured}" if self.configured else "no environment yet"
        branch = f", branch {self.branch}" if self.branch else ""
        return [f"codex: Codex Cloud tasks at {hide_userinfo(self.client.prefix)} ({self.client.base_setting}), account {account}, "
                f"project: {where}{branch}"]

    def run(self, call: AgentCall, hooks: RunHooks) -> None:
        """One Codex Cloud task (or the live one an earlier session started): text, diff and worklog."""
        agent, system, prompt, record = call.agent, call.system, call.prompt, call.record
        if call.contract is not None:  # a task has no schema field: the answer is parsed from the task's text
            prompt += call.contract.instruction
        on_retry, on_wait = call.on_retry, call.on_wait
        client = self.client
        env_id, branch = self.environment_id, self.branch
        assert env_id, "the Codex environment is resolved before the run starts"
        record.environment_id, record.branch = env_id, branch
        digest = record.inputs_hash or ""

        def on_poll(details: TaskDetails) -> None:
            hooks.bus.emit(Event("agent_polled", agent.id, agent.phase, details.status.value,
                                {"task_id": details.task_id, "status": details.status.value}))

        found = self._attached_task(agent, record, hooks, on_poll)
        if found is None:
            # Journaled before the request goes out: a process killed while the create is on the wire leaves a
            # line a resume uses to look for the task instead of buying it twice.
            marker = task_marker(hooks.run_id, agent.id, digest)
            hooks.on_task(TaskMark(agent.id, "creating", digest, env_id, branch, marker=marker, at=hooks.clock.wall()))
            task_id = client.create_task(f"{system}\n\n{prompt}", environment_id=env_id, branch=branch,
                                         marker=marker, on_retry=on_retry, on_wait=on_wait)
            record.task_id = task_id
            hooks.on_task(TaskMark(agent.id, "started", digest, env_id, branch, marker=marker, task_id=task_id,
                                  at=hooks.clock.wall()))
            found = client.wait(task_id, timeout_s=hooks.agent_timeout_s, on_poll=on_poll, environment_id=env_id)
        details, polls = found
        record.task_status = details.status.value
        if details.updated_at is not None:
            record.detection_delay_s = round(max(0.0, hooks.clock.wall() - details.updated_at), 3)
        record.output_text = details.text
        record.diff = details.diff
        record.worklog = details.worklog
        record.polls = polls
        record.attempts = 1
        tokens_in, tokens_out = len(prompt) // 4, len(details.text + (details.diff or "")) // 4
        # Codex Cloud reports no token usage; these are estimates (4 characters per token), marked as such.
        record.usage = Usage(prompt_tokens=tokens_in, output_tokens=tokens_out, total_tokens=tokens_in + tokens_out)
        record.usage_estimated = True

    def _attached_task(self, agent: AgentSpec, record: AgentRecord, hooks: RunHooks,
                       on_poll: Callable[[TaskDetails], None]) -> tuple[TaskDetails, int] | None:
        """Wait for the task an earlier session of this run started for the same inputs, if it is still alive.

        A session killed while its create was on the wire left only a `creating` line: the task is looked for
        by its marker. None when there is none to attach to, or it failed, was cancelled or is gone: then a
        new task is bought."""
        mark = hooks.attach.get(agent.id)
        if mark is None or mark.inputs_hash != record.inputs_hash or \
                (mark.environment_id, mark.branch) != (record.environment_id, record.branch):
            return None
        task_id = mark.task_id
        if task_id is None and mark.marker and record.environment_id:
            task_id = self.client.find_created(mark.marker, record.environment_id, since=mark.at or hooks.clock.wall())
            if task_id is None:
                log.info("%s: the create an earlier session sent never made a task; creating one", agent.id)
                return None
            hooks.on_task(TaskMark(agent.id, "started", mark.inputs_hash, mark.environment_id, mark.branch,
                                  marker=mark.marker, task_id=task_id, at=hooks.clock.wall()))
        if task_id is None:
            return None
        record.task_id = task_id
        hooks.bus.emit(Event("agent_attached", agent.id, agent.phase,
                            f"re-attached to Codex task {task_id} started by an earlier session",
                            {"task_id": task_id}))
        try:
            return self.client.wait(task_id, timeout_s=hooks.agent_timeout_s, on_poll=on_poll,
                               environment_id=record.environment_id)
        except TaskFailed as exc:
            log.info("%s: the earlier task %s ended %s; creating a new one", agent.id, task_id, exc.status)
        except TaskGone:
            log.info("%s: the earlier task %s is gone (404); creating a new one", agent.id, task_id)
        record.task_id = None
        return None


def task_marker(run_id: str, agent_id: str, inputs_hash: str) -> str:
    """What makes a created task findable again: the run, the agent and its inputs."""
    return f"{run_id}/{agent_id}/{inputs_hash.removeprefix('sha256:')[:12]}"


def _build(ctx: BuildContext, name: str) -> CodexBackend:
    """Credentials are read now, so a missing login stops the run before any call."""
    if ctx.simulator is not None:  # the simulator knows the environment the project names
        ctx.simulator.add_environment(ctx.settings.codex_environment or ctx.project.codex.environment)
    return CodexBackend(name, make_codex(ctx.client), ctx)


def _doctor(dctx: DoctorContext, name: str) -> list[Check]:
    """auth.json, token expiry, account, environment."""
    settings, ctx = dctx.settings, dctx.client
    environment = dctx.environment or settings.codex_environment
    path = settings.codex_auth_path()
    checks, data = file_checks("Codex credentials", path, CODEX_LOGIN_HINT)
    if data is None:
        return checks
    raw_tokens = data.get("tokens")
    tokens: dict[str, object] = raw_tokens if isinstance(raw_tokens, dict) else {}
    if not tokens.get("access_token"):
        return [*checks, Check("Codex credentials", "fail", "no ChatGPT tokens (API-key login?)", CODEX_LOGIN_HINT)]
    exp = jwt_claims(str(tokens["access_token"])).get("exp")
    if isinstance(exp, int | float):
        left = float(exp) - time.time()
        level: Level = "ok" if left > 0 else ("ok" if settings.codex_refresh else "fail")
        fix = "" if level == "ok" else "Run any `codex` command (it refreshes the token) or `codex login`."
        checks.append(Check("Codex token", level, f"valid for {duration(left)}" if left > 0 else duration(left), fix))
    checks.append(Check("Codex account", "ok" if tokens.get("account_id") or exp else "warn",
                        "account id present" if tokens.get("account_id") else "account id from the token"))
    try:
        client = make_codex(ctx)
        envs = client.environments()
        if environment:
            env = client.resolve_environment(environment)
            checks.append(Check("Codex environment", "ok", f"{env.label or '?'} ({env.id}) is reachable"))
        else:
            names = ", ".join(f"{e.label} ({e.id})" for e in envs) or "none"
            checks.append(Check("Codex environment", "warn", f"none configured; yours: {names}",
                                "Set SPARC_CODEX_ENVIRONMENT or pass --environment NAME."))
    except SparcError as exc:
        checks.append(Check("Codex environment", "fail", str(exc), fix_for(exc, "See the message.")))
    return checks


def _limits(name: str, endpoint: object) -> dict[Key, RateLimit]:
    return {(name, op, "*"): limit for op, limit in OPERATION_LIMITS.items()}


def _login_state(settings: Settings) -> str:
    if settings.codex_auth_path().is_file():
        return f"Codex: logged in ({settings.codex_auth_path()})"
    return f"Codex: not logged in (no {settings.codex_auth_path()}; run `codex login`)"


KIND = BackendKind(
    name="codex",
    summary="Codex Cloud tasks (the codex CLI's ChatGPT login); returns diffs",
    build=_build,
    doctor=_doctor,
    limits=_limits,
    prices=codex_settings.PRICES,
    call_key=lambda name, model: (name, "create", "*"),
    typical_output_tokens=4_000,
    latency_name=lambda model: "codex-task",
    billing_note="Codex Cloud bills through a subscription",
    login_state=_login_state,
)
