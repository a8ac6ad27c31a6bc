"""Which branch a Codex task runs on, as the official client picks it.

openai/codex `cloud-tasks/src/lib.rs` `resolve_git_ref_with_git_info`: the `--branch` given, else the
current branch of the git checkout the command runs in, else that checkout's default branch (the remote's
`HEAD`, else a local `main` / `master`), else `"main"`. sparc-cloud puts the project's `[codex] branch`
between the flag and the checkout."""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from sparc_cloud.clients import codex_settings

GIT_TIMEOUT_S = 5.0  # as upstream's run_git_command_with_timeout


@dataclass(frozen=True)
class BranchChoice:
    """The branch and where it came from (for the line printed before a run)."""

    branch: str
    source: str


def _git(args: list[str], cwd: Path) -> str | None:
    git = shutil.which("git")
    if git is None:
        return None
    try:
        done = subprocess.run(  # noqa: S603 - fixed argv, no shell
            [git, *args], cwd=cwd, capture_output=True, text=True, timeout=GIT_TIMEOUT_S, check=False,
            env={**os.environ, "GIT_OPTIONAL_LOCKS": "0", "LC_ALL": "C"},
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    out = done.stdout.strip()
    return out if done.returncode == 0 and out else None


def current_branch(cwd: Path) -> str | None:
    """The checked-out branch (None when detached or not a checkout)."""
    name = _git(["rev-parse", "--abbrev-ref", "HEAD"], cwd)
    return None if name in (None, "HEAD") else name


def default_branch(cwd: Path) -> str | None:
    """The checkout's default branch: `refs/remotes/origin/HEAD`, else a local `main` or `master`."""
    remote_head = _git(["symbolic-ref", "--quiet", "--short", "refs/remotes/origin/HEAD"], cwd)
    if remote_head and "/" in remote_head:
        return remote_head.split("/", 1)[1]
    for candidate in ("main", "master"):
        if _git(["rev-parse", "--verify", "--quiet", f"refs/heads/{candidate}"], cwd):
            return candidate
    return None


def resolve_branch(explicit: str | None, project: str | None = None, cwd: Path | None = None) -> BranchChoice:
    """`--branch` / SPARC_CODEX_BRANCH, else the project's `[codex] branch`, else the checkout's current
    branch, else its default branch, else `main`."""
    if explicit and explicit.strip():
        return BranchChoice(explicit.strip(), "--branch / SPARC_CODEX_BRANCH")
    if project and project.strip():
        return BranchChoice(project.strip(), "the project's [codex] branch")
    where = cwd or Path.cwd()
    found = current_branch(where)
    if found:
        return BranchChoice(found, f"the current branch of {where}")
    found = default_branch(where)
    if found:
        return BranchChoice(found, f"the default branch of {where}")
    return BranchChoice(codex_settings.DEFAULT_BRANCH, "the default")
