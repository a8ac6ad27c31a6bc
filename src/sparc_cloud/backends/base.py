"""The backend seam: what a backend is, what it is given to run one agent, and what its registry entry holds.

A backend turns one agent's prompt into text, usage, a diff and extras written into the agent's record; it
raises from the error tree in `errors.py` and the executor turns any error into a failed record. Its registry
entry (`BackendKind`) says how to build it for a run, its `doctor` checks, default limits and prices::

    BackendKind  (one per provider: registry.KINDS)
      build(BuildContext, name) -> Backend     one per backend name a run uses
      doctor(DoctorContext, name) -> [Check]
      limits(name, endpoint), prices           defaults, under the project's and the user's
      call_key, typical_output_tokens, ...     what a dry run assumes of an agent on it
    Backend
      run(AgentCall, RunHooks)                 fill call.record (text, usage, diff, extras)
      same_place(earlier record) -> bool       may an earlier result be reused here?
      preflight()                              checks before the first agent (accounts, environments)
      describe() -> [str]                      one line per place the run reaches
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from sparc_cloud.bundle import AgentRecord
from sparc_cloud.checks import Check
from sparc_cloud.events import EventBus
from sparc_cloud.http.clock import Clock
from sparc_cloud.http.ratelimit import Key, RateLimit
from sparc_cloud.http.retry import RetryNotice
from sparc_cloud.runfolder import TaskMark

if TYPE_CHECKING:
    from sparc_cloud.clients.factory import ClientContext
    from sparc_cloud.phases import AgentSpec
    from sparc_cloud.project import Endpoint, Project
    from sparc_cloud.settings import Settings
    from sparc_cloud.sim import Simulator
    from sparc_cloud.structured import ContractAsk


@dataclass
class AgentCall:
    """One agent to run: its rendered prompt, the record its outcome goes into, and where retries are told."""

    agent: AgentSpec
    system: str
    prompt: str
    record: AgentRecord
    on_retry: Callable[[RetryNotice], None]
    on_wait: Callable[[float, str], None]
    # The contract the answer must meet: ask for it natively where the API can (schema), else put
    # `contract.instruction` in the prompt; a server that refuses the schema gets the prompt form instead.
    contract: ContractAsk | None = None


@dataclass
class RunHooks:
    """What every agent of a run shares: the event bus, the clock, and the journal of cloud tasks."""

    bus: EventBus
    clock: Clock
    run_id: str = ""
    agent_timeout_s: float = 3600.0
    attach: Mapping[str, TaskMark] = field(default_factory=dict)
    on_task: Callable[[TaskMark], None] = field(default=lambda mark: None)


class Backend(Protocol):
    """One backend of a run (built by its kind for a backend name)."""

    name: str

    def run(self, call: AgentCall, hooks: RunHooks) -> None:
        """Run the agent; write text, usage, diff and extras into `call.record`; raise a SparcError on failure."""

    def same_place(self, earlier: AgentRecord) -> bool:
        """Whether an earlier result of the same inputs may be reused here."""

    def preflight(self) -> None:
        """Checks before the first agent runs (a missing account, environment or project raises)."""

    def describe(self) -> list[str]:
        """One line per place the run will reach: URL, account, project."""


@dataclass
class BuildContext:
    """What building a run's backends needs: the shared HTTP context, the project, and where the run goes."""

    client: ClientContext
    project: Project
    run_backend: str = "live"  # "live" or "sim"
    sim_url: str | None = None  # the simulator's base URL in a `--backend sim` run
    simulator: Simulator | None = None  # the in-process simulator of a `--backend sim` run
    diff_base: Path | None = None  # `--base DIR`: the tree refinement diffs are checked against (default: empty)

    @property
    def settings(self) -> Settings:
        """The run's settings."""
        return self.client.settings


@dataclass
class DoctorContext:
    """What a backend's `doctor` checks read: settings (as given), a short-attempt client context, the project."""

    settings: Settings
    client: ClientContext
    project: Project | None = None
    environment: str | None = None


@dataclass(frozen=True)
class BackendKind:
    """A provider's registry entry."""

    name: str
    summary: str
    build: Callable[[BuildContext, str], Backend]
    doctor: Callable[[DoctorContext, str], list[Check]]
    limits: Callable[[str, Endpoint | None], Mapping[Key, RateLimit]] = field(default=lambda name, endpoint: {})
    prices: Mapping[str, tuple[float, float]] = field(default_factory=dict)  # model -> USD per million (in, out)
    # The limiter key an agent's main call takes a slot of (dry-run estimates, `--dry-run`'s Limits line).
    call_key: Callable[[str, str], Key] = field(default=lambda name, model: (name, "generate", model))
    typical_output_tokens: int = 2_000  # what a dry run assumes an agent writes
    latency_name: Callable[[str], str] = field(default=lambda model: model)  # the simulator's latency entry
    billing_note: str = ""  # a sentence for cost estimates (e.g. billed through a subscription)
    # Where the user's login stands, in a few words (added to an authentication error): None when it has none.
    login_state: Callable[[Settings], str] | None = None
