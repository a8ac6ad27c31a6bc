"""The real clients over real HTTP against the simulator: every behaviour of the behaviour model."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from sparc_cloud.clients.codex import TaskStatus, make_codex
from sparc_cloud.clients.factory import ClientContext
from sparc_cloud.clients.gemini import make_gemini
from sparc_cloud.errors import ConfigError, ModelNotFound, RetriesExhausted, TaskFailed, TaskTimeout, TerminalQuota
from sparc_cloud.http.clock import RealClock
from sparc_cloud.http.ratelimit import RateLimiters
from sparc_cloud.redact import SecretRegistry
from sparc_cloud.sim import Fault, SimConfig, Simulator, TaskScript, load_scenario
from sparc_cloud.sim.content import text_answer
from tests.conftest import FAST, sim_settings

PROMPT = "SPARC phase 1 (specification): research agent 1 of 4.\nProject: demo\nTopic: Vector databases\n"


def test_generate_returns_phase_shaped_simulated_text(ctx: ClientContext) -> None:
    result = make_gemini(ctx).generate(PROMPT, model="gemini-2.5-flash")
    assert "# Research notes: Vector databases" in result.text
    assert "Simulated output" in result.text
    assert result.usage.total_tokens == result.usage.prompt_tokens + result.usage.output_tokens > 0
    assert result.request_id and result.request_id.startswith("sim-")


def test_content_is_deterministic_for_seed_and_prompt() -> None:
    assert text_answer(PROMPT, 7) == text_answer(PROMPT, 7)
    assert text_answer(PROMPT, 7) != text_answer(PROMPT, 8)


def test_missing_or_unknown_bearer_token_gets_the_401_envelope(sim: Simulator) -> None:
    body = {"model": "gemini-2.5-flash", "project": "p", "request": {"contents": [{"role": "user", "parts": [{"text": "x"}]}]}}
    for headers in ({}, {"Authorization": "Bearer nope"}):
        resp = requests.post(sim.base_url("gemini") + ":generateContent", json=body, headers=headers, timeout=5)
        assert resp.status_code == 401
        assert resp.json()["error"]["status"] == "UNAUTHENTICATED"


def test_unknown_model_gets_404_and_the_client_does_not_retry(ctx: ClientContext, sim: Simulator) -> None:
    with pytest.raises(ModelNotFound, match="models/gemini-0-nano is not found"):
        make_gemini(ctx).generate(PROMPT, model="gemini-0-nano")
    assert sim.counters()["status_sent"]["404"] == 1


def test_malformed_request_body_gets_400(sim: Simulator, isolated_env: Path) -> None:
    token = json.loads(sim.write_credentials(isolated_env)["gemini"].read_text())["access_token"]
    resp = requests.post(sim.base_url("gemini") + ":generateContent", data=b"{not json",
                         headers={"Authorization": f"Bearer {token}"}, timeout=5)
    assert resp.status_code == 400 and resp.json()["error"]["status"] == "INVALID_ARGUMENT"


@pytest.fixture
def real_time_sim() -> Iterator[Simulator]:
    """Real-time limits (pro 3/min, polls 30/min) with near-zero latency, so limits show at once."""
    latency = {"*": (0.001, 0.002), "codex-task": (100.0, 100.0)}
    with Simulator(SimConfig(time_scale=1.0, latency=latency)) as simulator:
        yield simulator


def test_rate_limits_are_enforced_with_real_429_envelopes(real_time_sim: Simulator, isolated_env: Path) -> None:
    sim = real_time_sim
    token = json.loads(sim.write_credentials(isolated_env)["gemini"].read_text())["access_token"]
    body = {"model": "gemini-2.5-pro", "project": sim.config.project_id,
            "request": {"contents": [{"role": "user", "parts": [{"text": "x"}]}]}}
    answers = [requests.post(sim.base_url("gemini") + ":generateContent", json=body,
                             headers={"Authorization": f"Bearer {token}"}, timeout=5) for _ in range(4)]
    assert [a.status_code for a in answers] == [200, 200, 200, 429]  # pro: 3 per minute
    details = answers[3].json()["error"]["details"]
    assert {d["@type"].rsplit(".", 1)[1] for d in details} == {"ErrorInfo", "RetryInfo"}
    assert sim.counters()["rate_limited_total"] == 1


def test_client_limiter_matches_the_simulator_so_no_429_is_provoked(ctx: ClientContext, sim: Simulator) -> None:
    client = make_gemini(ctx)
    for i in range(6):
        client.generate(f"{PROMPT} {i}", model="gemini-2.5-pro")
    assert sim.counters()["rate_limited_total"] == 0


def test_a_429_hint_is_honoured_by_the_real_client(ctx: ClientContext, sim: Simulator) -> None:
    sim.set_scenario([Fault(endpoint="gemini.generate", model="gemini-2.5-flash", at_call=1, responses=["429:1s"])])
    result = make_gemini(ctx).generate(PROMPT, model="gemini-2.5-flash")
    assert result.attempts == 2


def test_scripted_sequence_503_then_429_then_truncated(ctx: ClientContext, sim: Simulator) -> None:
    sim.set_scenario([Fault(endpoint="gemini.generate", model="gemini-2.5-pro", at_call=3,
                            responses=["503", "429:2s", "truncated"])])
    client = make_gemini(ctx)
    client.generate("a", model="gemini-2.5-pro")
    client.generate("b", model="gemini-2.5-pro")
    result = client.generate("c", model="gemini-2.5-pro")
    assert result.attempts == 4
    faults = sim.counters()["faults"]
    assert faults == {"gemini.generate:503": 1, "gemini.generate:429:2s": 1, "gemini.generate:truncated": 1}


def test_daily_quota_fault_fails_fast(ctx: ClientContext, sim: Simulator) -> None:
    sim.set_scenario([Fault(endpoint="gemini.generate", at_call=1, responses=["quota-daily"])])
    with pytest.raises(TerminalQuota, match="Individual quota reached"):
        make_gemini(ctx).generate(PROMPT, model="gemini-2.5-pro")
    assert sim.counters()["requests"]["gemini.generate"] == 1


def test_connection_reset_and_5xx_bursts_are_survived(ctx: ClientContext, sim: Simulator) -> None:
    sim.set_scenario([Fault(endpoint="gemini.generate", at_call=1, responses=["reset", "500", "502", "504", "error-200"])])
    assert make_gemini(ctx).generate(PROMPT, model="gemini-2.5-flash").attempts == 6


def test_probability_faults_are_seeded_and_bounded(ctx: ClientContext, sim: Simulator) -> None:
    sim.set_scenario([Fault(endpoint="gemini.generate", probability=1.0, max_count=2, responses=["503"])])
    assert make_gemini(ctx).generate(PROMPT, model="gemini-2.5-flash").attempts == 3


def test_expired_token_gets_401_and_the_client_refreshes(isolated_env: Path) -> None:
    config = SimConfig(time_scale=FAST, gemini_token_life_s=100)  # 0.2 s at this scale
    with Simulator(config) as simulator:
        settings = sim_settings(simulator, isolated_env)
        ctx = ClientContext(settings=settings, clock=RealClock(), secrets=SecretRegistry(), time_scale=FAST)
        client = make_gemini(ctx)
        client.generate(PROMPT, model="gemini-2.5-flash")
        time.sleep(0.3)
        client.generate(PROMPT + "again", model="gemini-2.5-flash")
        counters = simulator.counters()
    assert counters["tokens_issued"]["gemini"] >= 2  # the refresh went through the token endpoint


def test_revoked_token_401_fault_refreshes_once(ctx: ClientContext, sim: Simulator) -> None:
    sim.set_scenario([Fault(endpoint="gemini.generate", at_call=1, responses=["401"])])
    make_gemini(ctx).generate(PROMPT, model="gemini-2.5-flash")
    assert sim.counters()["tokens_issued"]["gemini"] == 2


def test_codex_lifecycle_pending_in_progress_completed_with_diff(ctx: ClientContext, sim: Simulator) -> None:
    client = make_codex(ctx)
    env = client.resolve_environment("MEMORY-EXTENSION")
    seen: list[TaskStatus] = []
    task_id = client.create_task("Project: demo\nComponent: Memory manager\nImplement it", environment_id=env.id)
    result, polls = client.wait(task_id, timeout_s=30, on_poll=lambda d: seen.append(d.status))
    assert result.status == TaskStatus.COMPLETED
    assert result.diff and "+++ b/src/demo/memory_manager.py" in result.diff
    assert result.worklog and "Simulated output" in result.text
    # each new status the sweeps showed (pending, in_progress, completed: at most once each), then the details
    assert seen[-1] == TaskStatus.COMPLETED and len(seen) <= 4
    task = sim.counters()["tasks"][task_id]
    assert task["polls"] == 1 and polls > 1 and task["detection_delay_s"] is not None
    assert task["seen_delay_s"] is not None and task["seen_delay_s"] <= task["detection_delay_s"]


def test_codex_scripted_task_failure_and_stuck_task(isolated_env: Path) -> None:
    config = SimConfig(time_scale=FAST, tasks=[TaskScript(index=1, outcome="failed", error_message="OOM"),
                                               TaskScript(index=2, outcome="stuck")])
    with Simulator(config) as simulator:
        settings = sim_settings(simulator, isolated_env)
        ctx = ClientContext(settings=settings, clock=RealClock(), secrets=SecretRegistry(), time_scale=FAST)
        client = make_codex(ctx)
        env_id = client.resolve_environment("memory-extension").id
        first = client.create_task("Project: d\nComponent: A", environment_id=env_id)
        second = client.create_task("Project: d\nComponent: B", environment_id=env_id)
        with pytest.raises(TaskFailed, match="internal_error: OOM"):
            client.wait(first, timeout_s=30)
        with pytest.raises(TaskTimeout, match="last status: in_progress"):
            client.wait(second, timeout_s=0.5)


def test_codex_create_without_new_task_is_400(ctx: ClientContext, sim: Simulator) -> None:
    client = make_codex(ctx)
    token = client.auth.token()
    resp = requests.post(sim.base_url("codex") + "/wham/tasks", json={"input_items": []}, timeout=5,
                         headers={"Authorization": f"Bearer {token}", "ChatGPT-Account-Id": client.auth.account_id() or ""})
    assert resp.status_code == 400 and "new_task" in resp.json()["detail"]


def test_codex_poll_budget_is_policed_by_the_simulator(real_time_sim: Simulator, isolated_env: Path) -> None:
    sim = real_time_sim
    settings = sim_settings(sim, isolated_env)
    client = make_codex(ClientContext(settings=settings, clock=RealClock(), secrets=SecretRegistry()))
    env_id = client.resolve_environment("memory-extension").id
    task_id = client.create_task("Project: d\nComponent: A", environment_id=env_id)
    token = client.auth.token()
    headers = {"Authorization": f"Bearer {token}", "ChatGPT-Account-Id": client.auth.account_id() or ""}
    codes = [requests.get(f"{sim.base_url('codex')}/wham/tasks/{task_id}", headers=headers, timeout=5).status_code
             for _ in range(8)]
    assert codes == [200] * 5 + [429] * 3  # burst of 5, then 30 per minute
    limited = requests.get(f"{sim.base_url('codex')}/wham/tasks/{task_id}", headers=headers, timeout=5)
    # The shape users captured (codex.md section 8, badlogic/pi-mono issue 4172): no Retry-After.
    error = limited.json()["error"]
    assert error["type"] == "usage_limit_reached" and error["message"] == "The usage limit has been reached"
    assert {"plan_type", "resets_at", "eligible_promo", "resets_in_seconds"} <= set(error)
    assert "Retry-After" not in limited.headers and "retry-after-ms" not in limited.headers
    assert 0 < int(limited.headers["X-Codex-Primary-Reset-After-Seconds"]) <= 2  # whole seconds in real time
    assert limited.headers["X-Codex-Primary-Used-Percent"] == "100"
    assert error["resets_in_seconds"] == int(limited.headers["X-Codex-Primary-Reset-After-Seconds"])


def test_all_three_codex_path_styles_are_served(ctx: ClientContext, sim: Simulator) -> None:
    client = make_codex(ctx)
    token = client.auth.token()
    headers = {"Authorization": f"Bearer {token}", "ChatGPT-Account-Id": client.auth.account_id() or ""}
    for prefix in ("/backend-api/wham", "/backend-api/codex", "/api/codex"):
        assert requests.get(sim.url + prefix + "/environments", headers=headers, timeout=5).status_code == 200


def test_counters_endpoint_serves_json(ctx: ClientContext, sim: Simulator) -> None:
    make_gemini(ctx).generate(PROMPT, model="gemini-2.5-flash")
    data = requests.get(sim.url + "/_sim/counters", timeout=5).json()
    assert data["requests"]["gemini.generate:gemini-2.5-flash"] == 1
    assert data["peak_concurrency"] == 1 and data["rate_limited_total"] == 0


def test_scenario_api_replaces_faults(ctx: ClientContext, sim: Simulator) -> None:
    resp = requests.post(sim.url + "/_sim/scenario", timeout=5,
                         json={"faults": [{"endpoint": "gemini.generate", "at_call": 1, "responses": ["500"]}]})
    assert resp.json() == {"ok": True, "faults": 1, "tasks": 0}
    assert make_gemini(ctx).generate(PROMPT, model="gemini-2.5-flash").attempts == 2
    bad = requests.post(sim.url + "/_sim/scenario", timeout=5, json={"faults": [{"endpoint": "x", "responses": []}]})
    assert bad.status_code == 400


def test_public_api_key_mode_against_the_simulator(sim: Simulator, isolated_env: Path) -> None:
    settings = sim_settings(sim, isolated_env, gemini_api_key=sim.api_key())
    ctx = ClientContext(settings=settings, clock=RealClock(), secrets=SecretRegistry(), time_scale=FAST)
    client = make_gemini(ctx)
    assert client.config.mode == "api-key"
    assert "Research notes" in client.generate(PROMPT, model="gemini-2.5-flash").text


def test_scenario_file_loads_and_bad_ones_are_clear(tmp_path: Path) -> None:
    good = tmp_path / "s.toml"
    good.write_text('seed = 3\n[[faults]]\nendpoint = "codex.poll"\nat_call = 2\nresponses = ["503"]\n'
                    '[[tasks]]\nindex = 2\noutcome = "stuck"\n')
    config = load_scenario(good)
    assert config.seed == 3 and config.faults[0].responses == ["503"] and config.tasks[0].outcome == "stuck"
    bad = tmp_path / "bad.toml"
    bad.write_text('[[faults]]\nendpoint = "gemini.generate"\nresponses = ["418"]\n')
    with pytest.raises(ConfigError, match="faults.0.responses"):
        load_scenario(bad)


def test_retry_budget_exhausted_against_a_429_storm(isolated_env: Path) -> None:
    with Simulator(SimConfig(time_scale=FAST)) as simulator:
        settings = sim_settings(simulator, isolated_env, retry_max_attempts=3)
        simulator.set_scenario([Fault(endpoint="gemini.generate", probability=1.0, responses=["429:1s"])])
        ctx = ClientContext(settings=settings, clock=RealClock(), secrets=SecretRegistry(), time_scale=FAST,
                            limiters=None)
        with pytest.raises(RetriesExhausted, match="still rate limited after 3 attempt"):
            make_gemini(ctx).generate(PROMPT, model="gemini-2.5-flash")
        assert isinstance(ctx.limiters, RateLimiters)


def test_sim_serve_runs_standalone_and_writes_credentials(tmp_path: Path) -> None:
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-m", "sparc_cloud", "sim", "serve", "--port", "0", "--write-creds",
                             str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        url = first.split(" on ", 1)[1].split(" ", 1)[0]
        assert requests.get(url + "/_sim/health", timeout=5).json() == {"ok": True}
        assert (tmp_path / ".gemini" / "oauth_creds.json").exists() and (tmp_path / ".codex" / "auth.json").exists()
    finally:
        proc.terminate()
        proc.wait(timeout=10)


# ---------------------------------------------------------------------------------------------------------
# The simulator answers as today's clouds do (codex.md section 8, gemini.md section 6).

def _codex_headers(client: object) -> dict[str, str]:
    auth = client.auth  # type: ignore[attr-defined]
    return {"Authorization": f"Bearer {auth.token()}", "ChatGPT-Account-Id": auth.account_id() or ""}


def test_the_task_list_is_paged_filtered_and_newest_update_first(ctx: ClientContext, sim: Simulator) -> None:
    """`GET /wham/tasks/list?limit&task_filter=current&cursor&environment_id` -> `{"items": [...], "cursor"}`."""
    client = make_codex(ctx)
    env_a = client.resolve_environment("memory-extension").id
    env_b = client.resolve_environment("playground").id
    ids = [client.create_task(f"Project: d\nComponent: C{i}", environment_id=env_a, branch="main") for i in range(3)]
    client.create_task("Project: d\nComponent: other", environment_id=env_b, branch="main")
    first = client.list_tasks(limit=2, environment_id=env_a)
    assert len(first["items"]) == 2 and isinstance(first["cursor"], str)
    second = client.list_tasks(limit=2, environment_id=env_a, cursor=first["cursor"])
    assert len(second["items"]) == 1 and second["cursor"] is None
    listed = [i["id"] for i in first["items"] + second["items"]]
    assert sorted(listed) == sorted(ids)  # only the environment asked for
    item = first["items"][0]
    assert {"id", "title", "archived", "has_unread_turn", "created_at", "updated_at", "task_status_display"} <= set(item)
    latest = item["task_status_display"]["latest_turn_status_display"]
    assert latest["turn_status"] in ("pending", "in_progress", "completed") and "updated_at" in latest
    stamps = [i["updated_at"] for i in first["items"] + second["items"]]
    assert stamps == sorted(stamps, reverse=True)


def test_updated_at_moves_when_a_task_changes_and_it_rises_to_the_top(ctx: ClientContext, sim: Simulator) -> None:
    client = make_codex(ctx)
    env_id = client.resolve_environment("memory-extension").id
    early = client.create_task("Project: d\nComponent: early", environment_id=env_id, branch="main")
    late = client.create_task("Project: d\nComponent: late", environment_id=env_id, branch="main")
    before = {i["id"]: i["updated_at"] for i in client.list_tasks(environment_id=env_id)["items"]}
    client.wait(early, timeout_s=30)
    after = client.list_tasks(environment_id=env_id)["items"]
    assert after[0]["updated_at"] > before[after[0]["id"]]
    assert {i["id"] for i in after} == {early, late}


def test_list_and_details_share_the_poll_budget(real_time_sim: Simulator, isolated_env: Path) -> None:
    sim = real_time_sim
    client = make_codex(ClientContext(settings=sim_settings(sim, isolated_env), clock=RealClock(),
                                      secrets=SecretRegistry()))
    task_id = client.create_task("Project: d\nComponent: A", environment_id="env_sim_memory_extension", branch="m")
    headers = _codex_headers(client)
    codes = [requests.get(f"{sim.base_url('codex')}/wham/tasks/list", headers=headers, timeout=5).status_code
             for _ in range(3)]
    codes += [requests.get(f"{sim.base_url('codex')}/wham/tasks/{task_id}", headers=headers, timeout=5).status_code
              for _ in range(3)]
    assert codes == [200] * 5 + [429]  # burst of 5 for both together
    assert sim.counters()["rate_limited"] == {"codex:poll": 1}


def test_usage_limit_seconds_carry_decimals_under_a_compressed_time_scale(ctx: ClientContext, sim: Simulator) -> None:
    sim.set_scenario([Fault(endpoint="codex.poll", at_call=1, responses=["429:2s"])])
    client = make_codex(ctx)
    task_id = client.create_task("Project: d\nComponent: A", environment_id="env_sim_memory_extension", branch="m")
    resp = requests.get(f"{sim.base_url('codex')}/wham/tasks/{task_id}", headers=_codex_headers(client), timeout=5)
    assert resp.status_code == 429 and "Retry-After" not in resp.headers
    assert float(resp.headers["X-Codex-Primary-Reset-After-Seconds"]) == pytest.approx(2 * FAST)
    assert resp.json()["error"]["resets_in_seconds"] == pytest.approx(2 * FAST)


@pytest.mark.parametrize("fault", ["created-502", "created-reset", "created-timeout"])
def test_a_create_whose_answer_is_lost_after_the_task_exists_is_not_paid_twice(sim: Simulator, isolated_env: Path,
                                                                               fault: str) -> None:
    settings = sim_settings(sim, isolated_env, http_timeout_s=0.5)
    client = make_codex(ClientContext(settings=settings, clock=RealClock(), secrets=SecretRegistry(),
                                      time_scale=FAST))
    sim.set_scenario([Fault(endpoint="codex.create", at_call=1, responses=[fault])])
    task_id = client.create_task("Project: d\nComponent: A", environment_id="env_sim_memory_extension",
                                 branch="main", marker="run-1:p4-component-1")
    counters = sim.counters()
    assert counters["codex_tasks_created"] == 1 and counters["requests"]["codex.create"] == 1
    assert list(counters["tasks"]) == [task_id]
    result, _ = client.wait(task_id, timeout_s=30)
    assert result.status == TaskStatus.COMPLETED


def test_created_faults_are_only_for_creates() -> None:
    with pytest.raises(ValueError, match="codex.create only"):
        Fault(endpoint="codex.poll", at_call=1, responses=["created-502"])


def test_an_account_without_a_tier_is_onboarded_through_the_simulator(isolated_env: Path) -> None:
    with Simulator(SimConfig(time_scale=FAST, onboarded=False)) as simulator:
        settings = sim_settings(simulator, isolated_env, google_cloud_project="my-gcloud-project")
        ctx = ClientContext(settings=settings, clock=RealClock(), secrets=SecretRegistry(), time_scale=FAST)
        result = make_gemini(ctx).generate(PROMPT, model="gemini-2.5-flash")
        counters = simulator.counters()
    assert result.text and counters["requests"]["gemini.onboard"] == 1


def test_the_simulator_refuses_a_free_tier_onboarding_with_a_project(sim: Simulator, isolated_env: Path) -> None:
    token = json.loads(sim.write_credentials(isolated_env)["gemini"].read_text())["access_token"]
    resp = requests.post(sim.base_url("gemini") + ":onboardUser", headers={"Authorization": f"Bearer {token}"}, timeout=5,
                         json={"tierId": "free-tier", "cloudaicompanionProject": "p", "metadata": {}})
    assert resp.status_code == 400 and resp.json()["error"]["message"] == "Precondition Failed"


def test_billing_another_project_gets_service_disabled_and_the_client_never_does(sim: Simulator,
                                                                                 isolated_env: Path) -> None:
    """gemini.md section 6: what a free-tier user with GOOGLE_CLOUD_PROJECT set got on every call."""
    token = json.loads(sim.write_credentials(isolated_env)["gemini"].read_text())["access_token"]
    body = {"model": "gemini-2.5-flash", "project": "123456789",
            "request": {"contents": [{"role": "user", "parts": [{"text": "x"}]}]}}
    resp = requests.post(sim.base_url("gemini") + ":generateContent", json=body,
                         headers={"Authorization": f"Bearer {token}"}, timeout=5)
    error = resp.json()["error"]
    assert resp.status_code == 403 and error["status"] == "PERMISSION_DENIED"
    assert error["details"][0]["reason"] == "SERVICE_DISABLED" and "has not been used in project" in error["message"]
    settings = sim_settings(sim, isolated_env, google_cloud_project="my-gcloud-project")
    ctx = ClientContext(settings=settings, clock=RealClock(), secrets=SecretRegistry(), time_scale=FAST)
    assert make_gemini(ctx).generate(PROMPT, model="gemini-2.5-flash").text  # loadCodeAssist's project is billed


@pytest.mark.parametrize(("template", "heading"), [
    ("research", "# Research notes: "), ("synthesis", "# Specification: "), ("pseudocode", "# Pseudocode: "),
    ("architecture", "# Architecture: "), ("component", "# Implementation notes: "),
    ("integration", "# Implementation notes: the integration"), ("completion", "# Tests and documentation: "),
])
def test_each_phase_gets_text_of_its_own_kind(template: str, heading: str) -> None:
    """The packaged prompts mention "specification" in pseudocode, architecture and completion: not a reason to
    answer with a specification."""
    from importlib import resources
    from string import Template

    text = resources.files("sparc_cloud.prompts").joinpath(f"{template}.md").read_text(encoding="utf-8")
    prompt = Template(text).safe_substitute(project_name="demo", topic="Vectors", component_name="Core",
                                            specification="# Specification: demo\nThe specification.")
    answer = text_answer(prompt, 1)
    assert heading in answer
    assert template == "synthesis" or "# Specification" not in answer.replace("# Specification: demo\n", "")


def test_the_simulator_knows_the_environment_a_new_project_names(tmp_path: Path) -> None:
    """`init NAME` then `run --project NAME.toml --backend sim` works as `init` prints it."""
    from tests.cliutil import agents, bundle, cli

    code, output = cli("init", "my-service", "--dir", str(tmp_path))
    assert code == 0
    command = output.split("then: ", 1)[1].split()
    code, output = cli(*command[1:], "--sim-time-scale", str(FAST), "--output", str(tmp_path / "run"),
                       "--no-progress")
    assert code == 0, output
    p4 = [a for a in agents(bundle(tmp_path / "run")).values() if a["phase"] == 4]
    assert p4 and {a["environment_id"] for a in p4} == {"env_sim_my_environment"}


def test_counters_report_codex_tasks_created(ctx: ClientContext, sim: Simulator) -> None:
    client = make_codex(ctx)
    for i in range(2):
        client.create_task(f"Project: d\nComponent: {i}", environment_id="env_sim_memory_extension", branch="main")
    data = requests.get(sim.url + "/_sim/counters", timeout=5).json()
    assert data["codex_tasks_created"] == 2


def test_polling_survives_list_and_details_faults_end_to_end(ctx: ClientContext, sim: Simulator) -> None:
    sim.set_scenario([Fault(endpoint="codex.list", at_call=2, responses=["502", "truncated", "reset", "malformed"]),
                      Fault(endpoint="codex.poll", at_call=1, responses=["502", "reset", "truncated"])])
    client = make_codex(ctx)
    task_id = client.create_task("Project: d\nComponent: A", environment_id="env_sim_memory_extension", branch="m")
    result, _ = client.wait(task_id, timeout_s=30)
    faults = sim.counters()["faults"]
    assert result.status == TaskStatus.COMPLETED and result.diff
    assert faults.get("codex.list:502") == 1 and faults.get("codex.poll:502") == 1


def test_a_fresh_client_attaches_to_a_task_another_one_created(sim: Simulator, isolated_env: Path) -> None:
    """What a resumed run does with a task id from its journal: pending, running or finished, it is waited for."""
    from sparc_cloud.clients.codex import CodexClient

    def client() -> CodexClient:
        settings = sim_settings(sim, isolated_env)
        return make_codex(ClientContext(settings=settings, clock=RealClock(), secrets=SecretRegistry(),
                                        time_scale=FAST))

    first = client()
    running = first.create_task("Project: d\nComponent: A", environment_id="env_sim_memory_extension", branch="main")
    done = first.create_task("Project: d\nComponent: B", environment_id="env_sim_memory_extension", branch="main")
    first.wait(done, timeout_s=30)
    second = client()
    for task_id in (running, done):
        result, _ = second.wait(task_id, timeout_s=30, environment_id="env_sim_memory_extension")
        assert result.status == TaskStatus.COMPLETED and result.diff
    from sparc_cloud.errors import TaskGone

    with pytest.raises(TaskGone) as info:
        second.wait("task_e_" + "0" * 32, timeout_s=30)
    assert info.value.task_id == "task_e_" + "0" * 32
