"""Reruns that are stopped before they run anything keep the earlier results; staleness is a fixed point.

Each test drives the CLI in-process against the simulator (tests/cliutil.py)."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path
from typing import Any

import pytest

from sparc_cloud import runner as runner_module
from tests.cliutil import agents, bundle, cli, sim_run

PROJECT = Path(__file__).resolve().parents[1] / "examples" / "memory-extension.toml"


def printed(output: str, marker: str = "") -> list[str]:
    """The last `sparc-cloud run ...` command printed (after `marker`), as CLI arguments."""
    commands = re.findall(r"`(sparc-cloud run [^`]+)`", output[output.index(marker):] if marker else output)
    assert commands, output
    return shlex.split(commands[-1])[1:]


def phase(data: dict[str, Any], number: int) -> dict[str, Any]:
    found: dict[str, Any] = next(p for p in data["phases"] if p["number"] == number)
    return found


def journal_records(out: Path) -> list[dict[str, Any]]:
    lines = (out / "journal.jsonl").read_text(encoding="utf-8").splitlines()
    return [item["record"] for item in map(json.loads, lines) if "record" in item]


def p4_files(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((out / "phase-4-refinement").iterdir()) if p.is_file()}


# ----------------------------------------------------------------------------- (4) a stopped rerun loses nothing


def test_a_rerun_stopped_by_the_budget_keeps_the_earlier_results_and_a_resume_reuses_them(tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert sim_run(out)[0] == 0
    before = bundle(out)
    files, lines = p4_files(out), len(journal_records(out))
    p4 = [a["id"] for a in phase(before, 4)["agents"]]
    assert len(p4) > 1 and all(a["status"] == "completed" for a in phase(before, 4)["agents"])

    code, output = sim_run(out, "--phases", "4", "--budget-usd", "0.0001")
    assert code == 1, output
    assert "skipped" in output and "Not rerun: " + p4[0] in output and "earlier results stay" in output
    after = bundle(out)
    assert phase(after, 4)["agents"] == phase(before, 4)["agents"]  # the very same records, diffs and all
    assert phase(after, 4)["status"] == "completed"
    assert not any(p["stale"] for p in after["phases"]), [p["stale_reason"] for p in after["phases"]]
    assert "stale" not in output.lower()
    assert p4_files(out) == files  # nothing written over the Markdown, patches and contracts
    assert len(journal_records(out)) == lines  # no skipped record shadows a finished one in the journal
    assert cli("export", str(out), "--to", str(tmp_path / "tree"))[0] == 0

    args = printed(output, "Raise --budget-usd")
    assert args[args.index("--phases") + 1] == "4" and args[-1] == "--resume"
    args[args.index("--budget-usd") + 1] = "50"
    code, output = cli(*args)
    assert code == 0, output
    resumed = agents(bundle(out))
    assert all(resumed[aid]["reused"] for aid in p4), output  # nothing bought twice
    assert f"{len(p4)} completed ({len(p4)} reused)" in output


def test_an_interrupted_rerun_keeps_the_earlier_phase_and_continues_the_same_selection(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "run"
    assert sim_run(out)[0] == 0
    before, p5 = phase(bundle(out), 4), phase(bundle(out), 5)
    real_run = runner_module.Runner.run

    def interrupted(self: runner_module.Runner) -> dict[str, Any]:
        self.cancel.set()  # a signal arrives before any agent of the rerun has finished
        return real_run(self)

    monkeypatch.setattr(runner_module.Runner, "run", interrupted)
    code, output = sim_run(out, "--phases", "4")
    assert code == 130, output
    after = phase(bundle(out), 4)
    assert after["status"] == "completed" and after["agents"] == before["agents"]
    assert "Not rerun" in output
    args = printed(output, "Continue with")
    assert args[args.index("--phases") + 1] == "4" and args[-1] == "--resume"  # (14) not phase 5 too
    monkeypatch.setattr(runner_module.Runner, "run", real_run)
    code, output = cli(*args)
    assert code == 0, output
    data = bundle(out)
    assert phase(data, 5)["agents"] == p5["agents"]  # phase 5 was not run again
    assert all(a["reused"] for a in phase(data, 4)["agents"])
    assert [s["phases"] for s in data["sessions"]][-1] == [4]


def test_a_rerun_stopped_by_fail_fast_keeps_what_it_did_not_start_and_says_what_is_stale(tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert sim_run(out)[0] == 0
    before = agents(bundle(out))
    bad = tmp_path / "bad.toml"
    bad.write_text('[[tasks]]\nindex = 1\noutcome = "failed"\nerror_message = "pytest exited 1"\n', encoding="utf-8")
    code, output = sim_run(out, "--phases", "4", "--fail-fast", "--concurrency", "1", "--scenario", str(bad))
    assert code == 1, output
    data = bundle(out)
    now = {a["id"]: a for a in phase(data, 4)["agents"]}
    failed = [aid for aid, a in now.items() if a["status"] == "failed"]
    assert len(failed) == 1, now
    kept = [aid for aid in now if aid not in failed]
    assert kept and all(now[aid] == before[aid] for aid in kept)  # not started: the earlier records stay
    assert "Not rerun: " in output and all(aid in output for aid in kept[:3])
    stale = {p["number"]: p["stale_reason"] for p in data["phases"] if p["stale"]}
    assert set(stale) == {4, 5}, stale
    assert "p4-integration was not rerun" in stale[4]
    args = printed(output, "Bring them up to date")
    assert args[args.index("--phases") + 1] == "4-5"
    code, output = sim_run(out, "--phases", "4", "--resume")
    assert code == 0, output
    resumed = agents(bundle(out))
    assert all(resumed[aid]["reused"] for aid in kept if aid != "p4-integration")
    assert resumed[failed[0]]["status"] == "completed" and not resumed[failed[0]]["reused"]


# ----------------------------------------------------------------------------- (12) staleness is a fixed point


def test_staleness_reaches_every_phase_that_reads_a_stale_one_and_one_run_fixes_it(tmp_path: Path) -> None:
    project = tmp_path / "memory-extension.toml"
    text = PROJECT.read_text(encoding="utf-8")
    project.write_text(text, encoding="utf-8")
    out = tmp_path / "run"
    assert sim_run(out, project=str(project))[0] == 0
    project.write_text(text.replace('goal = "A persistent', 'goal = "A durable'), encoding="utf-8")

    code, output = sim_run(out, "--phases", "3", project=str(project))
    assert code == 0, output
    stale = {p["number"]: p["stale_reason"] for p in bundle(out)["phases"] if p["stale"]}
    assert set(stale) == {1, 2, 3, 4, 5}, stale
    assert "it reads phase 1 (Specification), phase 2 (Pseudocode), which are stale" in stale[3]
    args = printed(output, "Bring them up to date")
    assert args[args.index("--phases") + 1] == "1-5"

    code, output = sim_run(out, "--phases", "4-5", project=str(project))
    assert code == 0, output
    stale = {p["number"]: p["stale_reason"] for p in bundle(out)["phases"] if p["stale"]}
    assert set(stale) == {1, 2, 3, 4, 5}, stale
    assert "phase 3 (Architecture)" in stale[4] and "phase 4 (Refinement)" in stale[5]
    args = printed(output, "Bring them up to date")
    assert args[args.index("--phases") + 1] == "1-5"
    code, output = cli(*args)
    assert code == 0, output
    assert not any(p["stale"] for p in bundle(out)["phases"])
    assert "Stale" not in output


def test_several_rerun_phases_were_rerun_and_a_single_phase_is_named_alone(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "run"
    assert sim_run(out)[0] == 0
    monkeypatch.setenv("SPARC_SIM_SEED", "7")  # the simulator now answers differently
    code, output = sim_run(out, "--phases", "1-4")
    assert code == 0, output
    stale = {p["number"]: p["stale_reason"] for p in bundle(out)["phases"] if p["stale"]}
    assert set(stale) == {5}, stale
    assert "were rerun with another output" in stale[5] and "was rerun" not in stale[5]
    args = printed(output, "Bring them up to date")
    assert args[args.index("--phases") + 1] == "5"


# ----------------------------------------------------------------------------- (17) one scope per number


def test_the_closing_line_says_whose_tokens_it_counts(tmp_path: Path) -> None:
    out = tmp_path / "run"
    code, output = sim_run(out)
    assert code == 0, output
    total = bundle(out)["totals"]["tokens"]["total_tokens"]
    assert f"; {total:,} tokens;" in output  # one session: one number
    code, output = sim_run(out, "--phases", "2")
    assert code == 0, output
    data = bundle(out)
    p2 = sum(a["usage"]["total_tokens"] for a in phase(data, 2)["agents"])
    assert f"{p2:,} tokens this session, {data['totals']['tokens']['total_tokens']:,} in the run" in output


# ----------------------------------------------------------------------------- (16) report/export on a journal alone


def test_report_on_a_journal_alone_says_resume_brings_the_bundle_back(tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert sim_run(out, "--phases", "1")[0] == 0
    (out / "bundle.json").unlink()
    code, output = cli("report", str(out))
    assert code != 0
    assert "--resume" in output and "journal" in output and "run all phases first" not in output
    args = printed(output)
    assert args[args.index("--output") + 1] == str(out) and args[args.index("--backend") + 1] == "sim"
    assert "--project" in args and args[-1] == "--resume"
    code, output = cli("export", str(out), "--to", str(tmp_path / "tree"))
    assert code != 0 and "--resume" in output and "run all phases first" not in output
    code, output = sim_run(out, "--phases", "1", "--resume")
    assert code == 0, output
    assert cli("report", str(out))[0] == 0
