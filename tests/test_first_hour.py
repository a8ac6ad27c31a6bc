"""A newcomer's first hour: readable anywhere, results on stdout, clear errors, the plan before the spend."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cliutil import FAST, cli, sim_run
from rich.console import Console
from test_operator import point_at

from sparc_cloud.events import Event
from sparc_cloud.phases import build_plan
from sparc_cloud.progress import LiveProgress
from sparc_cloud.project import load_project, load_templates
from sparc_cloud.sim import Simulator

SRC = Path(__file__).resolve().parents[1] / "src"


def _sparc(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """The CLI in a subprocess, stdout and stderr apart."""
    full = {**os.environ, "PYTHONPATH": str(SRC), **(env or {})}
    return subprocess.run([sys.executable, "-m", "sparc_cloud", *args], capture_output=True, text=True, env=full,
                          cwd=cwd, timeout=300, check=False)


@pytest.fixture
def finished_run(tmp_path: Path) -> Path:
    out = tmp_path / "run"
    assert sim_run(out)[0] == 0
    return out


# ---------------------------------------------------------------- report, readable anywhere


def test_report_piped_prints_every_cell_in_full(finished_run: Path) -> None:
    code, text = cli("report", str(finished_run))
    assert code == 0
    assert "…" not in text
    for cell in ("p1-research-1", "p4-component-4", "p4-integration", "gemini-2.5-flash", "gemini-2.5-pro",
                 "completed", "throttled s", "attempts"):
        assert cell in text, cell


def test_report_on_an_80_column_terminal_never_cuts_a_cell(finished_run: Path) -> None:
    result = _sparc("report", str(finished_run), env={"FORCE_COLOR": "1", "COLUMNS": "80", "TERM": "xterm"})
    assert result.returncode == 0, result.stderr
    assert "…" not in result.stdout
    assert "p1-research-1" in result.stdout and "gemini-2.5-flash" in result.stdout
    wide = _sparc("report", str(finished_run), env={"FORCE_COLOR": "1", "COLUMNS": "200", "TERM": "xterm"})
    assert "│ p1-research-1 │" in wide.stdout and "…" not in wide.stdout  # a wide terminal keeps the tables


# ---------------------------------------------------------------- the live view at 80 columns


def _progress(width: int) -> tuple[LiveProgress, io.StringIO]:
    project, _ = load_project("memory-extension")
    plan = build_plan(project, load_templates(project))
    out = io.StringIO()
    return LiveProgress(plan.agents, Console(file=out, width=width, color_system=None)), out


REASON = "waiting 41.5 s for the gemini-2.5-pro rate limit (3 requests a minute)"


def _feed(view: LiveProgress) -> None:
    for i in range(1, 5):
        view(Event("agent_started", f"p1-research-{i}", 1))
    for i in range(1, 4):
        view(Event("agent_finished", f"p1-research-{i}", 1, data={"tokens": 100, "latency_s": 1.0}))
        view.rows[f"p1-research-{i}"].elapsed = 1.0
    view(Event("agent_started", "p1-synthesis", 1))
    view(Event("agent_waiting", "p1-synthesis", 1, REASON, {"wait_s": 41.5}))
    view.spent_usd = 0.0123


def test_live_view_at_80_columns_keeps_why_waiting_and_drops_the_model_column() -> None:
    view, out = _progress(80)
    _feed(view)
    view.console.print(view)
    text = out.getvalue()
    assert REASON in " ".join(text.split()) or REASON in text
    assert max(len(line) for line in text.splitlines()) <= 80
    assert "gemini-2.5-flash" not in text.replace(REASON, "")  # the model column went first
    assert "p1-synthesis" in text and "waiting" in text

    wide, wide_out = _progress(160)
    _feed(wide)
    wide.console.print(wide)
    assert "gemini-2.5-flash" in wide_out.getvalue()


def test_live_view_footer_counts_phases_and_shows_cost_and_eta() -> None:
    view, out = _progress(80)
    _feed(view)
    footer = view.footer(now=time.monotonic())
    assert "P1 3/5" in footer and "P4 0/5" in footer and "P5 0/1" in footer
    assert "$0.0123 so far" in footer
    eta = view.eta()
    assert eta is not None and eta > 0 and f"ETA ~{eta:.0f}s" in view.footer()
    fresh, _ = _progress(80)
    assert "ETA estimating" in fresh.footer()  # nothing finished yet to estimate from


# ---------------------------------------------------------------- stdout carries results only


def test_run_json_streams_events_on_stdout_and_messages_on_stderr(tmp_path: Path) -> None:
    result = _sparc("run", "--project", "memory-extension", "--backend", "sim", "--sim-time-scale", FAST,
                    "--output", str(tmp_path / "run"), "--json")
    assert result.returncode == 0, result.stderr
    events = [json.loads(line) for line in result.stdout.splitlines()]
    kinds = [e["kind"] for e in events]
    assert kinds[0] == "run_started" and kinds[-1] == "run_done" and kinds.count("agent_finished") == 13
    assert "13 completed" in result.stderr and "p1-research-1 started" in result.stderr


def test_progress_goes_to_stderr_and_the_summary_to_stdout(tmp_path: Path) -> None:
    result = _sparc("run", "--project", "memory-extension", "--backend", "sim", "--sim-time-scale", FAST,
                    "--output", str(tmp_path / "run"), "--no-progress")
    assert result.returncode == 0, result.stderr
    assert "started" not in result.stdout and "p1-research-1 started" in result.stderr
    assert result.stdout.startswith("13 completed")


def test_doctor_projects_and_codex_envs_speak_json(sim: Simulator, isolated_env: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    code, text = cli("projects", "--json")
    assert code == 0 and any(p["name"] == "memory-extension" for p in json.loads(text))
    code, text = cli("doctor", "--json")
    data = json.loads(text)
    assert code == 1 and data["ok"] is False
    assert {"name", "level", "detail", "fix"} <= set(data["checks"][0]) and any(c["level"] == "fail" for c in data["checks"])
    point_at(sim, isolated_env, monkeypatch)
    code, text = cli("codex", "envs", "--json")
    assert code == 0
    envs = json.loads(text)
    assert any(e["id"] == "env_sim_memory_extension" and e["label"] == "memory-extension" for e in envs)


# ---------------------------------------------------------------- credentials and the default backend


def test_missing_credentials_name_both_clouds_and_suggest_sim_and_doctor(tmp_path: Path) -> None:
    code, text = cli("run", "--project", "memory-extension", "--output", str(tmp_path / "run"))
    assert code == 2
    flat = " ".join(text.split())
    assert "Gemini: not logged in" in flat and "Codex: not logged in" in flat
    assert "--backend sim" in flat and "sparc-cloud doctor" in flat and "SPARC_BACKEND=sim" in flat
    assert "Traceback" not in text


def test_sparc_backend_sets_the_default_backend(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPARC_BACKEND", "sim")
    code, text = cli("run", "--project", "memory-extension", "--sim-time-scale", FAST, "--output",
                     str(tmp_path / "run"), "--no-progress")
    assert code == 0, text
    assert json.loads((tmp_path / "run" / "bundle.json").read_text(encoding="utf-8"))["backend"] == "sim"


# ---------------------------------------------------------------- report finds the newest run


def test_report_without_a_folder_opens_the_newest_run(isolated_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    older, newer = Path("sparc-runs/older"), Path("sparc-runs/newer")
    Path("sparc-runs").mkdir()
    assert sim_run(older)[0] == 0
    assert sim_run(newer)[0] == 0
    os.utime(older / "bundle.json", (time.time() - 3600, time.time() - 3600))
    newest = json.loads((newer / "bundle.json").read_text(encoding="utf-8"))["run_id"]
    code, text = cli("report", "--json")
    assert code == 0 and json.loads(text)["run_id"] == newest
    elsewhere = isolated_env.parent / "elsewhere"
    elsewhere.mkdir()
    assert sim_run(elsewhere / "mine")[0] == 0
    monkeypatch.setenv("SPARC_OUTPUT_DIR", str(elsewhere))
    code, text = cli("report", "--json")
    assert code == 0 and json.loads(text)["run_id"] == json.loads((elsewhere / "mine" / "bundle.json").read_text())["run_id"]


def test_report_with_no_run_anywhere_says_how_to_make_one() -> None:
    code, text = cli("report")
    assert code == 2 and "No run folder under sparc-runs" in text and "--backend sim" in text


# ---------------------------------------------------------------- the plan before the spend


def test_dry_run_prints_the_plan_cost_and_time_and_spends_nothing(isolated_env: Path) -> None:
    code, text = cli("run", "--project", "memory-extension", "--dry-run")  # live backend, no credentials at all
    assert code == 0, text
    for line in ("Phase 1: Specification", "p1-research-1", "gemini-2.5-pro", "p4-integration", "codex",
                 "Limits: concurrency 16", "gemini-2.5-pro 3/min", "Estimated cost: $", "Estimated time: ~",
                 "critical path p1-research"):
        assert line in text, line
    assert not Path("sparc-runs").exists()
    code, text = cli("run", "--project", "memory-extension", "--dry-run", "--json", "--pause-after", "3")
    data = json.loads(text)
    assert code == 0 and data["phases"] == [1, 2, 3] and [a["id"] for a in data["agents"]][-1] == "p3-architecture"
    assert data["estimated_cost_usd"] > 0 and data["estimated_time_s"] > 0
    assert data["assumptions"]["components"] is None  # the project lists its components
    # what the run would refuse, the dry run refuses with the same words, and writes nothing either
    code, text = cli("run", "--project", "memory-extension", "--dry-run", "--phases", "4-5")
    assert code == 2 and "Phase 4 needs phase 1 (specification) first" in text, text
    assert not Path("sparc-runs").exists()


def test_dry_run_of_a_project_that_leaves_the_split_to_the_architecture(isolated_env: Path) -> None:
    example = Path(__file__).resolve().parent.parent / "examples" / "notes-site.toml"
    code, text = cli("run", "--project", str(example), "--dry-run")
    assert code == 0 and "the architecture decides these components at run time" in text, text
    assert "p4-assumed-component-4" in text
    data = json.loads(cli("run", "--project", str(example), "--dry-run", "--json")[1])
    phase_4 = data["order"][data["phases"].index(4)]
    assert data["assumptions"]["components"] == 4 and len(phase_4) == 5 and phase_4[-1] == "p4-integration"
    integration = next(a for a in data["agents"] if a["id"] == "p4-integration")
    assert set(phase_4[:-1]) <= set(integration["depends_on"])



def test_dry_run_of_phase_4_prices_the_components_of_the_folders_architecture(tmp_path: Path) -> None:
    example = str(Path(__file__).resolve().parent.parent / "examples" / "notes-site.toml")
    out = tmp_path / "run"
    code, output = sim_run(out, "--phases", "1-3", project=example)
    assert code == 0, output
    code, text = cli("run", "--project", example, "--output", str(out), "--phases", "4", "--dry-run", "--backend", "sim", "--json")
    data = json.loads(text)
    assert code == 0 and data["assumptions"]["architecture_from"] == str(out), text
    assert data["order"] == [["p4-publish-core", "p4-markdown-store", "p4-notes-interface", "p4-integration"]]
    code, text = cli("run", "--project", example, "--output", str(out), "--phases", "3-5", "--dry-run", "--backend", "sim")
    assert code == 0 and "priced here as 4 independent ones" in text, text  # phase 3 reruns: it decides anew
    code, text = cli("run", "--project", example, "--output", str(tmp_path / "none"), "--phases", "4", "--dry-run", "--backend", "sim")
    assert code == 2 and "needs phase 1 (specification) first" in text, text  # as the run itself would say
    assert not (tmp_path / "none").exists()
    bundle = json.loads((out / "bundle.json").read_text())
    architect = next(a for p in bundle["phases"] for a in p["agents"] if a["id"] == "p3-architecture")
    first = architect["output_json"]["components"][0]
    first["depends_on"] = [first["name"]]  # a cycle planted by hand: the run refuses it, so does the dry run
    (out / "bundle.json").write_text(json.dumps(bundle))
    before = (out / "bundle.json").read_bytes()
    code, text = cli("run", "--project", example, "--output", str(out), "--phases", "4", "--dry-run", "--backend", "sim")
    assert code == 2 and "breaks the architecture contract" in text and "depends on itself" in text, text
    assert (out / "bundle.json").read_bytes() == before


# ---------------------------------------------------------------- flags and help


def test_quiet_verbose_and_debug(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SPARC_DEBUG", raising=False)
    quiet = _sparc("-q", "run", "--project", "memory-extension", "--backend", "sim", "--sim-time-scale", FAST,
                   "--output", str(tmp_path / "q"))
    assert quiet.returncode == 0 and quiet.stderr == "" and quiet.stdout.startswith("13 completed")
    loud = _sparc("-v", "run", "--project", "memory-extension", "--backend", "sim", "--sim-time-scale", FAST,
                  "--output", str(tmp_path / "v"), "--no-progress")
    assert loud.returncode == 0 and "INFO sparc_cloud" in loud.stderr
    assert "sparc_cloud.events" not in loud.stderr  # each event once: its progress line, not a log line as well
    assert loud.stderr.count("p5-completion finished") == 1
    code, text = cli("-q", "-v", "projects")
    assert code == 2 and "contradict" in text
    code, _ = cli("--debug", "projects")
    assert code == 0 and os.environ.get("SPARC_DEBUG") == "1"


def test_a_run_keeps_the_console_log_level_and_masks_secrets_on_it(tmp_path: Path) -> None:
    import io
    import logging

    from sparc_cloud.pipeline import _logging_to
    from sparc_cloud.redact import SecretRegistry
    from sparc_cloud.runfolder import RunFolder

    logger = logging.getLogger("sparc_cloud")
    console = io.StringIO()
    handler = logging.StreamHandler(console)  # what -vv installs
    handler.setLevel(logging.DEBUG)
    logger.addHandler(handler)
    before = logger.level
    logger.setLevel(logging.DEBUG)
    secrets = SecretRegistry()
    secrets.add("tok-very-secret-value-123")
    folder = RunFolder(tmp_path / "run")
    folder.prepare()
    try:
        with _logging_to(folder, secrets):
            assert logger.level == logging.DEBUG
            logging.getLogger("sparc_cloud.test").debug("debug line")
            logging.getLogger("sparc_cloud.test").info("token tok-very-secret-value-123 seen")
        assert logger.level == logging.DEBUG
    finally:
        logger.removeHandler(handler)
        logger.setLevel(before)
    shown = console.getvalue()
    assert "debug line" in shown and "token" in shown and "tok-very-secret-value-123" not in shown
    written = (tmp_path / "run" / "run.log").read_text(encoding="utf-8")
    assert "debug line" not in written and "token" in written and "tok-very-secret-value-123" not in written


def test_help_shows_defaults_env_variables_examples_and_natural_flags() -> None:
    code, top = cli("--help")
    assert code == 0 and "Examples:" in top and "--backend sim" in top and "-q, --quiet" in top
    code, text = cli("run", "--help")
    flat = " ".join(text.split())
    assert code == 0
    for expected in ("env var: SPARC_BACKEND", "default: live", "SPARC_CONCURRENCY", "SPARC_SIM_TIME_SCALE",
                     "SPARC_AGENT_TIMEOUT_S", "--no-progress", "--dry-run", "--json", "--dashboard"):
        assert expected in flat, expected
    for unnatural in ("--no-no-progress", "--no-resume", "--no-fail-fast", "--no-dry-run", "--no-json"):
        assert unnatural not in flat, unnatural
    code, text = cli("report", "--help")
    assert "--no-markdown" not in text and "newest" in text


def test_json_with_markdown_is_an_error(finished_run: Path) -> None:
    code, text = cli("report", str(finished_run), "--json", "--markdown")
    assert code == 2 and "--json and --markdown" in text and "Traceback" not in text
