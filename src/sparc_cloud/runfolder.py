"""The run folder on disk: lock, journal (the checkpoint), atomic bundle, Markdown outputs, history."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import re
import threading
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any, Literal

from pydantic import ValidationError

from sparc_cloud.bundle import AgentRecord, Bundle, bundle_bytes, load_bundle
from sparc_cloud.contracts import CONTRACTS, render_markdown
from sparc_cloud.errors import ConfigError, RunFolderWriteError
from sparc_cloud.phases import CONTRACT_AGENTS, phase_dir
from sparc_cloud.runfiles import (
    archived_entries,
    check_bundle_names,
    check_folder,
    check_record_names,
    write_failure_message,
)
from sparc_cloud.safefs import GuardedWriter, Root, check_component
from sparc_cloud.terminal import clean

log = logging.getLogger(__name__)
OUTPUT_MARKER = "<!-- sparc-cloud: the agent's output starts below this line -->"
_MARKER_LINE = re.compile("^" + re.escape(OUTPUT_MARKER) + "$", re.MULTILINE)


def _header_value(value: str) -> str:
    """A value for the Markdown header: one line, control characters escaped, and no `<!--` (the output marker
    is an HTML comment: a name, error or model id must never pass for it)."""
    return clean(value, one_line=True).replace("<!--", "&lt;!--")


def split_output(text: str) -> str | None:
    """The text below the output marker of an agent's Markdown file (None: no marker). The marker is the first
    line that is the marker alone, so a header value quoting it (files of earlier versions) is not taken."""
    found = _MARKER_LINE.search(text)
    if found is None:
        return None
    return text[found.end():].removeprefix("\n\n")


@dataclass
class TaskMark:
    """A journal line about a paid cloud task: `creating` is written before the create request goes out,
    `started` the moment it returns the task's id. A resume finds the task by id, or by `marker` (which the
    create put into the task) when the process died before the id came back."""

    id: str  # the agent
    event: Literal["creating", "started"]
    inputs_hash: str | None
    environment_id: str | None
    branch: str | None
    marker: str | None = None
    task_id: str | None = None
    at: float | None = None  # epoch seconds when the line was written (where a lost create's search starts)


@dataclass
class JournalState:
    """One run's journal, read back: its header, the newest record of each agent, the tasks in flight when
    it stopped, and the ledger of what every agent that ran cost."""

    run_id: str | None
    header: dict[str, Any] | None = None
    records: dict[str, AgentRecord] = field(default_factory=dict)
    tasks: dict[str, TaskMark] = field(default_factory=dict)  # per agent, newer than its newest record
    spent_usd: float = 0.0
    record_lines: int = 0

    def take(self, item: dict[str, Any], cost: Callable[[AgentRecord], float] | None) -> None:
        """Fold one journal line in (lines of other runs are ignored)."""
        if "run" in item and isinstance(item["run"], dict):
            if self.run_id is None or item["run_id"] == self.run_id:
                self.run_id, self.header = str(item["run_id"]), item["run"]
            return
        if self.run_id is None and "run_id" in item:
            self.run_id = str(item["run_id"])  # a journal written before run headers existed
        if item["run_id"] != self.run_id:
            return
        if "task" in item:
            mark = TaskMark(**item["task"])
            self.tasks[mark.id] = mark
            return
        if "dropped" in item:  # agents a later plan no longer has (components the architecture stopped naming)
            for aid in item["dropped"]:
                self.records.pop(str(aid), None)
                self.tasks.pop(str(aid), None)
            return
        record = AgentRecord.model_validate(item["record"])
        self.records[record.id] = record
        self.tasks.pop(record.id, None)
        self.record_lines += 1
        if not record.reused and record.status != "skipped":
            self.spent_usd += cost(record) if cost is not None else (record.cost_usd or 0.0)


def check_contracts(records: Iterable[AgentRecord], source: Path) -> None:
    """Every contract in records read back from `source` (bundle.json, journal.jsonl) checked as an edited
    `<agent>.json` is: a run folder changed by hand never feeds the next phases an unchecked contract (a cycle,
    an escape sequence in a name, more components than phase 4 may build). A broken one is a ConfigError."""
    for record in records:
        name = CONTRACT_AGENTS.get(record.id) or record.contract
        if record.output_json is None or name not in CONTRACTS:
            continue
        try:
            CONTRACTS[name].model_validate(record.output_json)
        except ValidationError as exc:
            first = exc.errors(include_url=False)[0]
            where = ".".join(str(p) for p in first["loc"]) or "the top level"
            raise ConfigError(
                f"{source} holds an output of agent {record.id} that breaks the {name} contract at {where}: "
                f"{clean(str(first['msg']), one_line=True)}. The run folder was changed by hand or damaged, and "
                "nothing was run. Fix or remove that record, or start a fresh run (without --resume and "
                "--phases) or in another --output folder.") from None


class RunFolder:
    """One project's run folder (`./sparc-runs/<project>/` by default)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.bundle_path = path / "bundle.json"
        self.journal_path = path / "journal.jsonl"
        self.log_path = path / "run.log"
        self.events_path = path / "events.jsonl"
        self._lock_handle: IO[str] | None = None
        self._journal: IO[str] | None = None
        self._journal_lock = threading.Lock()
        self.journal_bytes = 0
        self.records_written = 0
        self.warnings: list[str] = []
        self.created = False
        # Every write below goes through `root` (no symbolic link is ever followed inside the folder). The
        # first write that fails is kept in `failure`; `on_failure` lets the run stop at once.
        self.root = Root(path)
        self.failure: RunFolderWriteError | None = None
        self.on_failure: Callable[[], None] | None = None
        self.resume_command: str | None = None  # what the user runs to continue, for write-failure messages

    # ------------------------------------------------------------------ set-up

    def prepare(self, *, create_parents: bool = True) -> None:
        """Create the folder and prove it is writable, before any API call.

        With `create_parents=False` (an explicit --output) a missing parent folder is an error: a typo in
        a path should not silently create a new tree."""
        parent = self.path.parent
        self.created = not self.path.exists()
        if self.path.is_symlink() and self.created:
            raise ConfigError(f"The output folder {self.path} is a symbolic link to nothing. Remove it, or choose "
                              "another --output.")
        if not self.created and not self.path.is_dir():
            raise ConfigError(f"The output folder {self.path} is a file, not a folder. Choose another --output.")
        if not self.path.exists() and not parent.is_dir():
            if not create_parents or parent.exists():
                raise ConfigError(f"The parent folder of the output folder {self.path} does not exist ({parent}). "
                                  "Create it, or choose another --output.")
            try:
                parent.mkdir(parents=True)
            except OSError as exc:
                raise ConfigError(f"Cannot create the output folder {self.path}: {exc.strerror}. "
                                  "Choose another --output.") from None
        try:
            self.path.mkdir(exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"Cannot create the output folder {self.path}: {exc.strerror}. Choose another "
                              "--output.") from None
        check_folder(self.path)  # links, wrong kinds, someone else's files: refused before anything is written
        try:
            self.root.probe()
        except OSError as exc:
            raise ConfigError(f"The output folder {self.path} is not writable ({exc.strerror}). Fix its "
                              "permissions or choose another --output.") from None

    def lock(self) -> None:
        """Hold an exclusive lock on the folder for this process's lifetime."""
        try:
            handle = self.root.open_lock(".lock")
        except OSError as exc:
            raise ConfigError(f"Cannot open the lock file {self.path / '.lock'} ({exc.strerror}). Fix the folder's "
                              "permissions or choose another --output.") from None
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            owner = handle.read().strip() or "another process"
            handle.close()
            raise ConfigError(f"Another sparc-cloud run ({owner}) is using {self.path}. Wait for it to finish, "
                              "or use another --output folder.") from None
        try:
            handle.seek(0)
            handle.truncate()
            handle.write(f"pid {os.getpid()}")
            handle.flush()
        except OSError as exc:
            handle.close()
            raise ConfigError(f"The output folder {self.path} is not writable ({exc.strerror}). Fix its "
                              "permissions or choose another --output.") from None
        self._lock_handle = handle

    def close(self) -> None:
        """Close the journal and release the lock."""
        with self._journal_lock:
            if self._journal:
                self._journal.close()
                self._journal = None
        if self._lock_handle:
            with contextlib.suppress(OSError):
                fcntl.flock(self._lock_handle.fileno(), fcntl.LOCK_UN)
            self._lock_handle.close()
            self._lock_handle = None

    def discard_if_unused(self) -> None:
        """Remove a folder this run created when nothing was recorded in it (a start that failed)."""
        if not self.created or self.records_written:
            return
        for name in (".lock", "run.log", "events.jsonl", "bundle.json", "journal.jsonl"):
            with contextlib.suppress(OSError):
                self.root.unlink(name)  # a link is removed itself, never its target
        with contextlib.suppress(OSError):
            self.path.rmdir()

    def archive_previous(self, run_id: str, source: Path | None = None) -> Path | None:
        """Move an earlier run's own files (never anything else in the folder) into `history/<run_id>/`
        before a fresh run starts; `source` is the file the run id was read from (for the error)."""
        if self.root.kind("bundle.json") == "missing" and self.root.kind("journal.jsonl") == "missing":
            return None
        name = check_component(run_id, "the run id", str(source or self.bundle_path))
        suffix = 1
        while self.root.kind(f"history/{name}") != "missing":
            suffix += 1
            name = f"{run_id}-{suffix}"
        try:
            self.root.mkdir(f"history/{name}")
            for item in archived_entries(self.root.entries()):
                self.root.move(item, f"history/{name}/{item}")
        except OSError as exc:
            raise self.write_failed(self.path / "history", exc, "start the run again") from None
        return self.path / "history" / name

    # ---------------------------------------------------------- write failures

    def write_failed(self, what: Path, exc: OSError, next_step: str | None = None) -> RunFolderWriteError:
        """The error for a failed write into the folder; the first one is kept in `failure` and stops the run
        (through `on_failure`)."""
        step = next_step or (f"continue with `{self.resume_command}`" if self.resume_command
                             else "continue with `sparc-cloud run ... --resume`")
        error = RunFolderWriteError(write_failure_message(self.path, what, exc, step))
        if self.failure is None:
            self.failure = error
            log.error("%s", error)
            if self.on_failure is not None:
                self.on_failure()
        return error

    def open_stream(self, name: str) -> GuardedWriter:
        """A log or event file of the folder, opened for appending without following links. A write that
        fails is recorded as the run's `failure` (the run stops) and never raises or prints a traceback."""
        path = self.path / name
        try:
            handle = self.root.open_append(name)
        except OSError as exc:
            raise self.write_failed(path, exc) from None

        def failed(exc: OSError) -> None:
            self.write_failed(path, exc)

        return GuardedWriter(handle, failed)

    # ----------------------------------------------------------------- journal

    def _append_line(self, item: dict[str, Any]) -> int:
        line = json.dumps(item, ensure_ascii=False) + "\n"
        with self._journal_lock:
            if self._journal is None:
                self._journal = self.root.open_append(self.journal_path.name)
            self._journal.write(line)
            self._journal.flush()
        return len(line.encode("utf-8"))

    def append_journal(self, run_id: str, record: AgentRecord) -> None:
        """One line per finished agent, flushed at once: the checkpoint.

        A flushed line is in the operating system's hands and survives the process being killed; `sync()`
        (called at each phase end, before the bundle is written) makes it survive a power cut too. Thread-safe."""
        self.journal_bytes += self._append_line({"run_id": run_id, "record": record.model_dump(mode="json")})
        self.records_written += 1

    def append_run_header(self, bundle: Bundle) -> None:
        """The first line of a run's journal: enough to rebuild the bundle when `bundle.json` is missing."""
        header = {"project": bundle.project, "project_source": bundle.project_source, "started_at": bundle.started_at,
                  "backend": bundle.backend}
        self.journal_bytes += self._append_line({"run_id": bundle.run_id, "run": header})

    def append_task_mark(self, run_id: str, mark: TaskMark) -> None:
        """A line saying an agent is creating (or has created) a paid cloud task, so a resume can find it."""
        self.journal_bytes += self._append_line({"run_id": run_id, "task": asdict(mark)})

    def append_dropped(self, run_id: str, ids: list[str]) -> None:
        """A line saying these agents left the plan: a resume no longer brings their records back."""
        self.journal_bytes += self._append_line({"run_id": run_id, "dropped": ids})

    def set_aside(self, run_id: str, phase: int, ids: list[str]) -> str | None:
        """Move the files of agents that left the plan (`<id>.md`, `.patch`, `.json`) out of the phase folder into
        `history/<run_id>-dropped/<phase folder>/`, so the folder shows only what the bundle holds; nothing is
        deleted or overwritten: a later drop goes to a fresh `history/<run_id>-dropped-2/`, `-3`, ...
        Returns the folder they went to (`history/<run_id>-dropped-2/`), None when there was nothing to move."""
        folder = phase_dir(phase)
        run = check_component(run_id, "the run id", str(self.bundle_path))
        names = []
        for aid in ids:
            check_component(aid, "an agent id", str(self.journal_path))
            names += [f"{aid}{suffix}" for suffix in (".md", ".patch", ".json")
                      if self.root.kind(f"{folder}/{aid}{suffix}") == "file"]
        if not names:
            return None
        drop, suffix = f"{run}-dropped", 1
        while self.root.kind(f"history/{drop}") != "missing":
            suffix += 1
            drop = f"{run}-dropped-{suffix}"
        base = f"history/{drop}/{folder}"
        for name in names:
            try:
                self.root.mkdir(base)
                self.root.move(f"{folder}/{name}", f"{base}/{name}")
            except OSError as exc:
                raise self.write_failed(self.path / folder / name, exc) from None
        return f"history/{drop}/"

    def sync(self) -> None:
        """fsync the journal."""
        with self._journal_lock:
            if self._journal is not None:
                os.fsync(self._journal.fileno())

    def read_journal(self, run_id: str | None, cost: Callable[[AgentRecord], float] | None = None) -> JournalState:
        """What the journal says about `run_id` (None: the run the journal's header names), read line by line.

        `cost` prices a record for the ledger (default: the cost it recorded when it ran).
        A damaged line (a run killed while writing it) is skipped with a warning; that agent runs again."""
        state = JournalState(run_id=run_id)
        if not self.journal_path.exists():
            return state
        with self.journal_path.open("r", encoding="utf-8", errors="replace") as handle:
            for number, line in enumerate(handle, 1):
                if not line.strip():
                    continue
                try:
                    item: Any = json.loads(line)
                    state.take(item, cost)
                    if "record" in item and item.get("run_id") == state.run_id:  # its names may become paths
                        check_record_names(state.records[item["record"]["id"]], f"line {number} of {self.journal_path}")
                except (ValueError, KeyError, TypeError, AttributeError):
                    warning = (f"warning: line {number} of {self.journal_path} is damaged (a run was probably killed "
                               "while writing it); it was ignored and that agent will run again")
                    self.warnings.append(warning)
                    log.warning(warning)
        return state

    # ------------------------------------------------------------------ bundle

    def load_bundle(self) -> Bundle:
        """The bundle, validated (and every name in it that may become a path checked)."""
        bundle = load_bundle(self.bundle_path)
        check_bundle_names(bundle, str(self.bundle_path))
        return bundle

    def write_bundle(self, bundle: Bundle) -> None:
        """Atomically (temp, fsync, rename), after the journal is on disk."""
        try:
            self.sync()
            self.root.atomic_write(self.bundle_path.name, bundle_bytes(bundle), mode=0o600)
        except OSError as exc:
            raise self.write_failed(self.bundle_path, exc) from None

    # ---------------------------------------------------------------- markdown

    def apply_edits(self, records: dict[str, AgentRecord]) -> list[str]:
        """Take the user's edits of completed agents' Markdown (the review gate) into their records.

        The text below the output marker replaces `output_text`; the record says `edited: true` with the
        new text's hash. Returns the ids of edited records."""
        edited = []
        for record in records.values():
            if record.status != "completed":
                continue
            path = self.output_path(record)
            try:
                text = path.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError):
                continue
            body = split_output(text)
            if body is None:
                continue
            original = record.output_text if record.output_text.endswith("\n") else record.output_text + "\n"
            if body != original:
                record.output_text = body
                record.edited = True
                record.edited_hash = "sha256:" + hashlib.sha256(body.encode("utf-8")).hexdigest()
                edited.append(record.id)
            if self._apply_contract_edit(record) and record.id not in edited:
                edited.append(record.id)
        return edited

    def _apply_contract_edit(self, record: AgentRecord) -> bool:
        """Take an edited `<agent>.json` (the contract) into the record, validated; a broken one is a ConfigError
        that names the file and leaves every record as it was."""
        if record.output_json is None or record.contract not in CONTRACTS:
            return False
        path = self.output_path(record, ".json")
        try:
            raw = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            return False
        try:
            data = json.loads(raw)
        except ValueError as exc:
            raise ConfigError(f"{path} is not valid JSON ({exc}). Fix it, or delete it to keep the agent's own "
                              "contract.") from None
        if data == record.output_json:
            return False
        try:
            model = CONTRACTS[str(record.contract)].model_validate(data)
        except ValidationError as exc:
            first = exc.errors(include_url=False)[0]
            where = ".".join(str(p) for p in first["loc"]) or "the top level"
            raise ConfigError(f"{path} breaks the {record.contract} contract at {where}: {first['msg']}. Fix it, or "
                              "delete it to keep the agent's own contract.") from None
        record.output_json = model.model_dump(mode="json")
        # the prose follows the contract: the next phases' prompts, the report and export read `output_text`
        record.output_text = render_markdown(model)
        record.edited = True
        record.edited_hash = "sha256:" + hashlib.sha256(raw.encode("utf-8")).hexdigest()
        self.write_outputs(record)  # its .md now shows what the edited contract says
        return True

    def output_path(self, record: AgentRecord, suffix: str = ".md") -> Path:
        """`phase-1-specification/p1-research-1.md` (the id and phase are checked before they become a path)."""
        check_record_names(record, f"the record of agent {record.id!r}")
        return self.path / phase_dir(record.phase) / f"{record.id}{suffix}"

    def write_outputs(self, record: AgentRecord) -> None:
        """The readable Markdown of an agent, its diff as a .patch, its contract as .json."""
        # The header is built from names a project file or a server chose: control characters are escaped so
        # `cat`-ing the file cannot drive the terminal (the output below the marker is the model's text, kept
        # byte for byte so the review gate can tell an edit from the original).
        title, backend, model = (_header_value(v) for v in (record.title, record.backend, record.model))
        header = [
            f"# {record.id}: {title}",
            "",
            f"- status: {record.status}",
            f"- backend / model: {backend} / {model}",
            f"- tokens: {record.usage.total_tokens} (prompt {record.usage.prompt_tokens}, "
            f"output {record.usage.output_tokens})",
            f"- latency: {record.latency_s:.2f} s, attempts: {record.attempts}",
        ]
        if record.task_id:
            header.append(f"- Task: {_header_value(record.task_id)}")
        if record.error:
            header.append(f"- error: {_header_value(record.error)}")
        if record.diff:
            header.append(f"- diff: {record.id}.patch")
        if record.output_json is not None:
            repaired = " (after one repair turn)" if record.contract_repaired else ""
            header.append(f"- {record.contract or 'contract'}: {record.id}.json, validated{repaired}")
        elif record.contract_errors:
            header.append(f"- contract broken: {_header_value('; '.join(record.contract_errors[:3]))}")
        contract = json.dumps(record.output_json, indent=2) + "\n" if record.output_json is not None else None
        text = "\n".join(header) + "\n\n" + OUTPUT_MARKER + "\n\n" + record.output_text
        if not text.endswith("\n"):
            text += "\n"
        for suffix, data in ((".md", text), (".patch", record.diff), (".json", contract)):
            if data:
                path = self.output_path(record, suffix)
                try:
                    self.root.atomic_write(path.relative_to(self.path).as_posix(), data, mode=0o600)
                except OSError as exc:
                    raise self.write_failed(path, exc) from None
