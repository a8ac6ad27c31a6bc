"""What a user trial found: keys sent in the clear or from the wrong variable, the dry run's Limits line, the
SPARC_BACKEND error, plurals, and help and project summaries that fit the terminal."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sparc_cloud.backends.openai import EndpointConfigError, chat_config, key_name_warning
from sparc_cloud.catalog import builtin_projects, summary
from sparc_cloud.project import parse_project
from sparc_cloud.terminal import plural
from tests.cliutil import MINIMAL, cli


def _endpoint(base_url: str, key_env: str | None = "CORP_LLM_KEY", extra: str = "") -> str:
    key = f'api_key_env = "{key_env}"\n' if key_env else ""
    return MINIMAL + f'''
[backends.corp]
kind = "openai"
base_url = "{base_url}"
{key}{extra}
[phases.specification]
model = "corp/big"
synthesis_model = "corp/big"
'''


@pytest.mark.parametrize("url", ["http://10.1.2.3:8000/v1", "http://llm.example.com/v1"])
def test_a_key_is_never_sent_over_plain_http_off_this_machine(url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CORP_LLM_KEY", "sk-MARKER-PLAIN-0001")
    project = parse_project(_endpoint(url), "p.toml")
    with pytest.raises(EndpointConfigError) as caught:
        chat_config("corp", project.backends["corp"], sim_url=None, timeout_s=5)
    message = str(caught.value)
    assert "plain http://" in message and "https://" in message and "[backends.corp] base_url" in message
    assert "sk-MARKER-PLAIN-0001" not in message and "\n" not in message
    assert "https://" in caught.value.fix


@pytest.mark.parametrize(("url", "key_env"), [("http://localhost:11434/v1", "CORP_LLM_KEY"),
                                              ("http://127.0.0.1:8000/v1", "CORP_LLM_KEY"),
                                              ("https://llm.example.com/v1", "CORP_LLM_KEY"),
                                              ("http://10.1.2.3:8000/v1", None)])
def test_loopback_https_or_no_key_are_fine(url: str, key_env: str | None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CORP_LLM_KEY", "sk-MARKER-FINE-0001")
    project = parse_project(_endpoint(url, key_env), "p.toml")
    cfg = chat_config("corp", project.backends["corp"], sim_url=None, timeout_s=5)
    assert cfg.base_url == url and (cfg.api_key is not None) == (key_env is not None)


def test_openai_base_url_over_plain_http_with_the_key_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-MARKER-PLAIN-0002")
    monkeypatch.setenv("OPENAI_BASE_URL", "http://proxy.example.com/v1")
    with pytest.raises(EndpointConfigError, match="OPENAI_BASE_URL"):
        chat_config("openai", None, sim_url=None, timeout_s=5)


def test_the_refusal_is_exit_2_before_any_call(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CORP_LLM_KEY", "sk-MARKER-PLAIN-0003")
    path = tmp_path / "p.toml"
    path.write_text(_endpoint("http://10.9.9.9:8000/v1"), encoding="utf-8")
    code, output = cli("run", "--project", str(path), "--phases", "1", "--output", str(tmp_path / "run"),
                       "--no-progress")
    assert code == 2 and "plain http://" in output and "Traceback" not in output
    assert "sk-MARKER-PLAIN-0003" not in output


@pytest.mark.parametrize(("variable", "warns"), [("CORP_LLM_KEY", False), ("OPENROUTER_API_KEY", False),
                                                 ("VLLM_TOKEN", False), ("AWS_SECRET_ACCESS_KEY", True),
                                                 ("GITHUB_TOKEN", True), ("HOME", True), ("DB_PASSWORD", True)])
def test_a_key_variable_that_looks_wrong_is_warned_about(variable: str, warns: bool) -> None:
    warning = key_name_warning("corp", variable, "https://llm.example.com/v1")
    assert (warning is not None) == warns
    if warning:
        assert variable in warning and "Bearer" in warning and "https://llm.example.com/v1" in warning


def test_doctor_says_what_to_do_about_the_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "p.toml"
    path.write_text(_endpoint("http://127.0.0.1:9/v1", "AWS_SECRET_ACCESS_KEY"), encoding="utf-8")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY", raising=False)
    code, output = cli("doctor", "--project", str(path), "--json")
    checks = {c["name"]: c for c in json.loads(output)["checks"]}
    assert checks["corp credentials"]["level"] == "fail"
    assert "Export AWS_SECRET_ACCESS_KEY" in checks["corp credentials"]["fix"]
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "MARKER-NOT-AN-LLM-KEY")
    code, output = cli("doctor", "--project", str(path), "--json")
    checks = {c["name"]: c for c in json.loads(output)["checks"]}
    assert checks["corp key variable"]["level"] == "warn"
    assert "api_key_env" in checks["corp key variable"]["fix"]
    assert "MARKER-NOT-AN-LLM-KEY" not in output


def test_the_dry_run_limits_line_shows_an_endpoints_limits(tmp_path: Path) -> None:
    path = tmp_path / "p.toml"
    path.write_text(_endpoint("http://localhost:11434/v1", None,
                              "requests_per_minute = 42\ntokens_per_minute = 90000\n"), encoding="utf-8")
    code, output = cli("run", "--project", str(path), "--dry-run")
    assert code == 0, output
    limits = " ".join(output.split("Limits:", 1)[1].split("Estimated cost:", 1)[0].split())  # wrapped to the width
    assert "corp/generate/big 42/min" in limits and "corp/tokens/* 90/min" in limits
    code, output = cli("run", "--project", str(path), "--dry-run", "--json")
    data = json.loads(output)
    assert data["limits"]["corp/generate/big"]["per_minute"] == 42 and "corp/generate/*" not in data["limits"]


def test_a_bad_sparc_backend_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPARC_BACKEND", "foo")
    code, output = cli("run", "--project", "memory-extension")
    assert code == 2 and "SPARC_BACKEND='foo'" in output and "use live or sim" in output
    monkeypatch.delenv("SPARC_BACKEND")
    code, output = cli("run", "--project", "memory-extension", "--backend", "foo")
    assert code == 2 and "--backend 'foo'" in output and "SPARC_BACKEND" not in output


def test_plurals() -> None:
    assert [plural(n, "check") for n in (0, 1, 2)] == ["0 checks", "1 check", "2 checks"]


def test_top_level_help_fits_80_columns(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "80")
    code, output = cli("--help")
    assert code == 0 and "sparc-cloud run --project memory-extension --backend sim" in output
    assert max(len(line) for line in output.splitlines()) <= 80


def test_project_summaries_end_at_a_sentence(monkeypatch: pytest.MonkeyPatch) -> None:
    assert summary("# One thing: a long\n# sentence ends here. Then more.\n\nname = 'x'\n") == (
        "One thing: a long sentence ends here.")
    assert builtin_projects()["memory-extension"].endswith("served over MCP.")
    monkeypatch.setenv("COLUMNS", "70")
    code, output = cli("projects")
    assert code == 0 and "served over MCP." in output
    assert max(len(line) for line in output.splitlines()) <= 70
