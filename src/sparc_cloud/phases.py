"""The SPARC phases as data: each phase's agents, prompts, dependencies and output contract -> a Plan.

`PHASE_DEFS` is the one declarative list: a phase is an entry (number, name, the variable its main output
fills in later prompts, its contract, and how it expands into agents) plus its prompt template(s). Phase 4
expands from the architecture's contract when there is one: one agent per component, ordered by `depends_on`,
then the integration agent; the plan is rebuilt once the architecture is known (`build_plan(architecture=)`)."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from string import Template
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ValidationError

from sparc_cloud.contracts import (
    Architecture,
    Completion,
    Component,
    Specification,
    check_covers,
    check_criteria,
    name_key,
    order_components,
    resolver,
    slug,
    unique_slugs,
)
from sparc_cloud.errors import ConfigError
from sparc_cloud.project import Backend, Project

if TYPE_CHECKING:
    from sparc_cloud.bundle import AgentRecord

MAX_EMBEDDED_DIFF = 20_000
ARCHITECT = "p3-architecture"
# the agents that answer with a contract (`AgentSpec.contract` below), for records read back from a run folder
CONTRACT_AGENTS = {"p1-synthesis": "specification", "p2-pseudocode": "pseudocode", ARCHITECT: "architecture",
                   "p5-completion": "completion"}
BASE_IDS = ("p1-synthesis", "p2-pseudocode", ARCHITECT)


@dataclass(frozen=True)
class AgentSpec:
    """One agent of the plan: what it runs on and what it needs."""

    id: str
    phase: int
    backend: Backend
    model: str
    template: str
    title: str
    depends_on: tuple[str, ...] = ()
    static_vars: tuple[tuple[str, str], ...] = ()
    contract: str | None = None  # the contract its answer must meet (contracts.CONTRACTS), None: free text


@dataclass(frozen=True)
class PhaseDef:
    """One phase: its number and names, the prompt variable its main agent's output fills, and its agents."""

    number: int
    key: str
    title: str
    expand: Callable[[Project, Architecture | None], list[AgentSpec]]
    provides: str | None = None  # the variable later prompts read the main agent's output as
    main: str | None = None  # the agent whose output that is


def _research(project: Project, _: Architecture | None) -> list[AgentSpec]:
    spec = project.phases.specification
    topics = project.research.topics
    agents = [AgentSpec(f"p1-research-{i}", 1, spec.backend, spec.model, "research", f"Research: {topic}", (),
                        (("topic", topic), ("topic_index", str(i)), ("topic_count", str(len(topics)))))
              for i, topic in enumerate(topics, 1)]
    agents.append(AgentSpec("p1-synthesis", 1, spec.synthesis_backend or spec.backend,
                            spec.synthesis_model or spec.model, "synthesis", "Specification (synthesis)",
                            tuple(a.id for a in agents), contract="specification"))
    return agents


def _pseudocode(project: Project, _: Architecture | None) -> list[AgentSpec]:
    cfg = project.phases.pseudocode
    return [AgentSpec("p2-pseudocode", 2, cfg.backend, cfg.model, "pseudocode", "Pseudocode", ("p1-synthesis",),
                      contract="pseudocode")]


def _architecture(project: Project, _: Architecture | None) -> list[AgentSpec]:
    cfg = project.phases.architecture
    return [AgentSpec(ARCHITECT, 3, cfg.backend, cfg.model, "architecture", "Architecture",
                      ("p1-synthesis", "p2-pseudocode"), contract="architecture")]


def _describe(description: str, comp: Component | None) -> str:
    if comp is None:
        return description
    lines = [description or comp.responsibility]
    if description and comp.responsibility and comp.responsibility != description:
        lines.append(f"Responsibility (from the architecture): {comp.responsibility}")
    for label, items in (("Files", comp.files), ("Interfaces", comp.interfaces), ("Builds on", comp.depends_on),
                         ("Tests", comp.tests)):
        if items:
            lines.append(f"{label}: " + "; ".join(items))
    return "\n".join(lines)


def component_ids(project: Project, architecture: Architecture | None) -> list[tuple[str, str, str, Component | None]]:
    """(agent id, name, description, the architecture's component) for phase 4, in build order.

    The project's own components keep their ids (`p4-component-N`, as run folders of earlier versions have
    them); the architecture's other components get `p4-<slug of the name>`: lower-case, bounded, unique, safe as
    a file name whatever the model wrote."""
    listed = {name_key(c.name): (f"p4-component-{i}", c.name, c.description)
              for i, c in enumerate(project.components, 1)}
    if architecture is None:
        return [(aid, name, desc, None) for aid, name, desc in listed.values()]
    ordered = order_components(architecture.components)
    mine: dict[int, tuple[str, str, str]] = {}
    for comp in ordered:  # a listed component: same name, else the one listed name with the same slug
        key = name_key(comp.name)
        if key not in listed:
            same = [k for k in listed if slug(k) == slug(comp.name)]
            key = same[0] if len(same) == 1 else key
        if key in listed:
            mine[id(comp)] = listed.pop(key)
    taken = {"integration", *(aid.removeprefix("p4-") for aid, _, _ in mine.values()),
             *(aid.removeprefix("p4-") for aid, _, _ in listed.values())}
    slugs = unique_slugs((c.name for c in ordered if id(c) not in mine), taken)
    out: list[tuple[str, str, str, Component | None]] = []
    for comp in ordered:
        aid, name, desc = mine.get(id(comp)) or (f"p4-{slugs[name_key(comp.name)]}", comp.name, "")
        out.append((aid, name, _describe(desc, comp), comp))
    # a listed component the architecture left out (a contract checked before this version): still built
    out += [(aid, name, desc, None) for aid, name, desc in listed.values()]
    return out


def _refinement(project: Project, architecture: Architecture | None) -> list[AgentSpec]:
    cfg = project.phases.refinement
    comps = component_ids(project, architecture)
    by_comp = {id(comp): aid for aid, _, _, comp in comps if comp is not None}
    find = resolver(architecture.components) if architecture is not None else (lambda _: None)
    agents = []
    for i, (aid, name, desc, comp) in enumerate(comps, 1):
        found = (find(d) for d in (comp.depends_on if comp else []))
        builds_on = tuple(dict.fromkeys(by_comp[id(f)] for f in found if f is not None and id(f) in by_comp))
        agents.append(AgentSpec(aid, 4, cfg.backend, cfg.model, "component", f"Component: {name}",
                                (*BASE_IDS, *builds_on),
                                (("component_name", name), ("component_description", desc),
                                 ("component_index", str(i)))))
    agents.append(AgentSpec("p4-integration", 4, cfg.backend, cfg.model, "integration", "Integration",
                            (*BASE_IDS, *(a.id for a in agents))))
    return agents


def _completion(project: Project, _: Architecture | None) -> list[AgentSpec]:
    cfg = project.phases.completion
    return [AgentSpec("p5-completion", 5, cfg.backend, cfg.model, "completion", "Tests and documentation",
                      (*BASE_IDS, "p4-integration"), contract="completion")]


PHASE_DEFS: tuple[PhaseDef, ...] = (
    PhaseDef(1, "specification", "Specification", _research, "specification", "p1-synthesis"),
    PhaseDef(2, "pseudocode", "Pseudocode", _pseudocode, "pseudocode", "p2-pseudocode"),
    PhaseDef(3, "architecture", "Architecture", _architecture, "architecture", ARCHITECT),
    PhaseDef(4, "refinement", "Refinement", _refinement, "implementation", "p4-integration"),
    PhaseDef(5, "completion", "Completion", _completion),
)
PHASES: dict[int, tuple[str, str]] = {d.number: (d.key, d.title) for d in PHASE_DEFS}
GROWS_AT = 4  # the phase whose agents the architecture decides


@dataclass
class Plan:
    """All agents of a project, in phase order (phase 4 as the architecture, if known, decides)."""

    project: Project
    agents: list[AgentSpec]
    templates: dict[str, Template]
    architecture: Architecture | None = None
    by_id: dict[str, AgentSpec] = field(init=False)

    def __post_init__(self) -> None:
        self.by_id = {}
        for agent in self.agents:
            if agent.id in self.by_id:
                raise ConfigError(f"Duplicate agent id {agent.id!r} in the plan.")
            self.by_id[agent.id] = agent

    def phase_agents(self, number: int) -> list[AgentSpec]:
        """The agents of one phase."""
        return [a for a in self.agents if a.phase == number]


def phase_dir(number: int) -> str:
    """`phase-1-specification`."""
    return f"phase-{number}-{PHASES[number][0]}"


def build_plan(project: Project, templates: dict[str, Template], architecture: Architecture | None = None) -> Plan:
    """Expand a project into its agents and their dependencies (phase 4 from `architecture` when given)."""
    agents = [agent for d in PHASE_DEFS for agent in d.expand(project, architecture)]
    return Plan(project=project, agents=agents, templates=templates, architecture=architecture)


def architecture_of(records: Mapping[str, AgentRecord]) -> Architecture | None:
    """The architecture's contract in a run's records (None: no completed architecture with a contract)."""
    record = records.get(ARCHITECT)
    if record is None or record.status != "completed" or not isinstance(record.output_json, dict):
        return None
    try:
        return Architecture.model_validate(record.output_json)
    except ValidationError:
        return None


def plan_for(project: Project, templates: dict[str, Template], records: Mapping[str, AgentRecord]) -> Plan:
    """The plan as a run's records decide it (phase 4 from their architecture)."""
    return build_plan(project, templates, architecture_of(records))


@dataclass(frozen=True)
class Output:
    """What a finished agent passes on."""

    text: str
    diff: str | None = None
    data: dict[str, Any] | None = None  # the contract, when the agent has one


def _with_diff(output: Output) -> str:
    if not output.diff:
        return output.text
    diff = output.diff
    if len(diff) > MAX_EMBEDDED_DIFF:
        diff = diff[:MAX_EMBEDDED_DIFF] + f"\n... ({len(output.diff) - MAX_EMBEDDED_DIFF} more characters of diff)"
    return f"{output.text}\n\n```diff\n{diff}\n```"


def prompt_variables(plan: Plan, agent: AgentSpec, outputs: Mapping[str, Output]) -> dict[str, str]:
    """Every variable the agent's template may use, from the project and its dependencies' outputs."""
    project = plan.project
    variables = {
        "project_name": project.name,
        "goal": project.goal,
        "description": project.description.strip(),
        "components_list": ", ".join(c.name for c in project.components),
    }
    variables.update(dict(agent.static_vars))

    def text(aid: str) -> str:
        return outputs[aid].text if aid in outputs else ""

    if agent.template == "synthesis":
        variables["research_notes"] = "\n\n".join(
            f"## {plan.by_id[aid].title}\n\n{outputs[aid].text}" for aid in agent.depends_on if aid in outputs
        )
    for phase in PHASE_DEFS:
        if phase.provides and phase.main and phase.provides != "implementation":
            variables[phase.provides] = text(phase.main)
    variables["expected_components"] = _expected(project)
    variables["acceptance_criteria"] = _criteria(outputs.get("p1-synthesis"))
    if agent.template == "integration":
        variables["component_outputs"] = "\n\n".join(
            f"### {plan.by_id[aid].title}\n\n{_with_diff(outputs[aid])}"
            for aid in agent.depends_on if aid in plan.by_id and plan.by_id[aid].template == "component"
            and aid in outputs
        )
    if "p4-integration" in outputs:
        variables["implementation"] = _with_diff(outputs["p4-integration"])
    return variables


def _criteria(spec: Output | None) -> str:
    """The specification contract's acceptance criteria, one per line with its id (the completion checks each)."""
    try:
        model = Specification.model_validate(spec.data) if spec is not None and spec.data is not None else None
    except ValidationError:
        model = None
    if model is None:
        return "(the specification has no contract: check the criteria it states)"
    return "\n".join(f"- **{c.id}** ({c.requirement}): {c.text}" for c in model.acceptance_criteria)


def _expected(project: Project) -> str:
    """What the architect is told about the split into components."""
    if not project.components:
        return ("Decide the components yourself: each becomes one implementation agent, named after it, so give "
                "each a short name, and say in depends_on which components build on which.")
    listed = "\n".join(f"- {c.name}: {c.description}" for c in project.components)
    return ("The project expects at least these components (keep their names exactly; add others only where "
            f"needed):\n{listed}")


def contract_checks(plan: Plan, agent: AgentSpec, outputs: Mapping[str, Output]
                    ) -> Callable[[BaseModel], list[str]] | None:
    """The checks of an agent's contract that need the project or another phase's contract: the architecture
    covers the project's components; the completion checks each acceptance criterion of the specification."""
    if agent.contract == "architecture" and plan.project.components:
        expected = [c.name for c in plan.project.components]
        return lambda model: check_covers(model, expected) if isinstance(model, Architecture) else []
    if agent.contract == "completion":
        spec = outputs.get("p1-synthesis")
        try:
            criteria = [c.id for c in Specification.model_validate(spec.data).acceptance_criteria] \
                if spec is not None and spec.data is not None else []
        except ValidationError:
            criteria = []
        return lambda model: check_criteria(model, criteria) if isinstance(model, Completion) else []
    return None


def render_prompt(plan: Plan, agent: AgentSpec, outputs: Mapping[str, Output]) -> tuple[str, str]:
    """(system instruction, prompt) for an agent."""
    variables = prompt_variables(plan, agent, outputs)
    system = plan.templates["system"].safe_substitute(variables).strip()
    prompt = plan.templates[agent.template].safe_substitute(variables).strip()
    return system, prompt


def inputs_hash(agent: AgentSpec, system: str, prompt: str) -> str:
    """What decides whether a finished agent can be reused: backend, model and the exact prompt."""
    digest = hashlib.sha256()
    for part in (agent.backend, agent.model, system, prompt):
        digest.update(part.encode("utf-8"))
        digest.update(b"\0")
    return "sha256:" + digest.hexdigest()


def parse_phase_selection(text: str) -> list[int]:
    """`4`, `1,3`, `2-4` -> sorted phase numbers."""
    chosen: set[int] = set()
    for part in text.replace(" ", "").split(","):
        if not part:
            continue
        try:
            if "-" in part:
                lo, hi = (int(x) for x in part.split("-", 1))
                if lo > hi:
                    raise ValueError
                chosen.update(range(lo, hi + 1))
            else:
                chosen.add(int(part))
        except ValueError:
            raise ConfigError(f"--phases {text!r} is not a phase list: use e.g. 4, 1,3 or 2-4.") from None
    bad = sorted(n for n in chosen if n not in PHASES)
    if bad or not chosen:
        raise ConfigError(f"--phases {text!r}: phases are numbered {min(PHASES)} to {max(PHASES)} ("
                          + ", ".join(f"{d.number} {d.key}" for d in PHASE_DEFS) + ").")
    return sorted(chosen)
