"""What a run folder may hold, and the checks made before a run writes into one.

A run writes only the names listed here (`is_run_entry`). Before a run starts, `check_folder` refuses a
folder that holds anything else unless it is already a sparc-cloud run folder (a bundle or a journal of
ours is in it), refuses links and wrong kinds among the run's own names, and names what it found. A
fresh run then moves only the run's own entries into `history/` (`archived_entries`): a user's files
are never moved. Names read from a bundle or journal (run ids, agent ids, phase numbers) pass
`check_bundle_names` before they become paths."""

from __future__ import annotations

import json
import re
from pathlib import Path

from sparc_cloud.bundle import AgentRecord, Bundle
from sparc_cloud.errors import ConfigError
from sparc_cloud.phases import PHASES, phase_dir
from sparc_cloud.safefs import Kind, Root, UnsafePath, check_component, link_error

LOCK = ".lock"
HISTORY = "history"
#: Files a run writes at the top of its folder (a new kind of run file must be added here).
RUN_FILES = ("bundle.json", "journal.jsonl", "run.log", "events.jsonl")
#: Files the operating system's file browsers drop into any folder: neither someone else's work nor the run's.
IGNORED = (".DS_Store", "Thumbs.db", "desktop.ini")
#: Leftovers of a run killed mid-write: the writability probe and atomic-write temp files.
_LEFTOVER = re.compile(r"\.write-test(-\d+-[0-9a-f]+)?|\.(bundle\.json|journal\.jsonl)\.[A-Za-z0-9_]+\.tmp")


def phase_dirs() -> tuple[str, ...]:
    """`phase-1-specification` ... `phase-5-completion`."""
    return tuple(phase_dir(n) for n in sorted(PHASES))


def is_run_entry(name: str) -> bool:
    """Whether a top-level entry of a run folder is one a run writes."""
    return name in (LOCK, HISTORY, *RUN_FILES, *phase_dirs()) or bool(_LEFTOVER.fullmatch(name))


def _expected_kind(name: str) -> Kind:
    return "dir" if name == HISTORY or name in phase_dirs() else "file"


def _foreign(name: str) -> bool:
    return not is_run_entry(name) and name not in IGNORED


def archived_entries(entries: dict[str, Kind]) -> list[str]:
    """The entries a fresh run moves into `history/<run id>/`: the previous run's own files, nothing else."""
    return sorted(n for n in entries if is_run_entry(n) and n not in (LOCK, HISTORY))


def _looks_like_ours(root: Root) -> bool:
    """A bundle of ours, or a journal whose first line is one of ours (a run header, a record or a task mark)."""
    raw = root.read_bytes("bundle.json") if root.kind("bundle.json") == "file" else None
    if raw is not None:
        try:
            data = json.loads(raw.decode("utf-8"))
            if isinstance(data, dict) and data.get("tool", "sparc-cloud") == "sparc-cloud" and "run_id" in data:
                return True
        except (UnicodeDecodeError, ValueError):
            pass
    raw = root.read_bytes("journal.jsonl") if root.kind("journal.jsonl") == "file" else None
    if raw:
        first = raw.split(b"\n", 1)[0]
        try:
            line = json.loads(first.decode("utf-8"))
            return isinstance(line, dict) and "run_id" in line and any(k in line for k in ("run", "record", "task"))
        except (UnicodeDecodeError, ValueError):
            return False
    return False


def check_folder(path: Path) -> None:
    """Refuse (exit 2) a folder a run must not write into: links or wrong kinds among the run's own names
    (at the top and one level down in the run's folders), or files of someone else's when the folder is
    not a sparc-cloud run folder. Nothing is written."""
    root = Root(path)
    entries = root.entries()
    for name, kind in sorted(entries.items()):
        if not is_run_entry(name):
            continue
        if kind == "link":
            raise link_error(path / name)
        wanted = _expected_kind(name)
        if kind != wanted and not _LEFTOVER.fullmatch(name):
            what = {"file": "a file", "dir": "a folder", "other": "a special file"}.get(kind, kind)
            fix = "Remove it (a run creates it)" if name == LOCK else "Move it away"
            raise ConfigError(f"{path / name} is {what}, but in a sparc-cloud run folder it must be "
                              f"{'a folder' if wanted == 'dir' else 'a file'}. {fix}, or choose another --output.")
        if kind == "dir":
            for inner, inner_kind in sorted(root.entries(name).items()):
                if inner_kind == "link":
                    raise link_error(path / name / inner)
    foreign = sorted(n for n in entries if _foreign(n))
    if foreign and not _looks_like_ours(root):
        shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
        raise ConfigError(f"The output folder {path} holds files that are not sparc-cloud's ({shown}). A run "
                          "writes only into an empty folder or a sparc-cloud run folder, so that nothing of "
                          f"yours is ever moved or overwritten. Choose another --output (for example "
                          f"{path / 'sparc-runs'}).")


def check_record_names(record: AgentRecord, source: str) -> None:
    """The record's id must be a plain name and its phase one of the five, before either becomes a path."""
    check_component(record.id, "the agent id", source)
    if record.phase not in PHASES:
        raise UnsafePath(f"{source} puts agent {record.id} in phase {record.phase!r}; phases are numbered 1 to 5. "
                         "The file was probably edited by hand: fix that entry, or use another run folder.")


def check_bundle_names(bundle: Bundle, source: str) -> None:
    """Every name in a bundle that sparc-cloud may use as a path: run id, phase numbers, agent ids."""
    check_component(bundle.run_id, "the run id", source)
    for phase in bundle.phases:
        if phase.number not in PHASES:
            raise UnsafePath(f"{source} has a phase numbered {phase.number!r}; phases are numbered 1 to 5. The "
                             "file was probably edited by hand: fix it, or use another run folder.")
        for record in phase.agents:
            check_record_names(record, source)


def write_failure_message(folder: Path, what: Path, exc: OSError, next_step: str) -> str:
    """The one message for a write into the run folder that failed (disk full, read-only, permissions)."""
    reason = exc.strerror or str(exc) or type(exc).__name__
    return (f"Writing to the run folder {folder} failed: {what.name}: {reason}. Every agent that finished before "
            f"is saved in {folder / 'journal.jsonl'}. Free some space (or make the folder writable again), then "
            f"{next_step}.")


__all__ = ["HISTORY", "LOCK", "RUN_FILES", "archived_entries", "check_bundle_names", "check_folder",
           "check_record_names", "is_run_entry", "phase_dirs", "write_failure_message"]
