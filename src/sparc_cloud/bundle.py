"""The run record: AgentRecord / PhaseRecord / Bundle models, totals, and loading with clear errors."""

from __future__ import annotations

import json
import shlex
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic_core import to_json

from sparc_cloud.errors import BundleError
from sparc_cloud.phases import PHASES
from sparc_cloud.terminal import clip

SCHEMA_VERSION = 1
TOOL = "sparc-cloud"
AgentStatus = Literal["completed", "failed", "skipped"]
PhaseStatus = Literal["completed", "failed", "partial", "pending"]


def utc_now() -> str:
    """ISO-8601 UTC with milliseconds and a Z."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class Usage(BaseModel):
    """Tokens of one agent."""

    prompt_tokens: int = 0
    output_tokens: int = 0
    total_tokens: int = 0


class AgentRecord(BaseModel):
    """Everything about one finished (or failed, or skipped) agent."""

    model_config = ConfigDict(extra="allow")

    id: str
    phase: int
    title: str = ""
    backend: str
    model: str
    depends_on: list[str] = Field(default_factory=list)
    status: AgentStatus
    output_text: str = ""  # an agent with a contract: the Markdown rendered from it
    output_json: dict[str, Any] | None = None  # the validated contract (None where the phase has none)
    contract: str | None = None  # the contract its answer had to meet
    contract_errors: list[str] | None = None  # what the first answer broke (a repair turn followed)
    contract_repaired: bool = False  # the repair turn fixed it
    schema_fallback: str | None = None  # the server refused the native schema: "json_object" or "prompt"
    usage: Usage = Field(default_factory=Usage)
    usage_estimated: bool = False
    usage_details: dict[str, int] | None = None  # the server's token details (cached_tokens, reasoning_tokens, ...)
    latency_s: float = 0.0
    attempts: int = 0
    started_at: str | None = None
    finished_at: str | None = None
    error: str | None = None
    inputs_hash: str | None = None
    request_id: str | None = None
    fallback_from: str | None = None
    rate_limited: int = 0
    throttled_s: float = 0.0
    reused: bool = False
    edited: bool = False
    edited_hash: str | None = None
    task_id: str | None = None
    task_status: str | None = None  # a cloud task's last known status (a failed agent's task may still run)
    environment_id: str | None = None
    branch: str | None = None
    diff: str | None = None
    worklog: list[str] | None = None
    outputs: list[str] | None = None  # the raw answers when a repair turn was needed (first, repaired)
    polls: int | None = None
    detection_delay_s: float | None = None
    # Where the agent ran: "live" (the real clouds) or "sim" (the simulator). Records of one backend are never
    # reused by, or fed into, a run on the other. None in records written before this field existed.
    run_backend: str | None = None
    # What the agent cost when it ran (estimate at the prices of that moment); reused records keep it.
    cost_usd: float | None = None


class PhaseRecord(BaseModel):
    """One phase and its agents."""

    number: int
    name: str
    status: PhaseStatus = "pending"
    stale: bool = False
    stale_reason: str | None = None
    started_at: str | None = None
    finished_at: str | None = None
    agents: list[AgentRecord] = Field(default_factory=list)


class Session(BaseModel):
    """One invocation that added to the run (first run, rerun, resume)."""

    started_at: str
    finished_at: str | None = None
    mode: str
    phases: list[int]
    exit_code: int | None = None
    backend: str | None = None
    spent_usd: float = 0.0  # what this session's newly run agents cost
    ran: int = 0  # agents this session ran (not reused, not skipped)
    wall_time_s: float | None = None  # first dispatch to end of this session


class Bundle(BaseModel):
    """The whole run, as `bundle.json` stores it."""

    model_config = ConfigDict(extra="allow")

    schema_version: int = SCHEMA_VERSION
    tool: str = TOOL
    project: str
    project_source: str = ""
    run_id: str
    started_at: str
    finished_at: str | None = None
    backend: str
    phases: list[PhaseRecord] = Field(default_factory=list)
    totals: dict[str, Any] = Field(default_factory=dict)
    sessions: list[Session] = Field(default_factory=list)
    # What every agent that ran in any session of this run cost, replaced and failed ones included: the
    # journal is the ledger, so this survives kills, resumes and reruns. The budget applies to it.
    spent_usd: float = 0.0

    def records(self) -> dict[str, AgentRecord]:
        """Every agent record by id."""
        return {a.id: a for p in self.phases for a in p.agents}

    def phase(self, number: int) -> PhaseRecord | None:
        """The record of one phase, if the bundle has it."""
        return next((p for p in self.phases if p.number == number), None)


def phase_status(agents: list[AgentRecord], expected: int) -> PhaseStatus:
    """completed when every expected agent completed; failed when any failed or was skipped."""
    if not agents:
        return "pending"
    if any(a.status != "completed" for a in agents):
        return "failed"
    return "completed" if len(agents) >= expected else "partial"


def compute_totals(bundle: Bundle, wall_time_s: float | None = None) -> dict[str, Any]:
    """Tokens, agents by status, wall time."""
    records = list(bundle.records().values())
    by_status = {s: sum(1 for r in records if r.status == s) for s in ("completed", "failed", "skipped")}
    totals: dict[str, Any] = {
        "tokens": {
            "prompt_tokens": sum(r.usage.prompt_tokens for r in records),
            "output_tokens": sum(r.usage.output_tokens for r in records),
            "total_tokens": sum(r.usage.total_tokens for r in records),
        },
        "agents": {"total": len(records), **by_status},
        "agent_time_s": round(sum(r.latency_s for r in records), 3),
    }
    if wall_time_s is not None:
        totals["wall_time_s"] = round(wall_time_s, 3)
    return totals


def new_phase(number: int) -> PhaseRecord:
    """An empty record for phase `number`."""
    return PhaseRecord(number=number, name=PHASES[number][1])


def load_bundle(path: Path) -> Bundle:
    """Read and validate `bundle.json`; every problem is a BundleError that leaves the file alone.

    The bytes are validated straight into the model (no intermediate dict: a large run is held once); only a
    file that fails that is parsed again to say precisely what is wrong with it."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        journal = path.parent / "journal.jsonl"
        if journal.is_file():
            raise _journal_only(path, journal) from None
        raise BundleError(f"No bundle at {path}: run all phases first (`sparc-cloud run --project ...`).") from None
    except OSError as exc:
        raise BundleError(f"The bundle {path} cannot be read ({exc}).") from None
    try:
        bundle = Bundle.model_validate_json(raw)
    except ValidationError:
        _explain_bad_bundle(path, raw)
        raise  # not reached: _explain_bad_bundle always raises
    if bundle.tool != TOOL:
        raise BundleError(f"{path} is not a sparc-cloud bundle. Point --output at a sparc-cloud run folder.")
    if bundle.schema_version > SCHEMA_VERSION:
        raise _newer(path, bundle.schema_version)
    return bundle


def _journal_only(path: Path, journal: Path) -> BundleError:
    """bundle.json is gone but the run's journal is there: `run --resume` rebuilds the bundle from it."""
    header: dict[str, Any] = {}
    try:
        with journal.open(encoding="utf-8") as lines:
            first = json.loads(lines.readline() or "{}")
        if isinstance(first, dict) and isinstance(first.get("run"), dict):
            header = first["run"]
    except (OSError, ValueError):
        pass
    source = str(header.get("project_source") or "")
    project = source if source and Path(source).is_file() else str(header.get("project") or "PROJECT")
    command = ["sparc-cloud", "run", "--project", project, "--backend", str(header.get("backend") or "live"),
               "--output", str(path.parent), "--resume"]
    return BundleError(f"No bundle at {path}, but the run's journal ({journal}) is there: "
                       f"`{shlex.join(command)}` rebuilds the bundle from it and goes on with the run (agents that "
                       "finished are reused, not run again). Then try again.")


def bundle_bytes(bundle: Bundle) -> bytes:
    """The bundle as `bundle.json` stores it (indented JSON, UTF-8), serialised straight to bytes."""
    return to_json(bundle, indent=2)


def _newer(path: Path, version: object) -> BundleError:
    return BundleError(
        f"The bundle {path} has schema version {version!r}, newer than this sparc-cloud understands "
        f"({SCHEMA_VERSION}). Upgrade sparc-cloud (pip install -U sparc-cloud); the file was left as it is."
    )


def _explain_bad_bundle(path: Path, raw: bytes) -> None:
    """Raise the BundleError that says what is wrong with a bundle that failed validation."""
    try:
        data = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise BundleError(f"The bundle {path} cannot be read ({exc}).") from None
    except ValueError as exc:
        raise BundleError(
            f"The bundle {path} is not valid JSON ({exc}); it may have been edited or cut short. The file was left "
            "as it is: restore it, or run all phases again into a new --output folder."
        ) from None
    if not isinstance(data, dict) or data.get("tool", TOOL) != TOOL or "run_id" not in data:
        raise BundleError(f"{path} is not a sparc-cloud bundle. Point --output at a sparc-cloud run folder.")
    version = data.get("schema_version")
    if not isinstance(version, int) or version > SCHEMA_VERSION:
        raise _newer(path, version)
    try:
        Bundle.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise BundleError(f"The bundle {path} is damaged at {where}: {clip(str(first['msg']), 400)}. The file was left "
                          "as it is.") from None
    raise BundleError(f"The bundle {path} cannot be used. The file was left as it is.")
