"""The fault suite (docs/RELIABILITY.md): each scenario end to end through the CLI against the simulator."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sparc_cloud.runfolder import OUTPUT_MARKER, RunFolder
from sparc_cloud.safefs import Root
from tests.cliutil import agents, bundle, journal_ids, scenario, sim_run

SRC = Path(__file__).resolve().parents[1] / "src"


def test_429_storm_longer_than_the_retry_budget_fails_one_agent_then_resume(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "run"
    monkeypatch.setenv("SPARC_RETRY_MAX_ATTEMPTS", "3")
    storm = scenario(tmp_path, '[[faults]]\nendpoint = "gemini.generate"\nmodel = "gemini-2.5-flash"\nat_call = 1\n'
                               'responses = ["429:1s", "429:1s", "429:1s"]\n')
    code, output = sim_run(out, "--scenario", storm, "--concurrency", "1")
    assert code == 1, output
    records = agents(bundle(out))
    assert records["p1-research-1"]["status"] == "failed"
    assert "still rate limited after 3 attempt" in records["p1-research-1"]["error"]
    assert all(records[f"p1-research-{i}"]["status"] == "completed" for i in (2, 3, 4))
    assert records["p1-synthesis"]["status"] == "skipped"
    code, output = sim_run(out, "--resume")
    assert code == 0, output
    resumed = agents(bundle(out))
    assert all(resumed[f"p1-research-{i}"]["reused"] for i in (2, 3, 4))
    assert not resumed["p1-research-1"]["reused"] and resumed["p1-research-1"]["status"] == "completed"


def test_daily_quota_fails_fast_with_the_quota_message(tmp_path: Path) -> None:
    out = tmp_path / "run"
    quota = scenario(tmp_path, '[[faults]]\nendpoint = "gemini.generate"\nmodel = "gemini-2.5-pro"\nat_call = 1\n'
                               'responses = ["quota-daily"]\n')
    code, output = sim_run(out, "--scenario", quota)
    assert code == 1
    synthesis = agents(bundle(out))["p1-synthesis"]
    assert synthesis["status"] == "failed" and "Individual quota reached" in synthesis["error"]
    assert "not retried" in synthesis["error"] and synthesis["latency_s"] < 1.0


def test_bursts_of_5xx_and_connection_resets_are_retried(tmp_path: Path) -> None:
    out = tmp_path / "run"
    bursts = scenario(tmp_path, '[[faults]]\nendpoint = "gemini.generate"\nat_call = 2\n'
                                'responses = ["500", "502", "503", "504", "reset"]\n'
                                '[[faults]]\nendpoint = "codex.poll"\nat_call = 3\nresponses = ["503", "reset"]\n'
                                '[[faults]]\nendpoint = "codex.create"\nat_call = 1\nresponses = ["502"]\n')
    code, output = sim_run(out, "--scenario", bursts)
    assert code == 0, output
    assert sum(a["attempts"] for a in agents(bundle(out)).values() if a["backend"] == "gemini") >= 13


@pytest.mark.parametrize("fault", ["malformed", "truncated", "empty", "error-200"])
def test_bad_bodies_are_retried_and_the_run_completes(tmp_path: Path, fault: str) -> None:
    out = tmp_path / "run"
    bad = scenario(tmp_path, f'[[faults]]\nendpoint = "gemini.generate"\nat_call = 1\nresponses = ["{fault}"]\n')
    code, output = sim_run(out, "--scenario", bad)
    assert code == 0, output


def test_a_body_malformed_twice_fails_that_agent_clearly(tmp_path: Path) -> None:
    out = tmp_path / "run"
    bad = scenario(tmp_path, '[[faults]]\nendpoint = "gemini.generate"\nmodel = "gemini-2.5-pro"\nat_call = 1\n'
                             'responses = ["truncated", "truncated"]\n')
    code, _ = sim_run(out, "--scenario", bad)
    assert code == 1
    assert "not valid JSON" in agents(bundle(out))["p1-synthesis"]["error"]


def test_token_expiry_mid_run_refreshes_and_loses_nothing(tmp_path: Path) -> None:
    out = tmp_path / "run"
    expiry = scenario(tmp_path, '[[faults]]\nendpoint = "gemini.generate"\nat_call = 3\nresponses = ["401"]\n'
                                '[[faults]]\nendpoint = "codex.poll"\nat_call = 2\nresponses = ["401"]\n')
    code, output = sim_run(out, "--scenario", expiry)
    assert code == 0, output
    assert len(journal_ids(out)) == 13


def test_refresh_impossible_names_the_login_command_and_keeps_finished_agents(tmp_path: Path) -> None:
    out = tmp_path / "run"
    broken = scenario(tmp_path, '[[faults]]\nendpoint = "gemini.generate"\nat_call = 5\nresponses = ["401"]\n'
                                '[[faults]]\nendpoint = "oauth.token"\nprobability = 1.0\nresponses = ["400"]\n')
    code, output = sim_run(out, "--scenario", broken)
    assert code == 1
    records = agents(bundle(out))
    failed = [r for r in records.values() if r["status"] == "failed"]
    assert failed and all("run `gemini`" in r["error"] for r in failed)
    finished = [r["id"] for r in records.values() if r["status"] == "completed"]
    assert len(finished) == 5 and set(finished) <= set(journal_ids(out))  # 4 research agents + synthesis


def test_codex_task_stuck_past_the_agent_timeout_and_task_in_error(tmp_path: Path) -> None:
    out = tmp_path / "run"
    tasks = scenario(tmp_path, '[[tasks]]\nindex = 1\noutcome = "stuck"\n'
                               '[[tasks]]\nindex = 2\noutcome = "failed"\nerror_message = "pytest exited 1"\n')
    code, output = sim_run(out, "--scenario", tasks, "--agent-timeout", "1000")  # 2 s at the test scale
    assert code == 1, output
    p4 = {a["id"]: a for a in bundle(out)["phases"][3]["agents"]}
    errors = [a["error"] or "" for a in p4.values()]
    stuck = next(a for a in p4.values() if "did not finish" in (a["error"] or ""))
    assert "last status: in_progress" in stuck["error"] and stuck["task_id"] in stuck["error"]
    assert any("Task failed: internal_error: pytest exited 1" in e for e in errors)
    assert sum(a["status"] == "completed" for a in p4.values()) == 2
    assert p4["p4-integration"]["status"] == "skipped"


def test_ctrl_c_mid_phase_exits_130_and_resume_does_not_redo_finished_agents(tmp_path: Path) -> None:
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "sparc_cloud", "run", "--project", "memory-extension", "--backend", "sim",
         "--sim-time-scale", "0.02", "--output", str(out), "--no-progress"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
    journal = out / "journal.jsonl"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and (not journal.exists() or len(journal_ids(out)) < 6):
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    stopped_at = time.monotonic()
    output, _ = proc.communicate(timeout=30)
    assert proc.returncode == 130, output.decode()
    assert time.monotonic() - stopped_at < 5
    finished = journal_ids(out)
    assert len(finished) >= 6 and "--resume" in output.decode()
    code, text = sim_run(out, "--resume")
    assert code == 0, text
    resumed = agents(bundle(out))
    assert {aid for aid, r in resumed.items() if r["reused"]} == set(finished)


def test_sigkill_during_bundle_writes_leaves_old_or_new_never_torn(tmp_path: Path) -> None:
    target = tmp_path / "bundle.json"
    versions = [json.dumps({"v": i, "pad": "x" * 3_000_000}) for i in range(2)]
    target.write_text(versions[0])
    code = ("import json; from pathlib import Path; from sparc_cloud.fsutil import atomic_write_text\n"
            f"p = Path({str(target)!r})\n"
            "v = [json.dumps({'v': i, 'pad': 'x' * 3_000_000}) for i in range(2)]\n"
            "i = 0\nwhile True:\n    atomic_write_text(p, v[i % 2]); i += 1\n")
    for delay in (0.15, 0.3, 0.45):
        proc = subprocess.Popen([sys.executable, "-c", code], env={**os.environ, "PYTHONPATH": str(SRC)})
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert target.read_text() in versions


def test_a_torn_last_journal_line_is_ignored_with_a_warning(tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert sim_run(out, "--phases", "1-2")[0] == 0
    run_id = bundle(out)["run_id"]
    with (out / "journal.jsonl").open("a", encoding="utf-8") as handle:
        handle.write(f'{{"run_id": "{run_id}", "record": {{"id": "p3-archi')
    code, output = sim_run(out, "--resume")
    assert code == 0, output
    assert "is damaged" in output and "ignored" in output


def test_huge_and_emoji_outputs_round_trip_into_bundle_and_markdown(tmp_path: Path) -> None:
    from sparc_cloud.sim.routing import huge_text

    huge = huge_text()

    out = tmp_path / "run"
    faults = scenario(tmp_path, '[[faults]]\nendpoint = "gemini.generate"\nmodel = "gemini-2.5-flash"\nat_call = 1\n'
                                'responses = ["huge"]\n')
    code, output = sim_run(out, "--scenario", faults, "--phases", "1", "--concurrency", "1")
    assert code == 0, output
    record = agents(bundle(out))["p1-research-1"]
    assert record["output_text"] == huge and len(huge.encode()) > 10_000_000
    markdown = (out / "phase-1-specification" / "p1-research-1.md").read_text(encoding="utf-8")
    assert markdown.split(OUTPUT_MARKER + "\n\n", 1)[1] == huge
    assert "🚀🧠💾" in json.loads((out / "journal.jsonl").read_text(encoding="utf-8").splitlines()[1])["record"]["output_text"]


def test_disk_full_mid_run_is_a_clear_error_and_the_journal_resumes(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "run"
    real = RunFolder.append_journal
    calls = {"n": 0}

    def filling_up(self: RunFolder, run_id: str, record: object) -> None:
        calls["n"] += 1
        if calls["n"] > 5:
            raise OSError(errno.ENOSPC, "No space left on device")
        real(self, run_id, record)  # type: ignore[arg-type]

    monkeypatch.setattr(RunFolder, "append_journal", filling_up)
    code, output = sim_run(out)
    assert code == 1 and "No space left on device" in output and "--resume" in output
    assert "Traceback" not in output and len(journal_ids(out)) == 5
    monkeypatch.setattr(RunFolder, "append_journal", real)
    code, output = sim_run(out, "--resume")
    assert code == 0, output
    assert "5 reused" in output


def test_read_only_output_folder_exits_2_before_any_call(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(self: Root) -> None:
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(Root, "probe", refuse)  # the writability probe (tests may run as root: no chmod)
    code, output = sim_run(tmp_path / "ro")
    assert code == 2 and "not writable" in output and "Permission denied" in output
    assert not (tmp_path / "ro" / "journal.jsonl").exists()


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("colour = 1\n", "'colour'"),
        ("", "research.topics"),
        ("[phases.deployment]\nmodel = 'x'\n", "phases.deployment"),
        ("[[components]]\nname = 'Core'\ndescription = 'twice'\n", "component names must be unique"),
        ("[prompts]\nresearch = '${nope}'\n", "unknown variable(s) nope"),
    ],
)
def test_bad_project_files_exit_2_naming_file_and_field(tmp_path: Path, body: str, expected: str) -> None:
    base = ('name = "demo"\ngoal = "g"\n[research]\ntopics = []\n' if body == "" else
            'name = "demo"\ngoal = "g"\n' + body + '[research]\ntopics = ["a"]\n')
    if body.startswith("[["):
        base = 'name = "demo"\ngoal = "g"\n[research]\ntopics = ["a"]\n[[components]]\nname = "core"\ndescription = "c"\n' + body
    elif body.startswith("[phases") or body.startswith("[prompts"):
        base = 'name = "demo"\ngoal = "g"\n[research]\ntopics = ["a"]\n[[components]]\nname = "c"\ndescription = "c"\n' + body
    path = tmp_path / "demo.toml"
    path.write_text(base, encoding="utf-8")
    code, output = sim_run(tmp_path / "o", project=str(path))
    assert code == 2 and str(path) in output and expected in output and "Traceback" not in output


def test_fail_fast_stops_at_the_first_failed_agent(tmp_path: Path) -> None:
    out = tmp_path / "run"
    bad = scenario(tmp_path, '[[faults]]\nendpoint = "gemini.generate"\nat_call = 1\nresponses = ["400"]\n')
    code, output = sim_run(out, "--scenario", bad, "--fail-fast", "--concurrency", "1")
    assert code == 1, output
    records = agents(bundle(out))
    assert records["p1-research-1"]["status"] == "failed" and "HTTP 400" in records["p1-research-1"]["error"]
    for i in (2, 3, 4):
        assert records[f"p1-research-{i}"]["status"] == "skipped"
        assert records[f"p1-research-{i}"]["error"] == "not started: --fail-fast stopped the run after p1-research-1 failed"
    assert records["p5-completion"]["status"] == "skipped"


def test_without_fail_fast_independent_agents_finish(tmp_path: Path) -> None:
    out = tmp_path / "run"
    bad = scenario(tmp_path, '[[faults]]\nendpoint = "gemini.generate"\nat_call = 1\nresponses = ["400"]\n')
    code, _ = sim_run(out, "--scenario", bad, "--concurrency", "1")
    assert code == 1
    records = agents(bundle(out))
    assert [records[f"p1-research-{i}"]["status"] for i in (1, 2, 3, 4)] == ["failed"] + ["completed"] * 3


def test_run_deadline_stops_the_run_with_exit_1(tmp_path: Path) -> None:
    out = tmp_path / "run"
    code, output = sim_run(out, "--deadline", "60")  # 60 simulated seconds: phase 1 alone needs more
    assert code == 1, output
    records = agents(bundle(out))
    assert any("deadline" in (r["error"] or "") for r in records.values())


def test_no_shell_and_no_eval_of_model_text() -> None:
    src = Path(__file__).resolve().parents[1] / "src" / "sparc_cloud"
    for path in src.rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        assert "shell=True" not in text and "eval(" not in text and "exec(" not in text, path


def test_gemini_fallback_flag_moves_pro_to_flash_on_terminal_quota(tmp_path: Path) -> None:
    out = tmp_path / "run"
    quota = scenario(tmp_path, '[[faults]]\nendpoint = "gemini.generate"\nmodel = "gemini-2.5-pro"\n'
                               'probability = 1.0\nresponses = ["quota-daily"]\n')
    code, output = sim_run(out, "--scenario", quota, "--gemini-fallback")
    assert code == 0, output
    synthesis = agents(bundle(out))["p1-synthesis"]
    assert synthesis["fallback_from"] == "gemini-2.5-pro" and synthesis["model"] == "gemini-2.5-flash"
