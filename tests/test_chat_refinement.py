"""Refinement on a chat model: each component comes back as a unified diff, checked with `git apply --check`,
with one repair turn; the records carry `diff` like Codex records, so `export` works the same."""

from __future__ import annotations

import subprocess
from pathlib import Path

from sparc_cloud.backends.diffs import check_diff, extract_diff
from tests.cliutil import agents, bundle, cli, scenario, sim_run

NEW_FILE = "diff --git a/pkg/a.py b/pkg/a.py\nnew file mode 100644\n--- /dev/null\n+++ b/pkg/a.py\n@@ -0,0 +1,2 @@\n" \
           "+x = 1\n+y = 2\n"
PROJECT = '''name = "chat-refinement"
goal = "A tiny key-value store."
[research]
topics = ["Storage engines"]
[[components]]
name = "Store core"
description = "The in-memory store."
[[components]]
name = "HTTP API"
description = "The HTTP front end."
[phases.refinement]
model = "openai/coder-x"
'''


def project(tmp_path: Path) -> str:
    path = tmp_path / "chat.toml"
    path.write_text(PROJECT, encoding="utf-8")
    return str(path)


def test_a_fenced_diff_is_extracted_and_checked_against_an_empty_tree() -> None:
    answer = f"I built it.\n\n```diff\n{NEW_FILE}```\n"
    diff = extract_diff(answer)
    assert diff == NEW_FILE and check_diff(diff) is None
    assert extract_diff(NEW_FILE) == NEW_FILE
    assert extract_diff("no diff here") is None
    assert "no unified diff" in (check_diff(None) or "")
    corrupt = NEW_FILE.replace("+1,2", "+1,9")
    assert check_diff(corrupt)  # git's complaint


def test_a_base_folder_is_what_the_diff_must_apply_to(tmp_path: Path) -> None:
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "a.py").write_text("taken\n", encoding="utf-8")
    error = check_diff(NEW_FILE, tmp_path)
    assert error is not None and "already exists" in error
    assert check_diff(NEW_FILE, tmp_path / "pkg") is None  # there, pkg/a.py is new


def test_components_on_a_chat_model_carry_checked_diffs_and_export_applies_them(tmp_path: Path) -> None:
    out = tmp_path / "run"
    code, output = sim_run(out, project=project(tmp_path))
    assert code == 0, output
    records = agents(bundle(out))
    for aid in ("p4-component-1", "p4-component-2", "p4-integration"):
        rec = records[aid]
        assert rec["backend"] == "openai" and rec["model"] == "coder-x"
        assert rec["diff"].startswith("diff --git") and check_diff(rec["diff"]) is None
        assert rec["outputs"] is None and rec["attempts"] == 1
    target = tmp_path / "checkout"
    target.mkdir()
    subprocess.run(["git", "init", "-q"], cwd=target, check=True)
    code, output = cli("export", str(out), "--to", str(target))
    assert code == 0, output
    assert "applied 3 diff(s)" in output


def test_a_refused_diff_gets_one_repair_turn(tmp_path: Path) -> None:
    out = tmp_path / "run"
    faults = scenario(tmp_path, '[[faults]]\nendpoint = "openai.chat"\nmodel = "coder-x"\nat_call = 1\n'
                                'responses = ["bad-diff"]\n')
    code, output = sim_run(out, "--scenario", faults, "--concurrency", "1", project=project(tmp_path))
    assert code == 0, output
    rec = agents(bundle(out))["p4-component-1"]
    assert rec["status"] == "completed" and rec["attempts"] == 2
    first, repaired = rec["outputs"]
    assert check_diff(extract_diff(first)) is not None and check_diff(extract_diff(repaired)) is None
    assert rec["diff"] == extract_diff(repaired)


def test_a_diff_refused_twice_fails_the_agent_keeping_both_answers(tmp_path: Path) -> None:
    out = tmp_path / "run"
    faults = scenario(tmp_path, '[[faults]]\nendpoint = "openai.chat"\nmodel = "coder-x"\nat_call = 1\n'
                                'responses = ["bad-diff", "bad-diff"]\n')
    code, output = sim_run(out, "--scenario", faults, "--concurrency", "1", project=project(tmp_path))
    assert code == 1
    rec = agents(bundle(out))["p4-component-1"]
    assert rec["status"] == "failed" and "refused twice" in rec["error"]
    assert len(rec["outputs"]) == 2 and rec["diff"] is None
    assert agents(bundle(out))["p4-component-2"]["status"] == "completed"


def test_base_must_be_a_folder(tmp_path: Path) -> None:
    code, output = sim_run(tmp_path / "run", "--base", str(tmp_path / "nope"), project=project(tmp_path))
    assert code == 2 and "--base" in output and "is not a folder" in output
