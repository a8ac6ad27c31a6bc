"""Finding run folders: the newest one under the output directory, for commands given no RUN_DIR."""

from __future__ import annotations

from pathlib import Path

from sparc_cloud.errors import ConfigError


def runs_root(output_dir: Path | None) -> Path:
    """Where runs go by default: SPARC_OUTPUT_DIR, else ./sparc-runs."""
    return output_dir or Path("sparc-runs")


def latest_run_folder(output_dir: Path | None) -> Path:
    """The run folder whose bundle was written last under the output directory (ConfigError if there is none)."""
    root = runs_root(output_dir)
    candidates = [p for p in (root / "bundle.json", *root.glob("*/bundle.json")) if p.is_file()]
    if not candidates:
        raise ConfigError(
            f"No run folder under {root} (no */bundle.json). Give a run folder (e.g. `sparc-runs/memory-extension`), "
            "set SPARC_OUTPUT_DIR to where your runs are, or make one with "
            "`sparc-cloud run --project memory-extension --backend sim`."
        )
    newest = max(candidates, key=lambda p: (p.stat().st_mtime_ns, str(p)))
    return newest.parent
