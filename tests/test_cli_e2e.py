"""End to end through the CLI against the simulator: run, rerun, resume, exit codes, run folder."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from sparc_cloud.runfolder import RunFolder
from tests.cliutil import agents, bundle, cli, scenario, sim_run


def test_full_run_writes_the_whole_run_folder(tmp_path: Path) -> None:
    out = tmp_path / "run"
    code, output = sim_run(out)
    assert code == 0, output
    data = bundle(out)
    for key in ("schema_version", "project", "run_id", "started_at", "finished_at", "backend", "phases", "totals"):
        assert key in data
    assert data["backend"] == "sim" and data["project"] == "memory-extension"
    assert [(p["number"], p["name"], p["status"], p["stale"]) for p in data["phases"]] == [
        (1, "Specification", "completed", False), (2, "Pseudocode", "completed", False),
        (3, "Architecture", "completed", False), (4, "Refinement", "completed", False),
        (5, "Completion", "completed", False)]
    records = agents(data)
    assert len(records) == 13
    iso = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
    for rec in records.values():
        for key in ("id", "phase", "backend", "model", "depends_on", "status", "output_text", "usage", "latency_s",
                    "attempts", "started_at", "finished_at", "error"):
            assert key in rec
        assert rec["status"] == "completed" and rec["error"] is None and rec["output_text"]
        assert set(rec["usage"]) == {"prompt_tokens", "output_tokens", "total_tokens"}
        assert iso.match(rec["started_at"]) and iso.match(rec["finished_at"])
    for aid in ("p4-component-1", "p4-component-2", "p4-component-3", "p4-component-4", "p4-integration"):
        assert records[aid]["task_id"].startswith("task_e_") and records[aid]["diff"].startswith("diff --git")
        assert records[aid]["worklog"]
        assert (out / "phase-4-refinement" / f"{aid}.patch").read_text() == records[aid]["diff"]
    assert data["totals"]["agents"] == {"total": 13, "completed": 13, "failed": 0, "skipped": 0}
    assert data["totals"]["tokens"]["total_tokens"] == sum(r["usage"]["total_tokens"] for r in records.values())
    assert data["totals"]["wall_time_s"] > 0
    journal = [json.loads(line) for line in (out / "journal.jsonl").read_text().splitlines()]
    assert journal[0] == {"run_id": data["run_id"], "run": {"project": "memory-extension", "project_source":
                                                           data["project_source"], "started_at": data["started_at"],
                                                           "backend": "sim"}}
    lines = [item["record"]["id"] for item in journal if "record" in item]
    assert len(lines) == 13 and set(lines) == set(records)
    started = {item["task"]["id"]: item["task"]["task_id"] for item in journal
               if "task" in item and item["task"]["event"] == "started"}
    assert started == {aid: records[aid]["task_id"] for aid in records if aid.startswith("p4-")}
    md = (out / "phase-1-specification" / "p1-research-1.md").read_text()
    assert "Research notes: MCP protocol" in md and records["p1-research-1"]["output_text"] in md
    assert (out / "phase-5-completion" / "p5-completion.md").exists()
    assert "p5-completion finished" in (out / "run.log").read_text()
    kinds = {json.loads(line)["kind"] for line in (out / "events.jsonl").read_text().splitlines()}
    assert {"run_started", "agent_started", "agent_finished", "phase_done", "run_done"} <= kinds
    assert "13 completed" in output


def test_rerun_phase_4_keeps_phases_1_to_3_and_marks_5_stale(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "run"
    assert sim_run(out)[0] == 0
    before = bundle(out)
    monkeypatch.setenv("SPARC_SIM_SEED", "2")  # the rerun's code differs, so phase 5's inputs changed
    code, output = sim_run(out, "--phases", "4")
    assert code == 0, output
    after = bundle(out)
    assert after["run_id"] == before["run_id"]
    for number in (1, 2, 3):
        assert after["phases"][number - 1] == before["phases"][number - 1]
    assert after["phases"][4]["stale"] is True and after["phases"][4]["agents"] == before["phases"][4]["agents"]
    assert after["phases"][3]["stale"] is False
    new_tasks = {a["task_id"] for a in after["phases"][3]["agents"]}
    assert new_tasks.isdisjoint({a["task_id"] for a in before["phases"][3]["agents"]})
    assert [s["mode"] for s in after["sessions"]] == ["run", "rerun"]


def test_a_rerun_that_changes_nothing_marks_nothing_stale(tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert sim_run(out)[0] == 0
    assert sim_run(out, "--phases", "3")[0] == 0  # same seed: the same architecture, so 4 and 5 stay valid
    assert [p["stale"] for p in bundle(out)["phases"]] == [False] * 5


def test_rerun_without_its_prerequisites_exits_2_naming_the_phase(tmp_path: Path) -> None:
    code, output = sim_run(tmp_path / "empty", "--phases", "4")
    assert code == 2
    assert "Phase 4 needs phase 1 (specification) first" in output and "--phases 1" in output
    assert "Traceback" not in output


def test_failed_agent_skips_dependents_exit_1_then_resume_completes(tmp_path: Path) -> None:
    out = tmp_path / "run"
    failing = scenario(tmp_path, '[[tasks]]\nindex = 2\noutcome = "failed"\nerror_message = "tests did not pass"\n')
    code, output = sim_run(out, "--scenario", failing)
    assert code == 1, output
    records = agents(bundle(out))
    failed = [r for r in records.values() if r["status"] == "failed"]
    assert len(failed) == 1 and "tests did not pass" in failed[0]["error"] and failed[0]["task_id"]
    assert records["p4-integration"]["status"] == "skipped"
    assert records["p4-integration"]["error"] == f"dependency {failed[0]['id']} failed"
    assert records["p5-completion"]["status"] == "skipped"
    assert sum(r["status"] == "completed" for r in records.values()) == 10
    assert "--resume" in output

    code, output = sim_run(out, "--resume")
    assert code == 0, output
    resumed = agents(bundle(out))
    assert all(r["status"] == "completed" for r in resumed.values())
    reused = {aid for aid, r in resumed.items() if r.get("reused")}
    assert reused == {aid for aid, r in records.items() if r["status"] == "completed"}
    for aid in reused:
        assert resumed[aid]["output_text"] == records[aid]["output_text"]
    assert "10 reused" in output


def test_a_fresh_run_moves_the_previous_one_to_history(tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert sim_run(out)[0] == 0
    first_id = bundle(out)["run_id"]
    assert sim_run(out)[0] == 0
    assert (out / "history" / first_id / "bundle.json").exists()
    assert bundle(out)["run_id"] != first_id


def test_broken_project_file_exits_2_without_traceback(tmp_path: Path) -> None:
    project = tmp_path / "p.toml"
    project.write_text('name = "x"\ngoal = "g"\n[research]\ntopics = []\n', encoding="utf-8")
    code, output = cli("run", "--project", str(project), "--backend", "sim", "--output", str(tmp_path / "o"))
    assert code == 2 and str(project) in output and "research.topics" in output and "Traceback" not in output


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("{ torn", "not valid JSON"),
        ('{"some": "other tool"}', "not a sparc-cloud bundle"),
        ('{"tool": "sparc-cloud", "schema_version": 99, "run_id": "x"}', "newer than this sparc-cloud"),
    ],
)
def test_rerun_on_a_bad_bundle_exits_2_and_leaves_it_untouched(tmp_path: Path, content: str, expected: str) -> None:
    out = tmp_path / "run"
    out.mkdir()
    (out / "bundle.json").write_text(content, encoding="utf-8")
    code, output = sim_run(out, "--phases", "4")
    assert code == 2 and expected in output and "Traceback" not in output
    assert (out / "bundle.json").read_text(encoding="utf-8") == content


def test_second_run_on_the_same_folder_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "run"
    holder = RunFolder(out)
    holder.prepare()
    holder.lock()
    try:
        code, output = sim_run(out)
    finally:
        holder.close()
    assert code == 2 and "Another sparc-cloud run" in output


def test_output_folder_that_cannot_be_created_exits_2(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code, output = sim_run(blocker / "sub")
    assert code == 2 and "output folder" in output.lower()


def test_output_folder_with_a_missing_parent_exits_2(tmp_path: Path) -> None:
    code, output = sim_run(tmp_path / "no-such-dir" / "run")
    assert code == 2 and "does not exist" in output and not (tmp_path / "no-such-dir").exists()


def test_the_default_run_folder_is_created_with_its_parent(tmp_path: Path) -> None:
    code, output = cli("run", "--project", "memory-extension", "--backend", "sim", "--sim-time-scale", "0.002",
                       "--phases", "1", "--no-progress")
    assert code == 0, output
    assert (Path("sparc-runs") / "memory-extension" / "bundle.json").exists()


def test_live_backend_without_credentials_stops_before_any_call(tmp_path: Path) -> None:
    code, output = cli("run", "--project", "memory-extension", "--output", str(tmp_path / "o"), "--no-progress")
    assert code == 2
    assert "Gemini OAuth credentials not found" in output and "gemini" in output
    assert not (tmp_path / "o").exists()  # a start that failed leaves no folder behind


def test_bad_flags_and_settings_exit_2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert sim_run(tmp_path / "o", "--phases", "9")[0] == 2
    assert cli("run", "--project", "memory-extension", "--backend", "cloud")[0] == 2
    assert cli("run", "--project", "memory-extension", "--concurrency", "0", "--backend", "sim")[0] == 2
    monkeypatch.setenv("SPARC_CONCURRENCY", "many")
    code, output = cli("run", "--project", "memory-extension", "--backend", "sim")
    assert code == 2 and "SPARC_CONCURRENCY" in output


def test_no_secret_reaches_any_file_or_output(tmp_path: Path) -> None:
    out = tmp_path / "run"
    flaky = scenario(tmp_path, '[[faults]]\nendpoint = "gemini.generate"\nat_call = 2\nresponses = ["401", "429:1s"]\n')
    code, output = sim_run(out, "--scenario", flaky)
    assert code == 0, output
    texts = [output] + [p.read_text(encoding="utf-8") for p in out.rglob("*") if p.is_file()]
    for text in texts:
        assert "ya29.sim-" not in text and "1//sim-" not in text and "rt_sim_" not in text
        assert "acct-sim-" not in text and "sim-oauth-client-secret" not in text
        assert not re.search(r"eyJ[A-Za-z0-9_-]{8,}\.", text)


def test_version_projects_and_help() -> None:
    code, output = cli("--version")
    assert code == 0 and re.match(r"sparc-cloud \d+\.\d+\.\d+", output)
    code, output = cli("projects")
    assert code == 0 and output.startswith("memory-extension")
    code, output = cli("run", "--help")
    assert code == 0 and "sparc-cloud run --project memory-extension --backend sim" in output


def test_python_dash_m_entry_point() -> None:
    result = subprocess.run([sys.executable, "-m", "sparc_cloud", "--version"], capture_output=True, text=True,
                            check=False)
    assert result.returncode == 0 and result.stdout.startswith("sparc-cloud ")
