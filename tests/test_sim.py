"""The real clients over real HTTP against the simulator: every behaviour of the behaviour model."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from sparc_cloud.clients.codex import TaskStatus
from sparc_cloud.clients.factory import ClientContext, make_codex, make_gemini
from sparc_cloud.errors import ConfigError, ModelNotFound, RetriesExhausted, TaskFailed, TaskTimeout, TerminalQuota
from sparc_cloud.http.clock import RealClock
from sparc_cloud.http.ratelimit import RateLimiters
from sparc_cloud.redact import SecretRegistry
from sparc_cloud.sim import Fault, SimConfig, Simulator, TaskScript, load_scenario
from sparc_cloud.sim.content import gemini_text
from tests.conftest import FAST, sim_settings

PROMPT = "SPARC phase 1 (specification): research agent 1 of 4.\nProject: demo\nTopic: Vector databases\n"


def test_generate_returns_phase_shaped_simulated_text(ctx: ClientContext) -> None:
    result = make_gemini(ctx).generate(PROMPT, model="gemini-2.5-flash")
    assert "# Research notes: Vector databases" in result.text
    assert "Simulated output" in result.text
    assert result.usage.total_tokens == result.usage.prompt_tokens + result.usage.output_tokens > 0
    assert result.request_id and result.request_id.startswith("sim-")


def test_content_is_deterministic_for_seed_and_prompt() -> None:
    assert gemini_text(PROMPT, 7) == gemini_text(PROMPT, 7)
    assert gemini_text(PROMPT, 7) != gemini_text(PROMPT, 8)


def test_missing_or_unknown_bearer_token_gets_the_401_envelope(sim: Simulator) -> None:
    body = {"model": "gemini-2.5-flash", "project": "p", "request": {"contents": [{"role": "user", "parts": [{"text": "x"}]}]}}
    for headers in ({}, {"Authorization": "Bearer nope"}):
        resp = requests.post(sim.gemini_base_url + ":generateContent", json=body, headers=headers, timeout=5)
        assert resp.status_code == 401
        assert resp.json()["error"]["status"] == "UNAUTHENTICATED"


def test_unknown_model_gets_404_and_the_client_does_not_retry(ctx: ClientContext, sim: Simulator) -> None:
    with pytest.raises(ModelNotFound, match="models/gemini-0-nano is not found"):
        make_gemini(ctx).generate(PROMPT, model="gemini-0-nano")
    assert sim.counters()["status_sent"]["404"] == 1


def test_malformed_request_body_gets_400(sim: Simulator, isolated_env: Path) -> None:
    token = json.loads(sim.write_credentials(isolated_env)["gemini"].read_text())["access_token"]
    resp = requests.post(sim.gemini_base_url + ":generateContent", data=b"{not json",
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
    answers = [requests.post(sim.gemini_base_url + ":generateContent", json=body,
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
    assert seen == [TaskStatus.COMPLETED]  # the list sweeps watched it; one details request confirmed it
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
    resp = requests.post(sim.codex_base_url + "/wham/tasks", json={"input_items": []}, timeout=5,
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
    codes = [requests.get(f"{sim.codex_base_url}/wham/tasks/{task_id}", headers=headers, timeout=5).status_code
             for _ in range(8)]
    assert codes == [200] * 5 + [429] * 3  # burst of 5, then 30 per minute
    limited = requests.get(f"{sim.codex_base_url}/wham/tasks/{task_id}", headers=headers, timeout=5)
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
