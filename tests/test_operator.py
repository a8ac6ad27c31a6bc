"""Operator experience: report, doctor, codex envs, export, init, notifications, budget, review gate,
live progress."""

from __future__ import annotations

import json
import logging
import subprocess
from pathlib import Path

import pytest
import responses
from rich.console import Console

from sparc_cloud.events import Event, EventBus
from sparc_cloud.http.clock import FakeClock
from sparc_cloud.notify import Notifier, body_for, mask_url, webhook_kind
from sparc_cloud.phases import build_plan
from sparc_cloud.progress import LiveProgress
from sparc_cloud.project import load_project, load_templates
from sparc_cloud.redact import SecretRegistry
from sparc_cloud.runfolder import OUTPUT_MARKER
from sparc_cloud.sim import Simulator
from tests.cliutil import agents, bundle, cli, sim_run

SLACK = "https://hooks.slack.com/services/T000/B000/MARKERSECRETPATH"
DISCORD = "https://discord.com/api/webhooks/123/MARKERDISCORDTOKEN"
GENERIC = "https://ci.example.invalid/hooks/sparc?token=MARKERQUERY"


@pytest.fixture
def finished_run(tmp_path: Path) -> Path:
    out = tmp_path / "run"
    code, output = sim_run(out)
    assert code == 0, output
    return out


def test_report_json_has_costs_tokens_and_speedup(finished_run: Path) -> None:
    code, output = cli("report", str(finished_run), "--json")
    assert code == 0
    data = json.loads(output)
    assert [p["number"] for p in data["phases"]] == [1, 2, 3, 4, 5]
    rows = [a for p in data["phases"] for a in p["agents"]]
    assert len(rows) == 13 and all(r["status"] == "completed" for r in rows)
    synthesis = next(r for r in rows if r["id"] == "p1-synthesis")
    expected = (bundle(finished_run)["phases"][0]["agents"][4]["usage"]["prompt_tokens"] * 1.25
                + bundle(finished_run)["phases"][0]["agents"][4]["usage"]["output_tokens"] * 10.0) / 1e6
    assert synthesis["cost_usd"] == pytest.approx(expected, abs=1e-6)
    totals = data["totals"]
    assert totals["cost_usd"] == pytest.approx(sum(r["cost_usd"] for r in rows), abs=1e-5)
    assert totals["speedup"] > 1.0 and totals["sequential_estimate_s"] > totals["wall_time_s"]


def test_report_markdown_and_table(finished_run: Path) -> None:
    code, output = cli("report", str(finished_run), "--markdown")
    assert code == 0 and "| phase | agent | status |" in output and "| 4 Refinement | p4-integration | completed |" in output
    code, output = cli("report", str(finished_run))
    assert code == 0 and "Phase 1: Specification" in output and "speed-up" in output


def test_report_on_a_folder_without_bundle_exits_2(tmp_path: Path) -> None:
    code, output = cli("report", str(tmp_path))
    assert code == 2 and "No bundle" in output


def test_price_table_is_overridable(finished_run: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPARC_PRICES", json.dumps({"gemini-2.5-pro": [0, 0], "gemini-2.5-flash": [0, 0], "codex": [0, 0]}))
    data = json.loads(cli("report", str(finished_run), "--json")[1])
    assert data["totals"]["cost_usd"] == 0


def point_at(sim: Simulator, home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    paths = sim.write_credentials(home)
    client_id, secret = sim.oauth_client()
    for key, value in {
        "SPARC_GEMINI_BASE_URL": sim.base_url("gemini"), "SPARC_GEMINI_API_BASE_URL": sim.url,
        "SPARC_GEMINI_OAUTH_TOKEN_URL": sim.url + "/token", "SPARC_GEMINI_OAUTH_CLIENT_ID": client_id,
        "SPARC_GEMINI_OAUTH_CLIENT_SECRET": secret, "SPARC_CODEX_BASE_URL": sim.base_url("codex"),
        "SPARC_GEMINI_CREDS": str(paths["gemini"]), "SPARC_CODEX_AUTH": str(paths["codex"]),
    }.items():
        monkeypatch.setenv(key, value)


def test_doctor_all_good_against_the_simulator(sim: Simulator, isolated_env: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    point_at(sim, isolated_env, monkeypatch)
    code, output = cli("doctor", "--codex-env", "memory-extension")
    assert code == 0, output
    assert "Gemini project: sim-project-4242" in output
    assert "memory-extension (env_sim_memory_extension) is reachable" in output
    assert "ya29." not in output and "eyJ" not in output


def test_doctor_names_the_fix_for_each_problem(isolated_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    creds = isolated_env / ".gemini" / "oauth_creds.json"
    creds.parent.mkdir(parents=True)
    creds.write_text(json.dumps({"access_token": "ya29.MARKER", "expiry_date": 1}))
    creds.chmod(0o644)
    monkeypatch.setenv("SPARC_GEMINI_REFRESH_COMMAND", "")
    code, output = cli("doctor")
    assert code == 1
    assert "fix: chmod 600" in output and "Run `gemini` once" in output and "codex login" in output
    assert "MARKER" not in output


def test_codex_envs_lists_ids_and_names(sim: Simulator, isolated_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    point_at(sim, isolated_env, monkeypatch)
    code, output = cli("codex", "envs")
    assert code == 0 and "env_sim_memory_extension" in output and "memory-extension" in output and "pinned" in output


def test_export_applies_every_diff_and_writes_the_documents(finished_run: Path, tmp_path: Path) -> None:
    target = tmp_path / "checkout"
    target.mkdir()
    subprocess.run(["git", "init", "-q"], cwd=target, check=True)
    code, output = cli("export", str(finished_run), "--to", str(target))
    assert code == 0, output
    assert (target / "src" / "memory_extension" / "vector_storage_layer.py").exists()
    assert (target / "src" / "memory_extension" / "app.py").exists()
    assert (target / "docs" / "sparc" / "phase-1-specification" / "p1-synthesis.md").read_text().startswith("# Spec")
    assert "applied 5 diff(s)" in output


def test_export_touches_nothing_when_a_diff_does_not_apply(finished_run: Path, tmp_path: Path) -> None:
    target = tmp_path / "checkout"
    existing = target / "src" / "memory_extension" / "memory_manager.py"
    existing.parent.mkdir(parents=True)
    existing.write_text("# mine\n")
    code, output = cli("export", str(finished_run), "--to", str(target))
    assert code == 2 and "nothing was changed" in output
    assert existing.read_text() == "# mine\n"
    assert sorted(p.name for p in target.rglob("*") if p.is_file()) == ["memory_manager.py"]


def test_init_writes_a_project_that_loads_and_runs(tmp_path: Path) -> None:
    code, output = cli("init", "my-service", "--dir", str(tmp_path))
    assert code == 0, output
    path = tmp_path / "my-service.toml"
    project, _ = load_project(str(path))
    assert project.name == "my-service" and len(project.components) == 2
    assert cli("init", "my-service", "--dir", str(tmp_path))[0] == 2  # never overwrites
    code, output = sim_run(tmp_path / "run", "--codex-env", "memory-extension", project=str(path))
    assert code == 0, output


def test_webhook_formats_and_masking() -> None:
    event = Event("phase_done", phase=1, message="Specification: completed")
    assert webhook_kind(SLACK) == "slack" and body_for("slack", event, "p") == {
        "text": "sparc-cloud p: phase done: Specification: completed"}
    assert webhook_kind(DISCORD) == "discord" and "content" in body_for("discord", event, "p")
    assert webhook_kind(GENERIC) == "json" and body_for("json", event, "p")["kind"] == "phase_done"
    assert mask_url(SLACK) == "https://hooks.slack.com/***"


@responses.activate
def test_notifications_are_sent_and_a_failing_webhook_never_fails_the_run(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    responses.add_passthru("http://127.0.0.1")
    slack = responses.post(SLACK, status=200)
    responses.post(DISCORD, status=500)
    caplog.set_level(logging.WARNING)
    code, output = sim_run(tmp_path / "run", "--notify", SLACK, "--notify", DISCORD)
    assert code == 0, output
    texts = [json.loads(c.request.body or b"{}")["text"] for c in slack.calls]
    assert sum("phase done" in t for t in texts) == 5 and any("run done" in t for t in texts)
    logged = caplog.text + output + "".join(p.read_text() for p in (tmp_path / "run").glob("*.log"))
    assert "MARKERDISCORDTOKEN" not in logged and "MARKERSECRETPATH" not in logged
    assert "notification to https://discord.com/*** failed" in caplog.text


def _notify_once(url: str) -> tuple[Notifier, FakeClock]:
    clock = FakeClock()
    notifier = Notifier([url], "p", SecretRegistry(), clock=clock)
    notifier(Event("phase_done", phase=1, message="Specification: completed"))
    notifier.close()
    return notifier, clock


@responses.activate
def test_a_webhook_that_fails_for_a_moment_is_retried_and_its_retry_after_honoured() -> None:
    calls = [responses.post(SLACK, status=503), responses.post(SLACK, status=429, headers={"Retry-After": "7"}),
             responses.post(SLACK, status=200)]
    notifier, clock = _notify_once(SLACK)
    assert [c.call_count for c in calls] == [1, 1, 1]
    assert notifier.failures == 0
    assert len(clock.sleeps) == 2 and 0.6 <= clock.sleeps[0] <= 1.4 and clock.sleeps[1] >= 7.0


@responses.activate
def test_a_webhook_that_keeps_failing_is_tried_three_times_then_logged(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    failing = responses.post(SLACK, status=500)
    notifier, _ = _notify_once(SLACK)
    assert failing.call_count == 3 and notifier.failures == 1
    assert "notification to https://hooks.slack.com/*** failed" in caplog.text
    assert "MARKERSECRETPATH" not in caplog.text


@responses.activate
def test_a_webhook_that_refuses_the_post_is_not_retried() -> None:
    refused = responses.post(SLACK, status=404)
    notifier, clock = _notify_once(SLACK)
    assert refused.call_count == 1 and notifier.failures == 1 and clock.sleeps == []


def test_budget_stops_dispatching_before_crossing_it_and_the_run_resumes(tmp_path: Path) -> None:
    out = tmp_path / "run"
    code, output = sim_run(out, "--budget-usd", "0.01")
    assert code == 1 and "--budget-usd" in output and "--resume" in output
    records = agents(bundle(out))
    refused = [r for r in records.values() if (r["error"] or "").startswith("budget:")]
    assert len(refused) == 1
    data = json.loads(cli("report", str(out), "--json")[1])
    assert data["totals"]["cost_usd"] <= 0.01
    code, output = sim_run(out, "--resume")
    assert code == 0, output


def test_pause_after_review_edit_and_continue(tmp_path: Path) -> None:
    out = tmp_path / "run"
    code, output = sim_run(out, "--pause-after", "1")
    assert code == 0 and "Paused after phase 1" in output and "--phases 2-5" in output
    assert [p["number"] for p in bundle(out)["phases"]] == [1]
    spec = out / "phase-1-specification" / "p1-synthesis.md"
    head, _ = spec.read_text(encoding="utf-8").split(OUTPUT_MARKER, 1)
    spec.write_text(head + OUTPUT_MARKER + "\n\n# Specification (edited)\n\nMUST use SQLite. 🚀\n", encoding="utf-8")
    code, output = sim_run(out, "--phases", "2-5")
    assert code == 0, output
    assert "using your edited output of p1-synthesis" in output
    records = agents(bundle(out))
    assert records["p1-synthesis"]["edited"] is True and records["p1-synthesis"]["edited_hash"].startswith("sha256:")
    assert records["p1-synthesis"]["output_text"] == "# Specification (edited)\n\nMUST use SQLite. 🚀\n"
    assert all(p["stale"] is False for p in bundle(out)["phases"])
    assert records["p1-research-1"]["edited"] is False


def test_live_progress_shows_rows_by_phase_and_why_an_agent_waits() -> None:
    project, _ = load_project("memory-extension")
    plan = build_plan(project, load_templates(project))
    console = Console(record=True, width=160, color_system=None)
    view = LiveProgress(plan.agents, console)
    bus = EventBus(SecretRegistry())
    bus.add(view)
    bus.emit(Event("agent_started", "p1-research-1", 1, "gemini gemini-2.5-flash"))
    bus.emit(Event("agent_finished", "p1-research-1", 1, "", {"tokens": 1234}))
    bus.emit(Event("agent_started", "p1-synthesis", 1))
    bus.emit(Event("agent_waiting", "p1-synthesis", 1, "waiting 19.0 s for the gemini-2.5-pro generate limit "
                                                      "(3/min, burst 3)", {"wait_s": 19.0}))
    bus.emit(Event("agent_failed", "p1-research-2", 1, "HTTP 400: bad"))
    console.print(view)
    text = console.export_text()
    assert "Phase 1: Specification" in text and "Phase 5: Completion" in text
    assert "p1-research-1" in text and "completed" in text and "1,234" in text
    assert "waiting 19.0 s for the gemini-2.5-pro generate limit" in text
    assert "failed" in text and "queued" in text
