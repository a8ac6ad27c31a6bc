"""The diff contract of refinement on a chat model: the answer must hold one unified diff that
`git apply --check` accepts against an empty tree (or the `--base DIR` of the run).

A cloud-task backend returns a diff by nature; a chat model is asked for one (`INSTRUCTION`), its answer's diff is
extracted (`extract_diff`) and checked (`check_diff`). One repair turn sends back git's error."""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from sparc_cloud.errors import ConfigError

INSTRUCTION = (
    "\n\n## How to answer\n\nReturn the code as one unified diff in git's format, inside a single ```diff fence: "
    "a `diff --git a/PATH b/PATH` header per file, new files as `--- /dev/null` / `+++ b/PATH`, and hunk headers "
    "whose line counts match the lines that follow. Before the fence, a short summary of what you built."
)
CHECK_TIMEOUT_S = 60.0
_FENCE = re.compile(r"```(?:diff|patch)?[ \t]*\n(.*?)```", re.DOTALL)


def wants_diff(template: str) -> bool:
    """Whether agents of this prompt template must answer with a diff (the refinement phase's)."""
    return template in ("component", "integration")


def repair_request(error: str) -> str:
    """The follow-up turn that sends back why the diff was refused."""
    return (f"`git apply --check` refused that diff:\n\n```\n{error.strip()}\n```\n\nSend the whole diff again, "
            "corrected, in one ```diff fence (headers and hunk line counts exactly right).")


def extract_diff(text: str) -> str | None:
    """The diff in an answer: the fenced block that looks like a diff, else the answer itself if it is one."""
    for block in _FENCE.findall(text):
        if block.lstrip().startswith(("diff --git", "--- ")):
            found = str(block)
            return found if found.endswith("\n") else found + "\n"
    stripped = text.strip()
    if stripped.startswith(("diff --git", "--- ")):
        return stripped + "\n"
    return None


def check_diff(diff: str | None, base: Path | None = None) -> str | None:
    """None when `git apply --check` accepts the diff against `base` (default: an empty tree), else why not."""
    if diff is None:
        return "the answer holds no unified diff (no ```diff fence starting with `diff --git` or `---`)"
    git = shutil.which("git")
    if git is None:
        raise ConfigError("Refinement on a chat model checks each diff with `git apply --check`, and git is not "
                          "installed. Install git, or run refinement on a backend whose tasks return diffs "
                          "themselves (docs/BACKENDS.md lists the kinds).")
    with tempfile.TemporaryDirectory(prefix="sparc-diff-") as tmp:
        patch = Path(tmp) / "answer.diff"
        patch.write_text(diff, encoding="utf-8")
        tree = base if base is not None else Path(tmp) / "tree"
        tree.mkdir(exist_ok=True)
        try:
            done = subprocess.run(  # noqa: S603 - a fixed argv, no shell
                [git, "apply", "--check", str(patch)], cwd=tree, capture_output=True, text=True,
                timeout=CHECK_TIMEOUT_S, check=False)
        except subprocess.TimeoutExpired:
            return f"git apply --check took longer than {CHECK_TIMEOUT_S:.0f} s"
    if done.returncode == 0:
        return None
    return (done.stderr or done.stdout).strip().replace(str(patch), "answer.diff") or "git apply --check failed"
