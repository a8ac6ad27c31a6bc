"""Confined and clean (docs/RELIABILITY.md, "Security" and "Bad input"): sparc-cloud never writes outside its
run folder or the export target, never through a link, never moves a user's files; export is all or
nothing; a full disk, a closed pipe or bad input is a clear message, never an internal error."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import IO, Any

import pytest
import responses

from tests.cliutil import FAST, agents, bundle, cli, journal_ids, scenario, sim_run

SRC = Path(__file__).resolve().parents[1] / "src"
PRECIOUS = "precious: must never change\n"


# ----------------------------------------------------------------------------------------------- helpers

def snapshot(top: Path) -> dict[str, str]:
    """Every entry under `top` (links not followed): files by content hash, links by target, folders."""
    seen: dict[str, str] = {}
    for folder, dirs, files in os.walk(top):
        for name in dirs + files:
            path = Path(folder) / name
            rel = str(path.relative_to(top))
            if path.is_symlink():
                seen[rel] = "link:" + os.readlink(path)
            elif path.is_dir():
                seen[rel] = "dir"
            else:
                seen[rel] = "file:" + hashlib.sha256(path.read_bytes()).hexdigest()
    return seen


def changed_outside(before: dict[str, str], after: dict[str, str], *allowed: str) -> list[str]:
    """Entries created, changed or removed anywhere but under the `allowed` relative paths."""
    diff = {k for k in before.keys() | after.keys() if before.get(k) != after.get(k)}
    return sorted(k for k in diff if not any(k == a or k.startswith(a + os.sep) for a in allowed))


def outside_tree(tmp_path: Path) -> Path:
    """A folder of someone else's: a file and a folder with a file, all of which must stay as they are."""
    outside = tmp_path / "outside"
    (outside / "dir").mkdir(parents=True)
    (outside / "file").write_text(PRECIOUS)
    (outside / "dir" / "keep").write_text(PRECIOUS)
    return outside


def plant(path: Path, target: Path) -> None:
    """Replace `path` (file or folder) with a symbolic link to `target`."""
    if path.is_dir() and not path.is_symlink():
        for inner in sorted(path.rglob("*"), reverse=True):
            inner.rmdir() if inner.is_dir() else inner.unlink()
        path.rmdir()
    elif path.exists() or path.is_symlink():
        path.unlink()
    path.symlink_to(target)


def env_for_subprocess(**extra: str) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(SRC), **extra}


def set_bundle(out: Path, change: Any) -> None:
    data = bundle(out)
    change(data)
    (out / "bundle.json").write_text(json.dumps(data), encoding="utf-8")


@pytest.fixture
def finished(tmp_path: Path) -> Path:
    out = tmp_path / "run"
    code, output = sim_run(out)
    assert code == 0, output
    return out


# ------------------------------------------------------------------------------------- 1. symbolic links

@pytest.mark.parametrize(
    ("name", "target", "mode"),
    [
        (".lock", "file", "rerun"),
        (".write-test", "file", "fresh"),
        ("run.log", "file", "rerun"),
        ("events.jsonl", "file", "rerun"),
        ("journal.jsonl", "file", "rerun"),
        ("phase-5-completion", "dir", "rerun"),
        ("phase-5-completion/p5-completion.md", "file", "rerun"),
        ("history", "dir", "fresh"),
    ],
)
def test_a_link_planted_in_the_run_folder_is_refused_and_its_target_untouched(
        finished: Path, tmp_path: Path, name: str, target: str, mode: str) -> None:
    outside = outside_tree(tmp_path)
    plant(finished / name, outside / target)
    before = snapshot(outside)
    code, output = sim_run(finished, *(["--phases", "5"] if mode == "rerun" else []))
    assert code == 2, output
    assert f"{finished / name} is a symbolic link" in output and "internal error" not in output
    assert snapshot(outside) == before


def test_no_write_follows_a_link_that_appears_mid_run(tmp_path: Path) -> None:
    """The checks at the start are not the only guard: every write opens its path without following links."""
    from sparc_cloud.safefs import Root, UnsafePath

    out = tmp_path / "run"
    root = Root(out)
    out.mkdir()
    outside = outside_tree(tmp_path)
    (out / "phase-1-specification").symlink_to(outside / "dir")
    with pytest.raises(UnsafePath, match="is a symbolic link"):
        root.atomic_write("phase-1-specification/p1-synthesis.md", "x")
    with pytest.raises(UnsafePath, match="is a symbolic link"):
        root.open_append("phase-1-specification/keep")
    (out / "run.log").symlink_to(outside / "file")
    with pytest.raises(UnsafePath, match="is a symbolic link"):
        root.open_append("run.log")
    with pytest.raises(UnsafePath, match="is a symbolic link"):
        root.atomic_write("run.log", "x")
    with pytest.raises(UnsafePath, match="is a symbolic link"):
        root.move("run.log", "history/x/run.log")
    assert (outside / "file").read_text() == PRECIOUS and sorted(os.listdir(outside / "dir")) == ["keep"]


# ------------------------------------------------------------------------------------ 2. names from disk

@pytest.mark.parametrize("run_id", ["../../victim", "ABSOLUTE/victim", "..", "a/b"])
def test_a_doctored_run_id_is_never_used_as_a_path(finished: Path, tmp_path: Path, run_id: str) -> None:
    run_id = run_id.replace("ABSOLUTE", str(tmp_path))
    set_bundle(finished, lambda d: d.update(run_id=run_id))
    before = snapshot(tmp_path)
    code, output = sim_run(finished)
    assert code == 2 and "the run id" in output and "not a plain file name" in output, output
    assert "internal error" not in output
    assert changed_outside(before, snapshot(tmp_path), "run") == []
    assert (finished / "bundle.json").exists()  # the previous run was not moved anywhere


def test_a_doctored_run_id_in_a_journal_alone_is_refused_naming_the_journal(finished: Path, tmp_path: Path) -> None:
    journal = finished / "journal.jsonl"
    lines = journal.read_text(encoding="utf-8").splitlines()
    header = json.loads(lines[0])
    header["run_id"] = "../../victim"
    journal.write_text("\n".join([json.dumps(header), *lines[1:]]) + "\n", encoding="utf-8")
    (finished / "bundle.json").unlink()
    before = snapshot(tmp_path)
    code, output = sim_run(finished)
    assert code == 2 and "the run id" in output and "journal.jsonl" in output and "bundle.json" not in output, output
    assert changed_outside(before, snapshot(tmp_path), "run") == []
    assert journal.exists()


def test_a_doctored_agent_id_is_refused_by_export_rerun_and_resume(finished: Path, tmp_path: Path) -> None:
    def doctor(data: dict[str, Any]) -> None:
        data["phases"][0]["agents"][0]["id"] = "../../../../escaped"

    set_bundle(finished, doctor)
    target = tmp_path / "target"
    before = snapshot(tmp_path)
    code, output = cli("export", str(finished), "--to", str(target))
    assert code == 2 and "the agent id '../../../../escaped'" in output, output
    assert changed_outside(before, snapshot(tmp_path)) == []
    for flags in (["--phases", "5"], ["--resume"]):
        code, output = sim_run(finished, *flags)
        assert code == 2 and "the agent id" in output and "internal error" not in output, output
    assert not list(tmp_path.rglob("escaped*"))


def test_a_doctored_journal_line_is_refused_on_resume(tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert sim_run(out, "--phases", "1-2")[0] == 0
    lines = (out / "journal.jsonl").read_text(encoding="utf-8").splitlines()
    line = next(json.loads(text) for text in lines if '"record"' in text)
    line["record"]["id"] = "/etc/sparc-escaped"
    with (out / "journal.jsonl").open("a", encoding="utf-8") as handle:
        handle.write(json.dumps(line) + "\n")
    code, output = sim_run(out, "--resume")
    assert code == 2 and f"line {len(lines) + 1} of" in output and "'/etc/sparc-escaped'" in output, output


def test_a_phase_number_out_of_range_is_exit_2_not_an_internal_error(finished: Path) -> None:
    set_bundle(finished, lambda d: d["phases"][0].update(number=9))
    code, output = sim_run(finished, "--phases", "5")
    assert code == 2 and "numbered 1 to 5" in output and "internal error" not in output, output


# ------------------------------------------------------------------------------------- 3. foreign folders

def test_a_fresh_run_into_a_git_checkout_is_refused_and_moves_nothing(tmp_path: Path) -> None:
    checkout = tmp_path / "checkout"
    (checkout / "src").mkdir(parents=True)
    subprocess.run(["git", "init", "-q"], cwd=checkout, check=True)
    (checkout / "README.md").write_text("# mine\n")
    (checkout / "src" / "app.py").write_text("print('mine')\n")
    before = snapshot(checkout)
    os.chdir(checkout)
    code, output = cli("run", "--project", "memory-extension", "--backend", "sim", "--sim-time-scale", FAST,
                       "--output", ".", "--no-progress")
    assert code == 2 and "not sparc-cloud's (.git, README.md, src)" in output, output
    assert snapshot(checkout) == before  # not even a .lock was left


def test_a_fresh_run_archives_only_its_own_files(finished: Path) -> None:
    (finished / "notes.md").write_text("my notes\n")
    (finished / "phase-1-specification" / "my-comments.txt").write_text("mine\n")
    first = bundle(finished)["run_id"]
    code, output = sim_run(finished)
    assert code == 0, output
    assert (finished / "notes.md").read_text() == "my notes\n"  # a user's file at the top stays where it is
    history = finished / "history" / first
    assert sorted(p.name for p in history.iterdir()) == [
        "bundle.json", "events.jsonl", "journal.jsonl", "phase-1-specification", "phase-2-pseudocode",
        "phase-3-architecture", "phase-4-refinement", "phase-5-completion", "run.log"]


def test_an_output_folder_that_holds_only_leftovers_of_a_failed_start_is_used(tmp_path: Path) -> None:
    out = tmp_path / "run"
    out.mkdir()
    (out / ".lock").write_text("pid 1")
    (out / "run.log").write_text("")
    (out / ".DS_Store").write_bytes(b"\0")  # what a file browser leaves is not someone else's work
    code, output = sim_run(out, "--phases", "1")
    assert code == 0, output


def test_a_run_folder_known_by_its_journal_alone_keeps_the_users_files(finished: Path) -> None:
    (finished / "bundle.json").unlink()
    (finished / "notes.md").write_text("my notes\n")
    code, output = sim_run(finished)
    assert code == 0, output
    assert (finished / "notes.md").read_text() == "my notes\n"


# --------------------------------------------------------------------------------------------- 4. export

def _git_checkout(path: Path, files: dict[str, str]) -> Path:
    path.mkdir(parents=True)
    subprocess.run(["git", "init", "-q"], cwd=path, check=True)
    for rel, text in files.items():
        (path / rel).parent.mkdir(parents=True, exist_ok=True)
        (path / rel).write_text(text)
    return path


def _modify(path: str, old: str, new: str) -> str:
    return (f"diff --git a/{path} b/{path}\n--- a/{path}\n+++ b/{path}\n@@ -1,3 +1,3 @@\n a\n-{old}\n+{new}\n c\n")


def _set_diffs(out: Path, diffs: dict[str, str]) -> None:
    def change(data: dict[str, Any]) -> None:
        for agent in data["phases"][3]["agents"]:
            if agent["id"] in diffs:
                agent["diff"] = diffs[agent["id"]]
    set_bundle(out, change)


def test_export_of_two_clashing_diffs_changes_nothing(finished: Path, tmp_path: Path) -> None:
    target = _git_checkout(tmp_path / "checkout", {"g.txt": "a\nb\nc\n", "h.txt": "a\nx\nc\n"})
    _set_diffs(finished, {"p4-component-1": _modify("h.txt", "x", "y") + _modify("g.txt", "b", "B"),
                          "p4-component-2": _modify("g.txt", "b", "X")})  # each applies alone; not both
    before = snapshot(target)
    code, output = cli("export", str(finished), "--to", str(target))
    assert code == 2 and "p4-component-2 does not apply" in output and "nothing was changed" in output, output
    assert snapshot(target) == before


def test_export_applies_diffs_in_order_so_one_may_build_on_another(finished: Path, tmp_path: Path) -> None:
    target = _git_checkout(tmp_path / "checkout", {"g.txt": "a\nb\nc\n"})
    _set_diffs(finished, {"p4-component-1": _modify("g.txt", "b", "B"), "p4-component-2": _modify("g.txt", "B", "BB")})
    code, output = cli("export", str(finished), "--to", str(target))
    assert code == 0, output
    assert (target / "g.txt").read_text() == "a\nBB\nc\n"
    assert (target / "src" / "memory_extension" / "app.py").exists()


def test_export_that_fails_to_write_half_way_puts_everything_back(finished: Path, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from sparc_cloud.safefs import Root

    target = _git_checkout(tmp_path / "checkout", {"docs/sparc/phase-1-specification/p1-synthesis.md": "mine\n"})
    real = Root.atomic_write
    calls = {"n": 0}

    def filling_up(self: Root, rel: Any, data: Any, **kwargs: Any) -> None:
        calls["n"] += 1
        if calls["n"] == 9:
            raise OSError(errno.ENOSPC, "No space left on device")
        real(self, rel, data, **kwargs)

    monkeypatch.setattr(Root, "atomic_write", filling_up)
    before = snapshot(target)
    code, output = cli("export", str(finished), "--to", str(target))
    assert code == 1 and "No space left on device" in output and "put back" in output, output
    assert calls["n"] >= 9 and snapshot(target) == before


def test_export_refuses_links_in_the_target_and_diffs_into_git(finished: Path, tmp_path: Path) -> None:
    outside = outside_tree(tmp_path)
    target = _git_checkout(tmp_path / "checkout", {})
    (target / "src").symlink_to(outside / "dir")
    before = snapshot(tmp_path)
    code, output = cli("export", str(finished), "--to", str(target))
    assert code == 2 and f"{target / 'src'} is a symbolic link" in output, output
    assert snapshot(tmp_path) == before
    (target / "src").unlink()
    hook = ("diff --git a/.git/hooks/post-checkout b/.git/hooks/post-checkout\nnew file mode 100755\n"
            "--- /dev/null\n+++ b/.git/hooks/post-checkout\n@@ -0,0 +1 @@\n+echo owned\n")
    _set_diffs(finished, {"p4-component-1": hook})
    code, output = cli("export", str(finished), "--to", str(target))
    assert code == 2 and "nothing in .git" in output, output
    assert not (target / ".git" / "hooks" / "post-checkout").exists()


def test_export_of_a_run_with_failed_code_agents_needs_partial_and_names_what_is_missing(tmp_path: Path) -> None:
    out = tmp_path / "run"
    failing = scenario(tmp_path, '[[tasks]]\nindex = 2\noutcome = "failed"\nerror_message = "tests did not pass"\n')
    assert sim_run(out, "--scenario", failing)[0] == 1
    failed = next(a["id"] for a in agents(bundle(out)).values() if a["status"] == "failed")
    target = tmp_path / "target"
    code, output = cli("export", str(out), "--to", str(target))
    assert code == 2 and f"{failed} (failed)" in output and "p4-integration (skipped)" in output, output
    assert "--partial" in output and not target.exists()
    code, output = cli("export", str(out), "--to", str(target), "--partial")
    assert code == 0, output
    assert "not exported (--partial):" in output and f"{failed} (failed)" in output
    assert "applied 3 diff(s)" in output and (target / "docs" / "sparc" / "phase-1-specification").is_dir()


# ------------------------------------------------------------------------------------ 5. full disk

def _fill_disk_at(monkeypatch: pytest.MonkeyPatch, site: str, after: int) -> dict[str, int]:
    """Writes to files named `site` (or ending in it) fail with ENOSPC after `after` of them succeeded, while
    the returned switch's "on" is 1."""
    from sparc_cloud.safefs import Root

    real_atomic, real_append = Root.atomic_write, Root.open_append
    count = {"n": 0, "on": 1}

    def full() -> OSError:
        return OSError(errno.ENOSPC, "No space left on device")

    def hit(rel: Any) -> bool:
        if not count["on"] or not str(rel).endswith(site):
            return False
        count["n"] += 1
        return count["n"] > after

    def atomic(self: Root, rel: Any, data: Any, **kwargs: Any) -> None:
        if hit(rel):
            raise full()
        real_atomic(self, rel, data, **kwargs)

    class Filling:
        def __init__(self, handle: IO[str]) -> None:
            self.handle = handle

        def write(self, text: str) -> int:
            if hit(site):
                raise full()
            return self.handle.write(text)

        def flush(self) -> None:
            self.handle.flush()

        def fileno(self) -> int:
            return self.handle.fileno()

        def close(self) -> None:
            self.handle.close()

    def append(self: Root, rel: Any) -> Any:
        handle = real_append(self, rel)
        return Filling(handle) if str(rel).endswith(site) else handle

    monkeypatch.setattr(Root, "atomic_write", atomic)
    monkeypatch.setattr(Root, "open_append", append)
    return count


@pytest.mark.parametrize(("site", "after"), [("bundle.json", 1), ("journal.jsonl", 6), (".md", 6), (".patch", 2),
                                             ("run.log", 40), ("events.jsonl", 40)])
def test_a_full_disk_at_any_write_is_one_clear_message_and_resume_finishes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str], site: str,
        after: int) -> None:
    out = tmp_path / "run"
    switch = _fill_disk_at(monkeypatch, site, after)
    code, output = sim_run(out)
    captured = capfd.readouterr()
    assert code == 1, output
    assert f"Writing to the run folder {out} failed" in output and "No space left on device" in output
    assert f"--output {out}" in output and "--resume`" in output
    for text in (output, captured.err, captured.out):
        assert "internal error" not in text and "Traceback" not in text and "Logging error" not in text
    switch["on"] = 0  # space freed
    code, output = sim_run(out, "--resume")
    assert code == 0, output
    assert all(r["status"] == "completed" for r in agents(bundle(out)).values())


# ------------------------------------------------------------------------------------------ 6. bad input

def _bad_env(tmp_path: Path) -> list[str]:
    Path(".env").write_bytes(b"SPARC_CONCURRENCY=4\nSPARC_CODEX_BRANCH=caf\xe9\n")
    return []


def _bad_scenario(tmp_path: Path) -> list[str]:
    path = tmp_path / "latin1.toml"
    path.write_bytes(b'# caf\xe9\n[[faults]]\nendpoint = "gemini.generate"\n')
    return ["--scenario", str(path)]


def _lock_folder(tmp_path: Path) -> list[str]:
    (tmp_path / "o" / ".lock").mkdir(parents=True)
    return []


def _output_is_a_file(tmp_path: Path) -> list[str]:
    (tmp_path / "o").write_text("a file\n")
    return []


@pytest.mark.parametrize(
    ("setup", "expected"),
    [
        (_bad_env, "is not UTF-8 text"),
        (_bad_scenario, "The scenario file"),
        (_lock_folder, ".lock is a folder"),
        (_output_is_a_file, "is a file, not a folder"),
        (lambda p: ["--deadline", "-5"], "--deadline -5: give a positive number of seconds"),
        (lambda p: ["--deadline", "0"], "--deadline 0: give a positive number"),
        (lambda p: ["--deadline", "nan"], "--deadline nan: give a positive number"),
        (lambda p: ["--budget-usd", "nan"], "--budget-usd nan: give a positive amount"),
        (lambda p: ["--budget-usd", "-1"], "--budget-usd -1: give a positive amount"),
        (lambda p: ["--phases", ""], "--phases '': phases are numbered 1 to 5"),
        (lambda p: ["--agent-timeout", "0"], "--agent-timeout 0: give a positive number of seconds"),
        (lambda p: ["--agent-timeout", "inf"], "--agent-timeout inf"),
    ],
    ids=["env-not-utf8", "scenario-not-utf8", "lock-is-a-folder", "output-is-a-file", "deadline-negative",
         "deadline-zero", "deadline-nan", "budget-nan", "budget-negative", "phases-empty", "agent-timeout-zero",
         "agent-timeout-inf"],
)
def test_bad_input_is_exit_2_with_a_message_never_an_internal_error(tmp_path: Path, setup: Any,
                                                                    expected: str) -> None:
    extra = setup(tmp_path)
    code, output = sim_run(tmp_path / "o", *extra)
    assert code == 2, output
    assert expected in output and "internal error" not in output and "Traceback" not in output
    assert "--agent-timeout-s" not in output and "--run-deadline-s" not in output


def test_init_with_a_300_character_name_is_exit_2(tmp_path: Path) -> None:
    code, output = cli("init", "a" * 300, "--dir", str(tmp_path))
    assert code == 2 and "at most 80" in output and "internal error" not in output, output
    assert not list(tmp_path.glob("*.toml"))


def test_init_never_writes_through_a_dangling_link(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere.txt"
    (tmp_path / "demo.toml").symlink_to(target)
    code, output = cli("init", "demo", "--dir", str(tmp_path))
    assert code == 2 and "already exists" in output and not target.exists(), output


# ------------------------------------------------------------------------------------------- 8. terminal

ESCAPES = "\\u001b[2J\\u001b]0;owned\\u0007 gone\\r\\n12:00:00 p5-completion finished: forged"


def test_escape_sequences_from_a_server_never_reach_the_console(tmp_path: Path) -> None:
    out = tmp_path / "run"
    failing = scenario(tmp_path, f'[[tasks]]\nindex = 1\noutcome = "failed"\nerror_message = "{ESCAPES}"\n')
    code, output = sim_run(out, "--scenario", failing)
    assert code == 1, output
    assert "\x1b" not in output and "\x07" not in output and "\r" not in output
    assert "\\x1b[2J" in output  # escaped, visible
    assert not any(line.startswith("12:00:00 p5-completion finished: forged") for line in output.splitlines())
    failed = next(a for a in agents(bundle(out)).values() if a["status"] == "failed")
    assert "\x1b[2J" in failed["error"]  # the record keeps the server's words as they were
    page = next(out.glob(f"phase-*/{failed['id']}.md")).read_text(encoding="utf-8")
    assert "\x1b" not in page and "\x07" not in page and "\\x1b[2J" in page  # its Markdown header is escaped

    def doctor(data: dict[str, Any]) -> None:
        data["phases"][0]["agents"][0]["model"] = "gemini\x1b[31m[link=https://evil.invalid]x[/link]"

    set_bundle(out, doctor)
    code, output = cli("report", str(out))
    assert code == 0 and "\x1b" not in output, output
    code, output = cli("report", str(out), "--markdown")
    assert code == 0 and "\x1b" not in output and "gemini\\x1b[31m" in output, output


def test_escape_sequences_in_a_project_file_never_reach_the_markdown(tmp_path: Path) -> None:
    project = tmp_path / "p.toml"
    project.write_text('name = "esc"\ngoal = "Show that names are escaped."\n'
                       '[research]\ntopics = ["red \\u001b[31mtopic\\u0007"]\n'
                       '[[components]]\nname = "core"\ndescription = "The core."\n', encoding="utf-8")
    code, output = sim_run(tmp_path / "run", "--phases", "1", project=str(project))
    assert code == 0, output
    page = (tmp_path / "run" / "phase-1-specification" / "p1-research-1.md").read_text(encoding="utf-8")
    assert page.startswith("# p1-research-1: Research: red \\x1b[31mtopic\\x07\n"), page[:120]


def test_the_live_table_escapes_control_characters() -> None:
    from rich.console import Console

    from sparc_cloud.events import Event, EventBus
    from sparc_cloud.phases import build_plan
    from sparc_cloud.progress import LiveProgress
    from sparc_cloud.project import load_project, load_templates
    from sparc_cloud.redact import SecretRegistry

    project, _ = load_project("memory-extension")
    plan = build_plan(project, load_templates(project))
    console = Console(record=True, width=200, color_system=None)
    view = LiveProgress(plan.agents, console)
    bus = EventBus(SecretRegistry())
    bus.add(view)
    bus.emit(Event("agent_failed", "p1-research-1", 1, "HTTP 500: \x1b]0;owned\x07 \x1b[2J"))
    console.print(view)
    text = console.export_text()
    assert "\x1b" not in text and "\x07" not in text and "\\x1b]0;owned\\x07" in text


# -------------------------------------------------------------------------------------------- 9. pipes

def test_output_to_a_closed_pipe_stops_quietly_and_the_exit_code_is_the_runs(tmp_path: Path) -> None:
    out = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, "-m", "sparc_cloud", "run", "--project", "memory-extension", "--backend", "sim",
         "--sim-time-scale", FAST, "--output", str(out), "--no-progress", "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env_for_subprocess())
    assert proc.stdout is not None
    first = proc.stdout.readline()  # like `| head -1`: read one line (the first event), then go away
    proc.stdout.close()
    _, err = proc.communicate(timeout=120)
    assert json.loads(first)["kind"] == "run_started"
    assert proc.returncode == 0, err.decode()
    assert b"Traceback" not in err and b"internal error" not in err and b"Exception ignored" not in err
    assert "Traceback" not in (out / "run.log").read_text(encoding="utf-8")
    assert len(journal_ids(out)) == 13


# ------------------------------------------------------------------------------ 10. races and leftovers

def test_the_writability_probe_never_touches_another_process_probe(tmp_path: Path) -> None:
    out = tmp_path / "run"
    out.mkdir()
    (out / ".write-test").write_text("another process's probe")  # what a second run used to overwrite and delete
    code, output = sim_run(out, "--phases", "1")
    assert code == 0, output
    assert (out / ".write-test").read_text() == "another process's probe"
    assert not [p for p in out.iterdir() if p.name.startswith(".write-test-")]


def test_simulator_credential_folders_of_killed_runs_are_removed_at_the_next_start(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from sparc_cloud.simhome import PREFIX

    temp = tmp_path / "tmp"
    temp.mkdir()
    out = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, "-m", "sparc_cloud", "run", "--project", "memory-extension", "--backend", "sim",
         "--sim-time-scale", "0.02", "--output", str(out), "--no-progress"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env_for_subprocess(TMPDIR=str(temp)))
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not ((out / "journal.jsonl").exists() and journal_ids(out)):
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    left = [p for p in temp.iterdir() if p.name.startswith(PREFIX)]
    assert len(left) == 1 and left[0].name.startswith(f"{PREFIX}{proc.pid}-")
    alive = temp / f"{PREFIX}{os.getppid()}-inuse"  # a live process's folder is left alone
    alive.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    code, output = sim_run(tmp_path / "second", "--phases", "1")
    assert code == 0, output
    assert sorted(p.name for p in temp.iterdir()) == [alive.name]


# ---------------------------------------------------------------------------------- the whole-tree scan

def test_run_rerun_resume_and_export_write_only_into_the_run_folder_and_the_target(tmp_path: Path) -> None:
    outside_tree(tmp_path)
    out = tmp_path / "run"
    target = _git_checkout(tmp_path / "target", {"README.md": "# target\n"})
    failing = scenario(tmp_path, '[[tasks]]\nindex = 2\noutcome = "failed"\nerror_message = "no"\n')
    steps: list[tuple[list[str], int]] = [
        (["run", "--scenario", failing], 1), (["run", "--resume"], 0), (["run", "--phases", "4"], 0),
        (["export"], 0), (["run"], 0)]
    for step, expected in steps:
        before = snapshot(tmp_path)
        if step[0] == "export":
            code, output = cli("export", str(out), "--to", str(target))
        else:
            code, output = sim_run(out, *step[1:])
        assert code == expected, (step, output)
        assert changed_outside(before, snapshot(tmp_path), "run", "target") == [], step

    # Links planted everywhere a run or an export writes: every command is refused, nothing outside changes.
    outside = tmp_path / "outside"
    for name, to in (("history", "dir"), ("phase-4-refinement", "dir"), ("run.log", "file")):
        plant(out / name, outside / to)
    target = _git_checkout(tmp_path / "target2", {})
    (target / "docs").symlink_to(outside / "dir")
    for step in (["run"], ["run", "--resume"], ["run", "--phases", "4"], ["export"]):
        before = snapshot(tmp_path)
        if step[0] == "export":
            code, output = cli("export", str(out), "--to", str(target))
        else:
            code, output = sim_run(out, *step[1:])
        assert code == 2 and "is a symbolic link" in output, (step, output)
        assert snapshot(tmp_path) == before, step


# ------------------------------------------------------------------------------------------ 7. webhooks

SLOW = "https://slow.example.invalid:8443/home"  # its path is a common folder name, which must stay readable
FAILING = "https://discord.com/api/webhooks/123/MARKERDISCORDTOKEN"
HEALTHY = "https://hooks.slack.com/services/T000/B000/MARKERSECRETPATH"


def _join_notifier_threads() -> None:
    for thread in threading.enumerate():
        if thread.name.startswith("sparc-notify-"):
            thread.join(30)


class _Reply:
    status_code = 200
    headers: dict[str, str] = {}


class _Session:
    """Stands in for requests.Session: posts to SLOW wait until released, the others are recorded at once."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.healthy: list[dict[str, Any]] = []
        self.changed = threading.Condition()

    def post(self, url: str, json: dict[str, Any], timeout: float) -> _Reply:
        if url == SLOW:
            self.release.wait(60)
        else:
            with self.changed:
                self.healthy.append(json)
                self.changed.notify_all()
        return _Reply()


def test_a_slow_webhook_neither_starves_the_others_nor_holds_the_exit() -> None:
    from sparc_cloud.events import Event
    from sparc_cloud.notify import Notifier
    from sparc_cloud.redact import SecretRegistry

    session = _Session()
    notifier = Notifier([SLOW, HEALTHY], "p", SecretRegistry(), session=session)  # type: ignore[arg-type]
    for number in range(6):
        notifier(Event("phase_done", phase=number % 5 + 1, message="done"))
    with session.changed:
        assert session.changed.wait_for(lambda: len(session.healthy) == 6, timeout=30)
    try:
        lines = notifier.close(timeout_s=0.01)  # the slow hook is still inside its first post
    finally:
        session.release.set()
        _join_notifier_threads()
    assert lines == ["warning: webhook #1 (https://slow.example.invalid:8443/***): 6 of 6 notification(s) not "
                     "delivered (it did not answer in time). The run itself is not affected."]


@responses.activate
def test_webhooks_each_on_their_own_failures_named_at_the_end_and_masking_masks_only_urls(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import sparc_cloud.notify as notify

    monkeypatch.setattr(notify, "CLOSE_WAIT_S", 2.0)
    release = threading.Event()

    def slow(request: Any) -> tuple[int, dict[str, str], str]:
        release.wait(60)
        return 200, {}, ""

    responses.add_passthru("http://127.0.0.1")
    responses.add_callback(responses.POST, SLOW, callback=slow)
    responses.post(FAILING, status=500)
    healthy = responses.post(HEALTHY, status=200)
    out = tmp_path / "home" / "run"  # "/home" is also the slow hook's path
    try:
        code, output = sim_run(out, "--notify", SLOW, "--notify", FAILING, "--notify", HEALTHY)
    finally:
        release.set()
        _join_notifier_threads()  # the slow hook's thread posts the rest now; let it finish under this mock
    assert code == 0, output
    texts = [json.loads(c.request.body or b"{}")["text"] for c in healthy.calls]
    assert len(texts) == 6 and texts[-1].startswith("sparc-cloud memory-extension: run done")
    assert "webhook #1 (https://slow.example.invalid:8443/***): 6 of 6 notification(s) not delivered" in output
    assert "webhook #2 (https://discord.com/***): 6 of 6 notification(s) not delivered (last error:" in output
    assert "webhook #3" not in output
    log = (out / "run.log").read_text(encoding="utf-8")
    assert f"Run folder: {out}" in output and str(out) in log  # not masked because a hook's path is "/home"
    for text in (output, log):
        assert "MARKERDISCORDTOKEN" not in text and "MARKERSECRETPATH" not in text


def test_masked_webhook_urls_keep_scheme_host_and_port_and_console_text_is_escaped() -> None:
    from sparc_cloud.notify import mask_url
    from sparc_cloud.terminal import clean

    assert mask_url("http://10.0.0.5:8080/hooks/a?token=x") == "http://10.0.0.5:8080/***"
    assert mask_url("http://[::1]:9000/x") == "http://[::1]:9000/***"
    assert mask_url("https://hooks.slack.com/services/T/B/C") == "https://hooks.slack.com/***"
    assert clean("a\x1b[31mb\x07\r\u202etxt.exe\tend\nnext") == "a\\x1b[31mb\\x07\\x0d\\u202etxt.exe\tend\nnext"
    assert clean("one\ntwo", one_line=True) == "one\\ntwo"
    assert clean("plain 🚀 text") == "plain 🚀 text"
