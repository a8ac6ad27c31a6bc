"""`sparc-cloud export RUN_DIR --to DIR`: the phase documents and the Codex diffs, applied for the user.

Every diff is checked with `git apply --check` (all of them, in order) before anything is written, so a
diff that does not apply leaves the target untouched. `git apply` refuses paths outside the target, and
no text from a model is ever executed."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from sparc_cloud.bundle import load_bundle
from sparc_cloud.errors import ConfigError
from sparc_cloud.phases import phase_dir


@dataclass
class ExportResult:
    """What was written where."""

    documents: list[Path] = field(default_factory=list)
    patches: list[str] = field(default_factory=list)


def _git(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    git = shutil.which("git")
    if git is None:
        raise ConfigError("`git` is needed to apply the Codex diffs; install git and run export again.")
    return subprocess.run([git, *args], cwd=cwd, capture_output=True, text=True, check=False)  # noqa: S603


def export_run(run_dir: Path, target: Path, *, docs_dir: str = "docs/sparc") -> ExportResult:
    """Apply the run's diffs into `target` (a directory or a git checkout) and write its documents."""
    bundle = load_bundle(run_dir / "bundle.json")
    records = [a for p in bundle.phases for a in p.agents if a.status == "completed"]
    if not records:
        raise ConfigError(f"The run in {run_dir} has no completed agent to export.")
    try:
        target.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"Cannot create {target}: {exc.strerror}.") from None
    result = ExportResult()
    with tempfile.TemporaryDirectory(prefix="sparc-export-") as tmp:
        patch_files = []
        for record in records:
            if record.diff:
                path = Path(tmp) / f"{record.id}.patch"
                path.write_text(record.diff if record.diff.endswith("\n") else record.diff + "\n", encoding="utf-8")
                patch_files.append(str(path))
                result.patches.append(record.id)
        if patch_files:
            check = _git(["apply", "--check", "--whitespace=nowarn", *patch_files], target)
            if check.returncode != 0:
                raise ConfigError(f"The Codex diffs do not apply to {target}; nothing was changed. git says: "
                                  f"{check.stderr.strip()[:800]}")
            applied = _git(["apply", "--whitespace=nowarn", *patch_files], target)
            if applied.returncode != 0:
                raise ConfigError(f"Applying the Codex diffs to {target} failed: {applied.stderr.strip()[:800]}")
    for record in records:
        doc = target / docs_dir / phase_dir(record.phase) / f"{record.id}.md"
        doc.parent.mkdir(parents=True, exist_ok=True)
        doc.write_text(f"# {record.title}\n\n{record.output_text}", encoding="utf-8")
        result.documents.append(doc)
    return result
