"""Backends as plug-ins: names in project files, the registry, and runs that mix backends end to end."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from sparc_cloud.backends.assemble import price_table, run_limits
from sparc_cloud.backends.registry import KINDS, limit_key, load_kind, split_model
from sparc_cloud.clients import gemini_settings
from sparc_cloud.errors import ConfigError
from sparc_cloud.phases import build_plan
from sparc_cloud.project import load_project, load_templates, parse_project
from tests.cliutil import MINIMAL, agents, bundle, cli, scenario, sim_run

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
SRC = Path(__file__).resolve().parents[1] / "src" / "sparc_cloud"

def project(extra: str) -> object:
    return parse_project(MINIMAL + extra, "test.toml")


def test_backend_model_splits_at_the_first_slash() -> None:
    assert split_model("openrouter/anthropic/claude-sonnet-4") == ("openrouter", "anthropic/claude-sonnet-4")
    assert split_model("gemini-2.5-pro") == (None, "gemini-2.5-pro")
    p = parse_project(MINIMAL + '''
[backends.openrouter]
kind = "openai"
base_url = "https://openrouter.ai/api/v1"
api_key_env = "OPENROUTER_API_KEY"
[phases.architecture]
model = "openrouter/anthropic/claude-sonnet-4"
[phases.specification]
model = "gemini-2.5-flash"
synthesis_model = "openai/gpt-4.1"
''', "t.toml")
    assert (p.phases.architecture.backend, p.phases.architecture.model) == ("openrouter", "anthropic/claude-sonnet-4")
    plan = build_plan(p, load_templates(p))
    synthesis = plan.by_id["p1-synthesis"]
    assert (synthesis.backend, synthesis.model) == ("openai", "gpt-4.1")
    assert (plan.by_id["p1-research-1"].backend, plan.by_id["p1-research-1"].model) == ("gemini", "gemini-2.5-flash")


def test_a_bare_model_keeps_todays_meaning() -> None:
    p, _ = load_project(str(EXAMPLES / "memory-extension.toml"))
    plan = build_plan(p, load_templates(p))
    assert {a.backend for a in plan.agents if a.phase != 4} == {"gemini"}
    assert {(a.backend, a.model) for a in plan.agents if a.phase == 4} == {("codex", "codex")}


@pytest.mark.parametrize(("extra", "says"), [
    ('[phases.pseudocode]\nmodel = "nowhere/llama3"\n', "names backend 'nowhere', which is not known"),
    ('[phases.pseudocode]\nbackend = "ollama"\n', "add a [backends.ollama] table"),
    ('[backends.local]\nkind = "anthropic"\nbase_url = "http://localhost:1/v1"\n', "unknown kind 'anthropic'"),
    ('[backends.local]\nkind = "openai"\nbase_url = "localhost:11434"\n', "is not an http(s) URL"),
    ('[backends.local]\nkind = "openai"\nbase_url = "http://x/v1"\napi_key_env = "sk-123 abc"\n',
     "never the key itself"),
    ('[backends.codex]\nkind = "openai"\nbase_url = "http://x/v1"\n', "is the built-in codex backend"),
])
def test_bad_backend_tables_and_names_are_config_errors(extra: str, says: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(says)):
        project(extra)


def test_every_registered_kind_loads_and_says_what_it_is() -> None:
    for name in KINDS:
        kind = load_kind(name)
        assert kind.name == name and kind.summary and callable(kind.build) and callable(kind.doctor)


def test_endpoint_limits_and_prices_reach_the_run() -> None:
    p = project('''
[backends.local]
kind = "openai"
base_url = "http://localhost:11434/v1"
requests_per_minute = 30
tokens_per_minute = 20000
prices = { "llama3" = [0.5, 1.5] }
[phases.pseudocode]
model = "local/llama3"
[limits."local/llama3"]
per_minute = 12
''')
    limits = run_limits(p, ["gemini", "local"])  # type: ignore[arg-type]
    assert limits[("local", "generate", "*")].per_minute == 30
    assert limits[("local", "tokens", "*")].per_minute == 20
    assert limits[("local", "generate", "llama3")].per_minute == 12  # [limits."BACKEND/MODEL"]
    assert limits[("gemini", "generate", "gemini-2.5-pro")].per_minute == gemini_settings.PRO_LIMIT[0]
    prices = price_table(p, {})  # type: ignore[arg-type]
    assert prices["local/llama3"] == (0.5, 1.5) and "gemini-2.5-pro" in prices


def test_the_limit_key_rule_is_written_once() -> None:
    assert limit_key("codex.poll") == ("codex", "poll", "*")
    assert limit_key("gemini-2.5-pro") == ("gemini", "generate", "gemini-2.5-pro")
    assert limit_key("gemini-2.5.1-pro") == ("gemini", "generate", "gemini-2.5.1-pro")
    assert limit_key("local/llama3") == ("local", "generate", "llama3")
    for path in SRC.rglob("*.py"):
        if path.name != "registry.py":
            assert "def limit_key(" not in path.read_text(encoding="utf-8"), path


@pytest.mark.parametrize("module", ["agents.py", "runner.py", "report.py", "pipeline.py"])
def test_the_core_names_no_provider(module: str) -> None:
    text = (SRC / module).read_text(encoding="utf-8").lower()
    for provider in ("gemini", "codex", "openai"):
        assert provider not in text, f"{module} names {provider}"


def test_the_mixed_example_runs_all_five_phases_on_the_simulator(tmp_path: Path) -> None:
    out = tmp_path / "run"
    code, output = sim_run(out, project=str(EXAMPLES / "mixed.toml"))
    assert code == 0, output
    records = agents(bundle(out))
    assert len(records) == 13 and all(r["status"] == "completed" for r in records.values())
    by_backend = {r["backend"] for r in records.values()}
    assert by_backend == {"gemini", "local", "openai", "codex"}
    assert (records["p2-pseudocode"]["backend"], records["p2-pseudocode"]["model"]) == ("local", "llama3.1:8b")
    arch = records["p3-architecture"]
    assert arch["backend"] == "openai" and arch["usage"]["prompt_tokens"] > 0 and arch["request_id"].startswith(
        "chatcmpl-")
    assert arch["usage_details"] is None or isinstance(arch["usage_details"], dict)
    assert records["p4-integration"]["diff"].startswith("diff --git")
    assert "local: OpenAI-compatible chat/completions at http://127.0.0.1:" in output


@pytest.mark.parametrize("name", ["openai.toml", "ollama.toml"])
def test_the_single_backend_examples_run_on_the_simulator(tmp_path: Path, name: str) -> None:
    out = tmp_path / "run"
    code, output = sim_run(out, project=str(EXAMPLES / name))
    assert code == 0, output
    records = agents(bundle(out))
    assert all(r["status"] == "completed" for r in records.values())
    assert all(r["diff"] and r["diff"].startswith("diff --git") for r in records.values() if r["phase"] == 4)


def test_a_chat_rate_limit_is_retried_and_counted(tmp_path: Path) -> None:
    out = tmp_path / "run"
    faults = scenario(tmp_path, '[[faults]]\nendpoint = "openai.chat"\nat_call = 1\nresponses = ["429:1s"]\n')
    code, output = sim_run(out, "--scenario", faults, "--phases", "1-3", project=str(EXAMPLES / "mixed.toml"))
    assert code == 0, output
    records = agents(bundle(out))
    assert records["p2-pseudocode"]["attempts"] == 2 and records["p2-pseudocode"]["rate_limited"] == 1


def test_insufficient_quota_fails_the_agent_with_the_servers_message(tmp_path: Path) -> None:
    out = tmp_path / "run"
    faults = scenario(tmp_path, '[[faults]]\nendpoint = "openai.chat"\nat_call = 1\nresponses = ["quota-daily"]\n')
    code, output = sim_run(out, "--scenario", faults, "--phases", "1-3", project=str(EXAMPLES / "mixed.toml"))
    assert code == 1
    rec = agents(bundle(out))["p2-pseudocode"]
    assert rec["status"] == "failed" and "You exceeded your current quota" in rec["error"] and rec["attempts"] <= 1


def test_a_missing_openai_key_is_exit_2_naming_the_variable(tmp_path: Path) -> None:
    code, output = cli("run", "--project", str(EXAMPLES / "openai.toml"), "--output", str(tmp_path / "run"),
                       "--no-progress")
    assert code == 2 and "OPENAI_API_KEY" in output and "--backend sim" in output


def test_a_missing_endpoint_key_is_exit_2_naming_the_variable(tmp_path: Path) -> None:
    path = tmp_path / "p.toml"
    path.write_text(MINIMAL + '''
[backends.corp]
kind = "openai"
base_url = "http://127.0.0.1:9/v1"
api_key_env = "CORP_LLM_KEY"
[phases.specification]
model = "corp/big"
synthesis_model = "corp/big"
''', encoding="utf-8")
    code, output = cli("run", "--project", str(path), "--phases", "1", "--output", str(tmp_path / "run"),
                       "--no-progress")
    assert code == 2 and "CORP_LLM_KEY" in output and "is not set" in output


def test_an_unknown_backend_name_is_exit_2(tmp_path: Path) -> None:
    path = tmp_path / "p.toml"
    path.write_text(MINIMAL + '[phases.pseudocode]\nmodel = "nowhere/llama3"\n', encoding="utf-8")
    code, output = cli("run", "--project", str(path), "--backend", "sim", "--output", str(tmp_path / "run"))
    assert code == 2 and "nowhere" in output and "Known backends" in output


def test_the_api_key_never_reaches_the_run_folder_or_output(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                            ) -> None:
    from sparc_cloud.sim.chat import SIM_CHAT_KEY

    out = tmp_path / "run"
    code, output = sim_run(out, "--phases", "1-3", project=str(EXAMPLES / "mixed.toml"))
    assert code == 0, output
    assert SIM_CHAT_KEY not in output
    for path in out.rglob("*"):
        if path.is_file():
            assert SIM_CHAT_KEY not in path.read_text(encoding="utf-8", errors="replace"), path


def test_doctor_checks_each_backend_the_project_uses(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-MARKER-DOCTOR-0001")
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")  # nothing listens: one short attempt
    code, output = cli("doctor", "--project", str(EXAMPLES / "openai.toml"), "--json")
    data = json.loads(output)
    names = [c["name"] for c in data["checks"]]
    assert names == ["openai credentials", "openai server"]
    assert data["checks"][0]["level"] == "ok" and data["checks"][1]["level"] == "fail"
    assert "OPENAI_BASE_URL" in data["checks"][1]["fix"] and code == 1
    assert "sk-MARKER-DOCTOR-0001" not in output


def test_report_counts_tokens_and_cost_per_backend(tmp_path: Path) -> None:
    out = tmp_path / "run"
    code, output = sim_run(out, project=str(EXAMPLES / "mixed.toml"))
    assert code == 0, output
    code, output = cli("report", str(out), "--json")
    shares = json.loads(output)["totals"]["by_backend"]
    assert {name: s["agents"] for name, s in shares.items()} == {"gemini": 6, "local": 1, "openai": 1, "codex": 5}
    assert all(s["tokens"] > 0 for s in shares.values()) and shares["openai"]["cost_usd"] > 0
    code, output = cli("report", str(out))
    assert "By backend: gemini 6 agents" in output
    assert "; openai 1 agent, " in output and "; local 1 agent, " in output and "1 agents" not in output


def test_provider_tables_are_declared_by_their_providers() -> None:
    """`[gemini]` and `[codex]` are validated by the models their providers declare; any other table is an error."""
    from sparc_cloud.backends.registry_fields import ProviderTables
    from sparc_cloud.clients.codex_settings import CodexProjectTable
    from sparc_cloud.clients.gemini_settings import GeminiProjectTable

    p = project('[codex]\nenvironment = "env-1"\n[gemini]\nfallback = true\n')
    assert isinstance(p.codex, CodexProjectTable) and p.codex.environment == "env-1"  # type: ignore[attr-defined]
    assert isinstance(p.gemini, GeminiProjectTable) and p.gemini.fallback  # type: ignore[attr-defined]
    assert set(ProviderTables.model_fields) == {"codex", "gemini"}
    with pytest.raises(ConfigError, match=r"field 'codex.branches' \(line 9\) is not a known field"):
        project('[codex]\nbranches = "x"\n')
    with pytest.raises(ConfigError, match=r"field 'anthropic' \(line 8\) is not a known field"):
        project('[anthropic]\nkey = "x"\n')
