"""Every setting that exists takes effect (one proof per setting), every default lives in `defaults.py`, and a
setting that cannot work stops the command at once with exit 2, naming it."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from sparc_cloud import defaults, pipeline
from sparc_cloud.backends.assemble import default_limits
from sparc_cloud.clients import codex_settings
from sparc_cloud.clients.codex import make_codex
from sparc_cloud.clients.factory import ClientContext
from sparc_cloud.clients.gemini import make_gemini
from sparc_cloud.http.clock import FakeClock
from sparc_cloud.http.retry import RetryPolicy
from sparc_cloud.redact import SecretRegistry
from sparc_cloud.settings import ALIASES, Settings, env_names
from sparc_cloud.sim import SimConfig, Simulator
from tests.cliutil import agents, bundle, cli

TINY = '''name = "tiny"
goal = "A tiny project for settings tests."
[research]
topics = ["one", "two"]
[[components]]
name = "Core"
description = "The core."
[codex]
environment = "memory-extension"
'''


@pytest.fixture
def creds(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Credential files of both clouds (from a simulator) at the default places under HOME."""
    home = Path(str(Path.home()))
    with Simulator(SimConfig(time_scale=1.0)) as sim:  # tokens that live for the real 50 minutes
        sim.write_credentials(home)
        sim.write_credentials(home / "alt")  # another pair, for the settings that point elsewhere
    yield home


def settings_from(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return Settings()


def context(settings: Settings) -> ClientContext:
    return ClientContext(settings=settings, clock=FakeClock(), secrets=SecretRegistry(), on_retry=lambda n: None)


def gemini(settings: Settings) -> Any:
    return make_gemini(context(settings))


def codex(settings: Settings) -> Any:
    return make_codex(context(settings))


def sim_run(tmp_path: Path, *extra: str, time_scale: bool = True, output: bool = True) -> tuple[int, str, Path]:
    project = tmp_path / "tiny.toml"
    project.write_text(TINY, encoding="utf-8")
    out = tmp_path / "run"
    args = ["run", "--project", str(project), "--backend", "sim", "--no-progress"]
    args += ["--sim-time-scale", "0.002"] if time_scale else []
    args += ["--output", str(out)] if output else []
    code, text = cli(*args, *extra)
    return code, text, out


class RecordingSimulator(Simulator):
    """The simulator a run starts, kept for the test to look at."""

    made: list[Simulator] = []

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        RecordingSimulator.made.append(self)


@pytest.fixture
def recorded(monkeypatch: pytest.MonkeyPatch) -> list[Simulator]:
    RecordingSimulator.made = []
    monkeypatch.setattr(pipeline, "Simulator", RecordingSimulator)
    return RecordingSimulator.made


# --------------------------------------------------------------------- client settings: one probe each

Probe = Callable[[Settings], object]
CLIENT_CASES: list[tuple[str, dict[str, str], Probe, object]] = [
    ("gemini_base_url", {"SPARC_GEMINI_BASE_URL": "https://ca.example.com/v9"}, lambda s: gemini(s).config.base_url,
     "https://ca.example.com/v9"),
    ("code_assist_endpoint", {"CODE_ASSIST_ENDPOINT": "https://ca.example.com"}, lambda s: gemini(s).config.base_url,
     "https://ca.example.com/v1internal"),
    ("code_assist_api_version", {"CODE_ASSIST_API_VERSION": "v2x"}, lambda s: gemini(s).config.base_url,
     "https://cloudcode-pa.googleapis.com/v2x"),
    ("gemini_api_base_url", {"GOOGLE_GEMINI_BASE_URL": "https://gl.example.com", "GEMINI_API_KEY": "k-123456"},
     lambda s: gemini(s).config.api_base_url, "https://gl.example.com"),
    ("gemini_api_key", {"SPARC_GEMINI_API_KEY": "k-123456"}, lambda s: gemini(s).config.mode, "api-key"),
    ("gemini_creds", {"SPARC_GEMINI_CREDS": "{home}/alt/.gemini/oauth_creds.json"},
     lambda s: str(gemini(s).oauth.path), "{home}/alt/.gemini/oauth_creds.json"),
    ("gemini_oauth_client_id", {"SPARC_GEMINI_OAUTH_CLIENT_ID": "cid.apps"}, lambda s: gemini(s).oauth.client_id,
     "cid.apps"),
    ("gemini_oauth_client_secret", {"SPARC_GEMINI_OAUTH_CLIENT_SECRET": "csecret-1"},
     lambda s: gemini(s).oauth.client_secret, "csecret-1"),
    ("gemini_oauth_token_url", {"SPARC_GEMINI_OAUTH_TOKEN_URL": "https://tok.example.com/t"},
     lambda s: gemini(s).oauth.token_url, "https://tok.example.com/t"),
    ("gemini_refresh_command", {"SPARC_GEMINI_REFRESH_COMMAND": ""}, lambda s: gemini(s).oauth.refresh_command, None),
    ("google_cloud_project", {"GOOGLE_CLOUD_PROJECT_ID": "proj-x"}, lambda s: gemini(s).config.project, "proj-x"),
    ("gemini_fallback", {"SPARC_GEMINI_FALLBACK": "true"}, lambda s: gemini(s).config.fallback,
     {"gemini-2.5-pro": "gemini-2.5-flash"}),
    ("codex_base_url", {"SPARC_CODEX_BASE_URL": "https://cx.example.com"}, lambda s: codex(s).prefix,
     "https://cx.example.com/api/codex"),
    ("codex_path_style", {"SPARC_CODEX_PATH_STYLE": "runbook"}, lambda s: codex(s).prefix,
     "https://chatgpt.com/backend-api/codex"),
    ("codex_auth", {"SPARC_CODEX_AUTH": "{home}/alt/.codex/auth.json"}, lambda s: str(codex(s).auth.path),
     "{home}/alt/.codex/auth.json"),
    ("codex_refresh", {"SPARC_CODEX_REFRESH": "true"}, lambda s: codex(s).auth.refresh_enabled, True),
    ("codex_refresh_url", {"SPARC_CODEX_REFRESH_URL": "https://auth.example.com/t"}, lambda s: codex(s).auth.refresh_url,
     "https://auth.example.com/t"),
    ("codex_oauth_client_id", {"SPARC_CODEX_OAUTH_CLIENT_ID": "app_Y"}, lambda s: codex(s).auth.client_id, "app_Y"),
    ("codex_polls_per_minute", {"SPARC_CODEX_POLLS_PER_MINUTE": "12"},
     lambda s: (c := codex(s)).limiters.limit_for(c._poll_key()).per_minute, 12.0),
    ("http_timeout_s", {"SPARC_HTTP_TIMEOUT_S": "7"}, lambda s: (gemini(s).config.timeout_s, codex(s).timeout_s),
     (7.0, 7.0)),
    ("retry_max_attempts", {"SPARC_RETRY_MAX_ATTEMPTS": "3"},
     lambda s: (gemini(s).policy.max_attempts, codex(s).policy.max_attempts), (3, 3)),
    ("retry_deadline_s", {"SPARC_RETRY_DEADLINE_S": "33"}, lambda s: gemini(s).policy.deadline_s, 33.0),
    ("retry_initial_s", {"SPARC_RETRY_INITIAL_S": "0.5"}, lambda s: codex(s).policy.initial_s, 0.5),
    ("retry_max_wait_s", {"SPARC_RETRY_MAX_WAIT_S": "44"}, lambda s: gemini(s).policy.max_wait_s, 44.0),
]


@pytest.mark.parametrize(("field", "env", "probe", "expected"), CLIENT_CASES, ids=[c[0] for c in CLIENT_CASES])
def test_each_client_setting_takes_effect(field: str, env: dict[str, str], probe: Probe, expected: object,
                                          creds: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env = {k: v.replace("{home}", str(creds)) for k, v in env.items()}
    want = expected.replace("{home}", str(creds)) if isinstance(expected, str) else expected
    assert probe(Settings()) != want  # the default differs, so what follows proves the setting
    assert probe(settings_from(env, monkeypatch)) == want


def test_the_poll_budget_setting_wins_over_the_project_limit(creds: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """It was dead: `setdefault` over a dict that already held the default."""
    from sparc_cloud.http.ratelimit import RateLimit

    ctx = context(settings_from({"SPARC_CODEX_POLLS_PER_MINUTE": "6"}, monkeypatch))
    assert ctx.limiters is not None
    ctx.limiters.limits[("codex", "poll", "*")] = RateLimit(per_minute=20, burst=4)  # the project's [limits]
    client = make_codex(ctx)
    limit = ctx.limiters.limit_for(client._poll_key())
    assert (limit.per_minute, limit.burst) == (6.0, 4)


# -------------------------------------------------------------------- run settings: one sim run each

def test_setting_codex_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPARC_CODEX_ENVIRONMENT", "playground")
    code, output, out = sim_run(tmp_path)
    assert code == 0, output
    assert {a["environment_id"] for a in agents(bundle(out)).values() if a["backend"] == "codex"} == {"env_sim_playground"}


def test_setting_codex_branch_and_the_branch_flag(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPARC_CODEX_BRANCH", "release-1")
    code, output, out = sim_run(tmp_path)
    assert code == 0, output
    assert {a["branch"] for a in agents(bundle(out)).values() if a["backend"] == "codex"} == {"release-1"}
    assert "branch release-1" in output  # the line printed before the first call
    code, output, out = sim_run(tmp_path, "--branch", "hotfix")  # the flag wins over the setting
    assert {a["branch"] for a in agents(bundle(out)).values() if a["backend"] == "codex"} == {"hotfix"}


def test_setting_agent_timeout_s(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPARC_AGENT_TIMEOUT_S", "1")  # 2 ms at the test time scale: no Codex task finishes
    code, _, out = sim_run(tmp_path)
    assert code == 1
    assert "did not finish within" in agents(bundle(out))["p4-component-1"]["error"]


def test_setting_run_deadline_s(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPARC_RUN_DEADLINE_S", "1")
    code, _, out = sim_run(tmp_path)
    assert code == 1
    assert any("run deadline" in (a["error"] or "") for a in agents(bundle(out)).values())


def test_setting_concurrency(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, recorded: list[Simulator]) -> None:
    code, _, _ = sim_run(tmp_path, "--phases", "1")
    assert code == 0 and recorded[-1].counters()["peak_concurrency"] == 2  # both research agents at once
    monkeypatch.setenv("SPARC_CONCURRENCY", "1")
    code, _, _ = sim_run(tmp_path, "--phases", "1")
    assert code == 0 and recorded[-1].counters()["peak_concurrency"] == 1


def test_setting_output_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPARC_OUTPUT_DIR", str(tmp_path / "runs-here"))
    code, output, _ = sim_run(tmp_path, output=False)
    assert code == 0, output
    assert (tmp_path / "runs-here" / "tiny" / "bundle.json").exists()


def test_setting_sim_time_scale(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, recorded: list[Simulator]) -> None:
    monkeypatch.setenv("SPARC_SIM_TIME_SCALE", "0.003")
    code, _, _ = sim_run(tmp_path, "--phases", "1", time_scale=False)
    assert code == 0 and recorded[-1].config.time_scale == 0.003


def test_setting_sim_seed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPARC_SIM_SEED", "7")
    code, _, out = sim_run(tmp_path, "--phases", "1")
    assert code == 0 and "(seed 7)" in agents(bundle(out))["p1-research-1"]["output_text"]


def test_setting_prices(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    code, _, out = sim_run(tmp_path, "--phases", "1")
    assert code == 0
    monkeypatch.setenv("SPARC_PRICES", json.dumps({"gemini-2.5-flash": [1000000, 0], "gemini-2.5-pro": [0, 0]}))
    code, text = cli("report", str(out), "--json")
    research = [a for p in json.loads(text)["phases"] for a in p["agents"] if a["id"].startswith("p1-research")]
    prompt_tokens = {a["id"]: a["usage"]["prompt_tokens"] for a in agents(bundle(out)).values()}
    assert code == 0 and all(a["cost_usd"] == prompt_tokens[a["id"]] for a in research)


def test_setting_sim_url_and_sim_creds(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """SPARC_SIM_URL points --backend sim at a simulator that is already running (re-attachment across kills is
    proved in tests/test_resume.py); it needs the credentials that simulator wrote, and must answer."""
    for name in "abc":
        (tmp_path / name).mkdir()
    with Simulator(SimConfig(time_scale=0.002)) as outside:
        monkeypatch.setenv("SPARC_SIM_URL", outside.url)
        code, output, _ = sim_run(tmp_path / "a", "--phases", "1")
        assert code == 2 and "SPARC_SIM_CREDS" in output, output
        outside.write_credentials(tmp_path / "creds")
        monkeypatch.setenv("SPARC_SIM_CREDS", str(tmp_path / "creds"))
        code, output, _ = sim_run(tmp_path / "b", "--phases", "1")
        assert code == 0, output
        assert outside.counters()["requests"].get("gemini.generate", 0) >= 2  # the run used that simulator
    code, output, _ = sim_run(tmp_path / "c", "--phases", "1")  # it has stopped: nothing answers there now
    assert code == 2 and "No sparc-cloud simulator answers at SPARC_SIM_URL" in output, output


def test_a_simulator_at_sim_url_that_stops_is_named_as_sim_url(tmp_path: Path) -> None:
    """When the simulator at SPARC_SIM_URL goes away mid-run, the error names the setting the user gave
    (SPARC_SIM_URL), not the client settings the run derived from it."""
    from sparc_cloud.errors import RetriesExhausted
    from sparc_cloud.sim.remote import remote_settings

    with Simulator(SimConfig(time_scale=0.002)) as outside:
        outside.write_credentials(tmp_path / "creds")
        base = Settings(sim_url=outside.url, sim_creds=tmp_path / "creds", retry_max_attempts=1)
        overrides, _ = remote_settings(base)
        settings = Settings.model_validate({**base.model_dump(), **overrides})
        codex_client, gemini_client = codex(settings), gemini(settings)
    for call in (lambda: codex_client.environments(refresh=True),
                 lambda: gemini_client.generate("hello", model="gemini-2.5-flash")):
        with pytest.raises(RetriesExhausted) as caught:
            call()
        assert "the address comes from SPARC_SIM_URL" in str(caught.value), caught.value
        assert str(caught.value).endswith("Check SPARC_SIM_URL (is the server running?).")


RUN_FIELDS = {"codex_environment", "codex_branch", "agent_timeout_s", "run_deadline_s", "concurrency", "output_dir",
              "sim_time_scale", "sim_seed", "prices", "sim_url", "sim_creds"}


def test_every_setting_has_its_proof_here() -> None:
    proved = {c[0] for c in CLIENT_CASES} | RUN_FIELDS
    assert set(Settings.model_fields) == proved


def test_every_default_comes_from_defaults_py() -> None:
    s = Settings()
    assert (s.retry_max_attempts, s.retry_deadline_s, s.retry_initial_s, s.retry_max_wait_s) == (
        defaults.RETRY_MAX_ATTEMPTS, defaults.RETRY_DEADLINE_S, defaults.RETRY_INITIAL_S, defaults.RETRY_MAX_WAIT_S)
    assert (s.http_timeout_s, s.agent_timeout_s, s.concurrency, s.sim_time_scale, s.sim_seed) == (
        defaults.HTTP_TIMEOUT_S, defaults.AGENT_TIMEOUT_S, defaults.CONCURRENCY, defaults.SIM_TIME_SCALE,
        defaults.SIM_SEED)
    policy = RetryPolicy()
    assert (policy.max_attempts, policy.initial_s, policy.max_backoff_s) == (
        defaults.RETRY_MAX_ATTEMPTS, defaults.RETRY_INITIAL_S, defaults.RETRY_MAX_BACKOFF_S)
    poll = default_limits()[("codex", "poll", "*")]
    assert (poll.per_minute, poll.burst) == (codex_settings.POLLS_PER_MINUTE, codex_settings.POLL_BURST)
    from sparc_cloud.sim import SimConfig

    sim_poll = SimConfig().limits["codex.poll"]
    assert (sim_poll.per_minute, sim_poll.burst) == (poll.per_minute, poll.burst)  # client and simulator agree
    # A client made without a project (doctor, `codex envs`, the benchmarks) paces itself by the same defaults.
    limiters = context(Settings()).limiters
    assert limiters is not None and limiters.limit_for(("codex", "poll", "acct-1")) == poll


# ----------------------------------------------------------------- settings that cannot work: exit 2

@pytest.mark.parametrize(("name", "value", "why"), [
    ("SPARC_GEMINI_BASE_URL", "cloudcode-pa.googleapis.com/v1internal", "not an http(s) URL"),
    ("SPARC_GEMINI_BASE_URL", "https://", "has no host"),
    ("SPARC_CODEX_BASE_URL", "https://chatgpt.com:99999/backend-api", "not a URL"),
    ("SPARC_CODEX_BASE_URL", "https://chatgpt.com:port/backend-api", "not a URL"),
    ("CODE_ASSIST_ENDPOINT", "ftp://ca.example.com", "not an http(s) URL"),
    ("GOOGLE_GEMINI_BASE_URL", "generativelanguage.googleapis.com", "not an http(s) URL"),
    ("SPARC_GEMINI_OAUTH_TOKEN_URL", "http:///token", "has no host"),
    ("SPARC_CODEX_REFRESH_URL", "auth.openai.com/oauth/token", "not an http(s) URL"),
    ("CODE_ASSIST_API_VERSION", "v1/internal", "not an API version"),
])
def test_a_url_setting_that_cannot_be_a_url_is_exit_2_naming_it(name: str, value: str, why: str,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(name, value)
    code, output = cli("doctor")
    assert code == 2
    assert f"setting {name} is invalid" in output and why in output
    assert "Traceback" not in output and len(output.strip().splitlines()) == 1


@pytest.mark.parametrize("value", ["garbage", '{"gemini-2.5-pro": 3}', '{"gemini-2.5-pro": [1, -2]}', "[1, 2]"])
def test_sparc_prices_that_cannot_be_prices_is_exit_2_naming_it(value: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPARC_PRICES", value)
    code, output = cli("report", "nowhere")
    assert code == 2 and "setting SPARC_PRICES is invalid" in output
    assert "internal error" not in output and "Traceback" not in output


def test_a_secret_setting_is_never_echoed_in_its_error() -> None:
    from pydantic import ValidationError

    from sparc_cloud.settings import describe_settings_error

    with pytest.raises(ValidationError) as info:
        Settings.model_validate({"gemini_oauth_client_secret": ["MARKER-SECRET-VALUE"]})
    message = describe_settings_error(info.value)
    assert "SPARC_GEMINI_OAUTH_CLIENT_SECRET" in message and "MARKER-SECRET-VALUE" not in message


def test_aliases_are_named_as_the_user_set_them() -> None:
    assert env_names("google_cloud_project") == ALIASES["google_cloud_project"]
    assert env_names("codex_branch") == ("SPARC_CODEX_BRANCH",)


def test_env_example_documents_every_setting() -> None:
    text = (Path(__file__).resolve().parents[1] / ".env.example").read_text(encoding="utf-8")
    missing = [f for f in Settings.model_fields if not any(name in text for name in env_names(f))]
    assert missing == []


@pytest.mark.parametrize("variable", ["SPARC_GEMINI_BASE_URL", "SPARC_CODEX_BASE_URL"])
def test_a_password_in_a_url_setting_is_a_secret_of_the_run(variable: str, monkeypatch: pytest.MonkeyPatch) -> None:
    ctx = context(settings_from({variable: "https://me:pw-Secret%2F123@proxy.example/base"}, monkeypatch))
    masked = ctx.secrets.redact("sent to https://me:pw-Secret%2F123@proxy.example/base as pw-Secret/123")
    assert "pw-Secret" not in masked and "proxy.example" in masked
