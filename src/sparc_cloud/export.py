"""`sparc-cloud export RUN_DIR --to DIR`: the phase documents and the agents' diffs, applied for the user.

All or nothing:
1. The files the diffs touch are copied from the target into a scratch folder, and the diffs are applied
   there in order, one after another, with `git apply` (so a diff that builds on an earlier one works,
   and two that clash are caught). `git apply` refuses paths outside the tree; sparc-cloud also refuses
   paths into `.git` and diffs that create symbolic links. No text from a model is ever executed.
2. Only when every diff applied are the results and the documents (`docs/sparc/phase-N-*/<agent>.md`)
   written into the target: each file replaced atomically, never through a symbolic link. If a write
   fails (disk full), the files already written are put back as they were.

A run whose phase 4 has failed or skipped agents (or did not run) is exported only with `partial=True`;
`ExportResult.missing` names what is left out. A run with stale phases (made from inputs that changed since,
e.g. after `--phases 3` with a new goal) is exported only with `stale_ok=True`. The target may not lie inside
the run folder."""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import shutil
import stat
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from sparc_cloud.bundle import AgentRecord, Bundle, load_bundle
from sparc_cloud.errors import ConfigError, SparcError
from sparc_cloud.phases import phase_dir
from sparc_cloud.runfiles import check_bundle_names
from sparc_cloud.safefs import Root, link_error
from sparc_cloud.terminal import clean

File = tuple[bytes, int | None]  # content and permission bits (None: leave the default)
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")


class ExportWriteError(SparcError):
    """Writing into the export target failed; what had been written was put back."""


@dataclass
class ExportResult:
    """What was written where, and what was left out (with `partial`)."""

    documents: list[Path] = field(default_factory=list)
    patches: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    stale: list[str] = field(default_factory=list)  # phases exported although stale (with `stale_ok`)


def _git(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    git = shutil.which("git")
    if git is None:
        raise ConfigError("`git` is needed to apply the agents' diffs; install git and run export again.")
    # The scratch folder must not be taken for part of an enclosing repository (git would then skip paths).
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env["GIT_CEILING_DIRECTORIES"] = str(cwd.parent)
    return subprocess.run([git, *args], cwd=cwd, capture_output=True, text=True, check=False, env=env)  # noqa: S603


def missing_work(bundle: Bundle) -> list[str]:
    """What of phase 4 (the code) a bundle lacks: agents failed or skipped, or the phase not run at all."""
    phase = bundle.phase(4)
    if phase is None or not phase.agents:
        return ["phase 4 (refinement) has not run"]
    missing = [f"{a.id} ({a.status})" for a in phase.agents if a.status != "completed"]
    if not missing and phase.status == "partial":
        missing.append("phase 4 (refinement) was interrupted: some of its agents have no result")
    return missing


def _checked_path(raw: str, record: AgentRecord) -> str:
    """A path named by a diff, refused unless it stays inside the target and out of `.git`."""
    if _CONTROL.search(raw):
        raise ConfigError(f"The diff of {record.id} names the path {clean(raw, one_line=True)!r}, which holds a control "
                          "character (an escape sequence, a newline); export does not create such names. Nothing was "
                          "changed: export with --partial after dropping that agent, or rerun it.")
    parts = PurePosixPath(raw).parts
    if not parts or raw.startswith("/") or any(p in ("", ".", "..") or p.lower() == ".git" for p in parts) \
            or "\0" in raw:
        raise ConfigError(f"The diff of {record.id} touches {raw!r}, outside the files export may write (no "
                          "absolute paths, no '..', nothing in .git). Nothing was changed.")
    return PurePosixPath(*parts).as_posix()


def _touched(patch: Path, scratch: Path, record: AgentRecord) -> list[str]:
    """Every path a diff reads or writes (renames give both), from `git apply --numstat -z`."""
    listed = _git(["apply", "--numstat", "-z", str(patch)], scratch)
    if listed.returncode != 0:
        raise ConfigError(f"The diff of {record.id} is not a diff git can read; nothing was changed. git says: "
                          f"{listed.stderr.strip()[:800]}")
    tokens = listed.stdout.split("\0")
    paths: list[str] = []
    i = 0
    while i < len(tokens):
        token = tokens[i]
        i += 1
        if not token:
            continue
        path = token.split("\t", 2)[2] if token.count("\t") >= 2 else ""
        if path:
            paths.append(path)
        else:  # a rename or copy: the old and the new name follow
            paths.extend(t for t in tokens[i:i + 2] if t)
            i += 2
    return [_checked_path(p, record) for p in paths]


def _read_target(root: Root | None, rel: str, target: Path) -> File | None:
    """A file of the target as it is now (None: missing); links and folders in the way are refused."""
    if root is None:
        return None
    kind = root.kind(rel)
    if kind == "missing":
        return None
    if kind == "link":
        raise link_error(target / rel)
    if kind != "file":
        raise ConfigError(f"{target / rel} is a folder or a special file, where the export writes a file. Nothing was "
                          "changed: move it away, or export into another folder.")
    data = root.read_bytes(rel)
    return (data or b"", root.file_mode(rel)) if data is not None else None


def _scratch_result(scratch: Path, rel: str, record_ids: str) -> File | None:
    path = scratch / rel
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return None
    if stat.S_ISLNK(info.st_mode):
        which = f"The diffs of {record_ids} create" if "," in record_ids else f"The diff of {record_ids} creates"
        raise ConfigError(f"{which} {clean(rel, one_line=True)} as a symbolic link; export does not write links. "
                          "Nothing was changed.")
    if not stat.S_ISREG(info.st_mode):
        return None
    return path.read_bytes(), stat.S_IMODE(info.st_mode)


def _plan_changes(records: list[AgentRecord], target: Path, root: Root | None) -> tuple[dict[str, File | None],
                                                                                      dict[str, File | None]]:
    """(new content of every path the diffs change, None: deleted; the same paths as they are now)."""
    with tempfile.TemporaryDirectory(prefix="sparc-export-") as tmp:
        scratch = Path(tmp) / "tree"
        scratch.mkdir()
        touched: list[str] = []
        touched_by: dict[str, list[str]] = {}
        patches: list[tuple[AgentRecord, Path]] = []
        for record in records:
            assert record.diff is not None
            patch = Path(tmp) / f"{record.id}.patch"
            patch.write_text(record.diff if record.diff.endswith("\n") else record.diff + "\n", encoding="utf-8")
            patches.append((record, patch))
            paths = _touched(patch, scratch, record)
            touched += [p for p in paths if p not in touched]
            for rel in paths:
                touched_by.setdefault(rel, []).append(record.id)
        before: dict[str, File | None] = {}
        for rel in touched:
            current = before[rel] = _read_target(root, rel, target)
            if current is not None:
                data, mode = current
                copy = scratch / rel
                copy.parent.mkdir(parents=True, exist_ok=True)
                copy.write_bytes(data)
                if mode is not None:
                    copy.chmod(mode)
        for number, (record, patch) in enumerate(patches):
            applied = _git(["apply", "--whitespace=nowarn", str(patch)], scratch)
            if applied.returncode != 0:
                after = f" after the {number} before it ({', '.join(r.id for r, _ in patches[:number])})" if number else ""
                raise ConfigError(f"The diff of {record.id} does not apply to {target}{after}; nothing was "
                                  f"changed. git says: {applied.stderr.strip()[:800]}")
        after_all = {rel: _scratch_result(scratch, rel, ", ".join(touched_by[rel])) for rel in touched}
    return {rel: new for rel, new in after_all.items() if new != before[rel]}, before


def _commit(target: Path, changes: dict[str, File | None], before: dict[str, File | None]) -> None:
    """Write every change into the target; on a failure put back what was written (and remove the folders
    that were created) before raising."""
    created_target = not target.exists()
    if created_target:
        try:
            target.mkdir(parents=True)
        except OSError as exc:
            raise ConfigError(f"Cannot create {target}: {exc.strerror}. Nothing was changed.") from None
    root = Root(target)
    new_dirs: list[str] = []
    for rel in changes:
        parent = PurePosixPath(rel).parent
        chain = [p.as_posix() for p in reversed(parent.parents) if p.as_posix() != "."] + (
            [parent.as_posix()] if parent.as_posix() != "." else [])
        new_dirs += [d for d in chain if d not in new_dirs and root.kind(d) == "missing"]
    done: list[str] = []
    try:
        for rel, new in changes.items():
            done.append(rel)
            if new is None:
                with contextlib.suppress(FileNotFoundError):
                    root.unlink(rel)
                continue
            data, mode = new
            root.atomic_write(rel, data)
            if mode is not None:
                root.chmod(rel, mode)
    except (OSError, SparcError) as exc:
        for rel in reversed(done):
            with contextlib.suppress(OSError, SparcError):
                old = before.get(rel)
                if old is None:
                    with contextlib.suppress(FileNotFoundError):
                        root.unlink(rel)
                else:
                    root.atomic_write(rel, old[0])
                    if old[1] is not None:
                        root.chmod(rel, old[1])
        for folder in reversed(new_dirs):
            with contextlib.suppress(OSError, SparcError):
                root.rmdir(folder)
        if created_target:
            with contextlib.suppress(OSError):
                target.rmdir()
        if isinstance(exc, SparcError):
            raise
        raise ExportWriteError(f"Writing into {target} failed ({exc.strerror or exc}); the files already written "
                               "were put back, so nothing was changed. Free some space (or fix the permissions), "
                               "then export again.") from None


def _refuse_target_in_run(run_dir: Path, target: Path) -> None:
    """The target may not be the run folder or inside it, nor hold the run folder inside its `.git`."""
    run, into = run_dir.resolve(), target.resolve()
    if into == run or run in into.parents:
        raise ConfigError(f"{target} is inside the run folder {run_dir}; export writes the code and documents into "
                          "another folder (a checkout of your project, or a new one), never into the run. Nothing "
                          "was changed: give --to a folder outside the run.")
    git = into / ".git"
    if run == git or git in run.parents:
        raise ConfigError(f"The run folder {run_dir} lies inside {git}; exporting into {target} would write next to "
                          "git's own files. Nothing was changed: move the run out of .git, or export elsewhere.")


def stale_phases(bundle: Bundle) -> list[str]:
    """The phases of a run marked stale (a phase they read was rerun since), each with why."""
    return [f"phase {p.number} ({p.name.lower()}): {p.stale_reason or 'its inputs changed'}"
            for p in bundle.phases if p.stale]


def _update_command(bundle: Bundle, run_dir: Path) -> str:
    """The command that reruns the stale phases of a run (and what follows them)."""
    first = min(p.number for p in bundle.phases if p.stale)
    project = bundle.project_source.removeprefix("builtin:") or bundle.project
    args = ["sparc-cloud", "run", "--project", project, "--output", str(run_dir), "--phases", f"{first}-5"]
    if bundle.backend == "sim":
        args += ["--backend", "sim"]
    return shlex.join(args)


def export_run(run_dir: Path, target: Path, *, docs_dir: str = "docs/sparc", partial: bool = False,
               stale_ok: bool = False) -> ExportResult:
    """Apply the run's diffs into `target` (a directory or a git checkout) and write its documents: all of it
    or, on any problem, none of it."""
    source = run_dir / "bundle.json"
    bundle = load_bundle(source)
    check_bundle_names(bundle, str(source))  # agent ids become file names below
    _refuse_target_in_run(run_dir, target)
    result = ExportResult(missing=missing_work(bundle))
    if result.missing and not partial:
        raise ConfigError(f"The run in {run_dir} is not complete: {', '.join(result.missing)}. Finish it (`sparc-cloud "
                          "run ... --resume`), or export what there is with --partial. Nothing was changed.")
    stale = stale_phases(bundle)
    if stale and not stale_ok:
        raise ConfigError(f"The run in {run_dir} has stale phases, made from inputs that have changed since: "
                          f"{'; '.join(clean(s, one_line=True) for s in stale)}. Exporting it would mix code and "
                          "documents of different designs. Bring them up to date with "
                          f"`{_update_command(bundle, run_dir)}`, or export them as they are with --stale-ok. "
                          "Nothing was changed.")
    result.stale = stale
    records = [a for p in bundle.phases for a in p.agents if a.status == "completed"]
    if not records:
        raise ConfigError(f"The run in {run_dir} has no completed agent to export.")
    if target.is_symlink() and not target.exists():
        raise ConfigError(f"{target} is a symbolic link to nothing. Export into an existing folder or a new path.")
    if target.exists() and not target.is_dir():
        raise ConfigError(f"{target} is a file, not a folder. Export into a folder (it is created if missing).")
    root = Root(target) if target.exists() else None
    with_diff = [r for r in records if r.diff]
    try:
        changes, before = _plan_changes(with_diff, target, root) if with_diff else ({}, {})
        for record in records:
            rel = f"{docs_dir}/{phase_dir(record.phase)}/{record.id}.md"
            before[rel] = _read_target(root, rel, target)
            changes[rel] = (f"# {clean(record.title, one_line=True)}\n\n{record.output_text}".encode(), None)
            result.documents.append(target / rel)
    except OSError as exc:
        raise ConfigError(f"Reading {target} failed ({exc.strerror or exc}); nothing was changed.") from None
    _commit(target, changes, before)
    result.patches = [r.id for r in with_diff]
    return result
