"""Nothing lost, nothing paid for twice (docs/RELIABILITY.md, "Kills, signals and resumes").

Each test drives the CLI end to end: as a subprocess that is killed or signalled at a moment chosen from the
run folder's own state (never a sleep standing in for order), against the in-process simulator or, where
Codex tasks must outlive a killed process, a simulator running in the test process (SPARC_SIM_URL)."""

from __future__ import annotations

import json
import os
import pty
import re
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from sparc_cloud.sim import SimConfig, Simulator
from tests.cliutil import agents, bundle, cli, scenario, sim_run

SRC = Path(__file__).resolve().parents[1] / "src"
SCALE = "0.02"  # slow enough that a signal lands mid-phase, fast enough for CI (a whole run takes ~7 s)


def journal(out: Path) -> list[dict[str, Any]]:
    """Every readable journal line."""
    path = out / "journal.jsonl"
    if not path.exists():
        return []
    items = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            items.append(json.loads(line))
        except ValueError:
            continue
    return items


def finished(out: Path) -> list[str]:
    """Agents with a result line in the journal, in order."""
    return [item["record"]["id"] for item in journal(out) if "record" in item]


def wait_until(condition: Callable[[], bool], proc: subprocess.Popen[bytes], what: str) -> None:
    """Poll the run folder until `condition` holds (the time limit is only a safety net)."""
    deadline = time.monotonic() + 90
    while not condition():
        if proc.poll() is not None:
            raise AssertionError(f"the run ended (exit {proc.returncode}) before {what}")
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.005)


def start(out: Path, *extra: str, env: dict[str, str] | None = None, **popen: Any) -> subprocess.Popen[bytes]:
    """`sparc-cloud run` on the simulator as a subprocess."""
    args = [sys.executable, "-m", "sparc_cloud", "run", "--project", "memory-extension", "--backend", "sim",
            "--sim-time-scale", SCALE, "--output", str(out), *extra]
    popen.setdefault("stdout", subprocess.PIPE)
    popen.setdefault("stderr", subprocess.STDOUT)
    return subprocess.Popen(args, env={**os.environ, "PYTHONPATH": str(SRC), **(env or {})}, **popen)


def printed_command(output: str) -> list[str]:
    """The last `sparc-cloud run ...` command the output tells the user to paste, as CLI arguments."""
    commands = re.findall(r"`(sparc-cloud run [^`]+)`", output)
    assert commands, output
    words = shlex.split(commands[-1])
    assert words[0] == "sparc-cloud"
    return words[1:]


# ----------------------------------------------------------------------------- 1: a kill during phase 1


def kill_phase_1_after(out: Path, agents_finished: int) -> None:
    """Start a run one agent at a time and SIGKILL it once that many agents have finished."""
    proc = start(out, "--no-progress", "--concurrency", "1")
    wait_until(lambda: len(finished(out)) >= agents_finished, proc, f"{agents_finished} agent(s) finished")
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def test_sigkill_during_phase_1_keeps_every_finished_agent_for_resume(tmp_path: Path) -> None:
    out = tmp_path / "run"
    kill_phase_1_after(out, 2)
    done = finished(out)
    assert all(aid.startswith("p1-research-") for aid in done), done  # phase 1 had not ended
    run_id = bundle(out)["run_id"]  # the bundle exists (and parses) from the first moment of a run
    code, output = sim_run(out, "--resume")
    assert code == 0, output
    resumed = agents(bundle(out))
    assert bundle(out)["run_id"] == run_id
    assert {aid for aid, r in resumed.items() if r["reused"]} == set(done)
    assert all(r["status"] == "completed" for r in resumed.values())


def test_resume_works_from_the_journal_alone(tmp_path: Path) -> None:
    out = tmp_path / "run"
    kill_phase_1_after(out, 3)
    done = finished(out)
    run_id = journal(out)[0]["run_id"]
    (out / "bundle.json").unlink()  # lost: only the journal is left
    code, output = sim_run(out, "--resume")
    assert code == 0, output
    data = bundle(out)
    assert data["run_id"] == run_id and data["project"] == "memory-extension"
    assert {aid for aid, r in agents(data).items() if r["reused"]} == set(done)


def test_a_fresh_run_moves_a_journal_only_run_into_history_under_its_id(tmp_path: Path) -> None:
    out = tmp_path / "run"
    kill_phase_1_after(out, 1)
    run_id = journal(out)[0]["run_id"]
    (out / "bundle.json").unlink()
    assert sim_run(out)[0] == 0  # a fresh run (no --resume, no --phases) starts a new run
    assert bundle(out)["run_id"] != run_id
    kept = out / "history" / run_id / "journal.jsonl"
    assert kept.exists() and finished(kept.parent)  # moved under its own id, nothing thrown away


# ----------------------------------------------------------------------------- 2: SIGTERM, SIGHUP, SIGINT


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT])
def test_stop_signals_are_handled_like_ctrl_c(tmp_path: Path, signum: signal.Signals) -> None:
    out, tmpdir = tmp_path / "run", tmp_path / "tmp"
    tmpdir.mkdir()
    proc = start(out, "--no-progress", env={"TMPDIR": str(tmpdir)})
    wait_until(lambda: len(finished(out)) >= 4, proc, "four agents finished")
    proc.send_signal(signum)
    output = proc.communicate(timeout=60)[0].decode()
    assert proc.returncode == 128 + signum, output
    assert f"Interrupted ({signum.name})" in output and "Traceback" not in output
    data = bundle(out)
    assert data["finished_at"] and data["sessions"][-1]["exit_code"] == 128 + signum
    saved = finished(out)
    assert set(saved) <= set(agents(data)) and len(saved) >= 4  # the final bundle holds every finished agent
    assert not list(tmpdir.glob("sparc-sim-creds-*"))  # the simulator's temp credentials are gone
    args = printed_command(output)
    assert args[-1] == "--resume" and "--backend" in args and "--sim-time-scale" in args
    code, text = cli(*args)
    assert code == 0, text
    assert {aid for aid, r in agents(bundle(out)).items() if r["reused"]} == set(saved)


def test_sigterm_restores_the_terminal_cursor(tmp_path: Path) -> None:
    out = tmp_path / "run"
    controller, terminal = pty.openpty()
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "sparc_cloud", "run", "--project", "memory-extension", "--backend", "sim",
         "--sim-time-scale", SCALE, "--output", str(out)],
        stdin=terminal, stdout=terminal, stderr=terminal, env={**env, "PYTHONPATH": str(SRC), "TERM": "xterm"})
    os.close(terminal)
    seen = bytearray()

    def read_some() -> None:
        import select

        while select.select([controller], [], [], 0)[0]:
            try:
                chunk = os.read(controller, 65536)
            except OSError:
                return
            if not chunk:
                return
            seen.extend(chunk)

    def progressed() -> bool:
        read_some()
        return len(finished(out)) >= 3

    wait_until(progressed, proc, "three agents finished")
    assert b"\x1b[?25l" in seen  # the live view hid the cursor
    proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 60
    while proc.poll() is None and time.monotonic() < deadline:
        read_some()
        time.sleep(0.01)
    read_some()
    os.close(controller)
    assert proc.returncode == 143
    assert seen.rfind(b"\x1b[?25h") > seen.rfind(b"\x1b[?25l")  # and showed it again before exiting


# ----------------------------------------------------------------------------- 3: Codex tasks are paid work


@pytest.fixture
def shared_sim(tmp_path: Path) -> Iterator[tuple[Simulator, dict[str, str]]]:
    """A simulator that outlives the runs it serves, and the environment that points `--backend sim` at it."""
    with Simulator(SimConfig(time_scale=float(SCALE))) as simulator:
        creds = tmp_path / "simcreds"
        simulator.write_credentials(creds)
        yield simulator, {"SPARC_SIM_URL": simulator.url, "SPARC_SIM_CREDS": str(creds)}


def creates(simulator: Simulator) -> int:
    """Codex tasks the simulator was asked to create."""
    return len(simulator.counters()["tasks"])


def started_tasks(out: Path) -> dict[str, str]:
    """Task ids journaled as started, by agent."""
    return {item["task"]["id"]: item["task"]["task_id"] for item in journal(out)
            if "task" in item and item["task"]["event"] == "started"}


def test_a_resume_re_attaches_to_codex_tasks_instead_of_buying_them_again(
        tmp_path: Path, shared_sim: tuple[Simulator, dict[str, str]], monkeypatch: pytest.MonkeyPatch) -> None:
    simulator, env = shared_sim
    out = tmp_path / "run"
    proc = start(out, "--no-progress", env=env)
    wait_until(lambda: len(started_tasks(out)) >= 4, proc, "four Codex tasks created")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = started_tasks(out)
    assert creates(simulator) == len(before)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    code, output = sim_run(out, "--resume")
    assert code == 0, output
    records = agents(bundle(out))
    assert creates(simulator) == 5  # one per phase-4 agent, across the kill and the resume
    for aid, task_id in before.items():
        assert records[aid]["task_id"] == task_id and records[aid]["status"] == "completed"


def test_twenty_kills_redo_no_finished_agent_and_buy_no_task_twice(
        tmp_path: Path, shared_sim: tuple[Simulator, dict[str, str]], monkeypatch: pytest.MonkeyPatch) -> None:
    """Kill -9 every session soon after the run folder moves on (a new journal line), then resume; at the end
    every agent has exactly one result line (none was run again after it had finished) and Codex created
    exactly one task per phase-4 agent."""
    simulator, env = shared_sim
    out = tmp_path / "run"
    kills = 0
    first = True
    while True:
        target = len(journal(out)) + 1 + kills % 3
        proc = start(out, "--no-progress", *([] if first else ["--resume"]), env=env)
        first = False
        try:
            wait_until(lambda: len(journal(out)) >= target, proc, "the journal moved on")  # noqa: B023
        except AssertionError:
            if proc.returncode == 0:
                break  # the run finished before the next kill
            raise
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        kills += 1
        json.loads((out / "bundle.json").read_text(encoding="utf-8"))  # every bundle parses
        if kills == 20:
            break
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    code, output = sim_run(out, "--resume")
    assert code == 0, output
    assert kills >= 5
    lines = finished(out)
    assert sorted(lines) == sorted(set(lines)) and len(lines) == 13, lines
    assert creates(simulator) == 5


# ----------------------------------------------------------------------------- 4: staleness is transitive


def test_staleness_is_transitive_and_says_why(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "run"
    assert sim_run(out)[0] == 0
    before = agents(bundle(out))["p2-pseudocode"]["output_text"]
    monkeypatch.setenv("SPARC_SIM_SEED", "7")  # the simulator now answers phase 2 differently
    code, output = sim_run(out, "--phases", "2")
    assert code == 0, output
    data = bundle(out)
    assert agents(data)["p2-pseudocode"]["output_text"] != before
    stale = {p["number"]: p["stale_reason"] for p in data["phases"] if p["stale"]}
    assert set(stale) == {3, 4, 5}
    assert "phase 2 (Pseudocode) was rerun" in stale[3]
    assert "phase 3 (Architecture)" in stale[5] and "stale" in stale[5]
    assert "Stale: phase 3" in output and "--phases 3-5" in output
    report = json.loads(cli("report", str(out), "--json")[1])
    assert {p["number"]: p["stale_reason"] for p in report["phases"] if p["stale"]} == stale
    assert "is stale: it reads" in cli("report", str(out), "--markdown")[1]
    code, output = cli(*printed_command(output))
    assert code == 0, output
    assert not any(p["stale"] for p in bundle(out)["phases"])


# ----------------------------------------------------------------------------- 5: backends never mix


@pytest.mark.parametrize("how", [["--resume"], ["--phases", "2"]])
def test_live_never_builds_on_simulated_results(tmp_path: Path, how: list[str]) -> None:
    out = tmp_path / "run"
    assert sim_run(out, "--phases", "1")[0] == 0
    saved = (out / "bundle.json").read_bytes()
    code, output = cli("run", "--project", "memory-extension", "--backend", "live", "--output", str(out),
                       "--no-progress", *how)
    assert code == 2, output
    assert "on the simulator" in output and "fresh run" in output and "--output" in output
    assert (out / "bundle.json").read_bytes() == saved
    assert {a["run_backend"] for a in agents(bundle(out)).values()} == {"sim"}


# ----------------------------------------------------------------------------- 6: continue lines


def test_every_continue_line_is_runnable_as_printed(tmp_path: Path) -> None:
    out = tmp_path / "run"
    slow = scenario(tmp_path, '[[faults]]\nendpoint = "gemini.generate"\nmodel = "gemini-2.5-pro"\nat_call = 1\n'
                              'responses = ["quota-daily"]\n')
    code, output = sim_run(out, "--scenario", slow, "--pause-after", "1")
    assert code == 1, output  # the synthesis failed on its daily quota
    args = printed_command(output)
    assert args[args.index("--scenario") + 1] == slow and args[args.index("--backend") + 1] == "sim"
    assert args[args.index("--sim-time-scale") + 1] == "0.002" and args[-1] == "--resume"
    code, output = cli(*args)  # the scenario's fault hits call 1 again in a fresh simulator: still failing
    assert code == 1 and "--scenario" in printed_command(output)

    out2 = tmp_path / "paused"
    code, output = sim_run(out2, "--pause-after", "2", "--codex-env", "memory-extension")
    assert code == 0, output
    args = printed_command(output)
    assert args[args.index("--phases") + 1] == "3-5" and "--environment" in args and "--resume" not in args
    code, output = cli(*args)
    assert code == 0, output
    assert all(p["status"] == "completed" for p in bundle(out2)["phases"])

    out3 = tmp_path / "empty"
    code, output = sim_run(out3, "--phases", "3")
    assert code == 2 and "needs phase 1" in output
    code, output = cli(*printed_command(output))
    assert code == 0, output
    assert [p["number"] for p in bundle(out3)["phases"]] == [1, 2, 3]


def test_budget_continue_line_keeps_the_simulator(tmp_path: Path) -> None:
    out = tmp_path / "run"
    code, output = sim_run(out, "--budget-usd", "0.01")
    assert code == 1, output
    args = printed_command(output)
    assert args[args.index("--backend") + 1] == "sim" and "--budget-usd" in args and args[-1] == "--resume"
    args[args.index("--budget-usd") + 1] = "5"
    code, output = cli(*args)
    assert code == 0, output


# ----------------------------------------------------------------------------- 7: journal growth


def test_a_resume_does_not_copy_reused_records_into_the_journal(tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert sim_run(out)[0] == 0
    size = (out / "journal.jsonl").stat().st_size
    for _ in range(3):
        code, output = sim_run(out, "--resume")
        assert code == 0 and "13 reused" in output, output
    assert (out / "journal.jsonl").stat().st_size == size
    assert len(finished(out)) == 13
    # The report still describes the session that ran the agents: its wall time, critical path and speed-up.
    report = json.loads(cli("report", str(out), "--json")[1])
    sessions = bundle(out)["sessions"]
    assert [s["ran"] for s in sessions] == [13, 0, 0, 0] and report["totals"]["sessions"] == 4
    assert report["totals"]["wall_time_s"] == sessions[0]["wall_time_s"] != sessions[-1]["wall_time_s"]
    assert report["critical_path"][-1] == "p5-completion" and report["totals"]["sequential_estimate_s"] > 0
    assert report["makespan_s"] == pytest.approx(report["totals"]["wall_time_s"], rel=1e-3)


# ----------------------------------------------------------------------------- 8: spend across sessions


def test_report_and_budget_count_every_session_of_a_run(tmp_path: Path) -> None:
    clean = tmp_path / "clean"
    assert sim_run(clean)[0] == 0
    full_cost = json.loads(cli("report", str(clean), "--json")[1])["totals"]["cost_usd"]
    assert full_cost > 0

    out = tmp_path / "run"
    assert sim_run(out, "--pause-after", "3")[0] == 0
    part = json.loads(cli("report", str(out), "--json")[1])["totals"]["cost_usd"]
    assert 0 < part < full_cost
    code, output = sim_run(out, "--resume")
    assert code == 0 and "7 reused" in output, output
    totals = json.loads(cli("report", str(out), "--json")[1])["totals"]
    # Each agent ran once, across two sessions: the run's cost is every record's, not only the second session's.
    assert totals["cost_usd"] == pytest.approx(totals["records_cost_usd"], rel=1e-6) and totals["sessions"] == 2
    assert totals["cost_usd"] == pytest.approx(full_cost, rel=0.02)  # Codex output varies with the task's marker
    assert bundle(out)["spent_usd"] == pytest.approx(totals["cost_usd"], rel=1e-4)

    # The budget covers what earlier sessions spent: with nearly all of it gone, phase 4 is not started.
    again = tmp_path / "again"
    assert sim_run(again, "--pause-after", "3")[0] == 0
    code, output = sim_run(again, "--phases", "4-5", "--budget-usd", f"{part + 0.0001:.4f}")
    assert code == 1 and "budget" in output, output
    assert all(r["status"] == "skipped" for aid, r in agents(bundle(again)).items() if aid.startswith("p5"))


def test_a_fresh_folder_whose_start_fails_is_removed_again(tmp_path: Path) -> None:
    out = tmp_path / "new"
    refused = scenario(tmp_path, '[[faults]]\nendpoint = "gemini.load"\nat_call = 1\nresponses = ["403"]\n')
    code, output = sim_run(out, "--scenario", refused, "--phases", "1")  # the pre-flight (loadCodeAssist) fails
    assert code != 0 and "403" in output, output
    assert not out.exists()  # the bundle written at the start is not left behind for a run that never ran


def test_a_doctored_run_id_in_a_journal_alone_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "run"
    kill_phase_1_after(out, 1)
    (out / "bundle.json").unlink()
    path = out / "journal.jsonl"
    lines = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    path.write_text("".join(json.dumps({**item, "run_id": "../../x"}) + "\n" for item in lines), encoding="utf-8")
    code, output = sim_run(out, "--resume")
    assert code == 2 and "journal.jsonl" in output and "../../x" in output, output
    assert not (out / "bundle.json").exists()  # nothing rebuilt around a name that would become a path
