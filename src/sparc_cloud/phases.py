"""The five SPARC phases: which agents, which prompts, which dependencies -> a Plan."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from string import Template

from sparc_cloud.errors import ConfigError
from sparc_cloud.project import Backend, Project

PHASES: dict[int, tuple[str, str]] = {
    1: ("specification", "Specification"),
    2: ("pseudocode", "Pseudocode"),
    3: ("architecture", "Architecture"),
    4: ("refinement", "Refinement"),
    5: ("completion", "Completion"),
}
MAX_EMBEDDED_DIFF = 20_000


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


@dataclass(frozen=True)
class Output:
    """What a finished agent passes on."""

    text: str
    diff: str | None = None


@dataclass
class Plan:
    """All agents of a project, in phase order."""

    project: Project
    agents: list[AgentSpec]
    templates: dict[str, Template]
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


def build_plan(project: Project, templates: dict[str, Template]) -> Plan:
    """Expand a project into its agents and their dependencies."""
    p = project.phases
    agents: list[AgentSpec] = []
    research_ids = []
    for i, topic in enumerate(project.research.topics, 1):
        aid = f"p1-research-{i}"
        research_ids.append(aid)
        agents.append(AgentSpec(aid, 1, p.specification.backend, p.specification.model, "research",
                                f"Research: {topic}", (),
                                (("topic", topic), ("topic_index", str(i)),
                                 ("topic_count", str(len(project.research.topics))))))
    synth_model = p.specification.synthesis_model or p.specification.model
    agents.append(AgentSpec("p1-synthesis", 1, p.specification.synthesis_backend or p.specification.backend,
                            synth_model, "synthesis",
                            "Specification (synthesis)", tuple(research_ids)))
    agents.append(AgentSpec("p2-pseudocode", 2, p.pseudocode.backend, p.pseudocode.model, "pseudocode",
                            "Pseudocode", ("p1-synthesis",)))
    agents.append(AgentSpec("p3-architecture", 3, p.architecture.backend, p.architecture.model, "architecture",
                            "Architecture", ("p1-synthesis", "p2-pseudocode")))
    component_ids = []
    for i, comp in enumerate(project.components, 1):
        aid = f"p4-component-{i}"
        component_ids.append(aid)
        agents.append(AgentSpec(aid, 4, p.refinement.backend, p.refinement.model, "component",
                                f"Component: {comp.name}", ("p1-synthesis", "p2-pseudocode", "p3-architecture"),
                                (("component_name", comp.name), ("component_description", comp.description),
                                 ("component_index", str(i)))))
    agents.append(AgentSpec("p4-integration", 4, p.refinement.backend, p.refinement.model, "integration",
                            "Integration", ("p1-synthesis", "p2-pseudocode", "p3-architecture", *component_ids)))
    agents.append(AgentSpec("p5-completion", 5, p.completion.backend, p.completion.model, "completion",
                            "Tests and documentation", ("p1-synthesis", "p2-pseudocode", "p3-architecture",
                                                        "p4-integration")))
    return Plan(project=project, agents=agents, templates=templates)


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
    variables["specification"] = text("p1-synthesis")
    variables["pseudocode"] = text("p2-pseudocode")
    variables["architecture"] = text("p3-architecture")
    if agent.template == "integration":
        variables["component_outputs"] = "\n\n".join(
            f"### {plan.by_id[aid].title}\n\n{_with_diff(outputs[aid])}"
            for aid in agent.depends_on if aid.startswith("p4-component-") and aid in outputs
        )
    if "p4-integration" in outputs:
        variables["implementation"] = _with_diff(outputs["p4-integration"])
    return variables


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
        raise ConfigError(f"--phases {text!r}: phases are numbered 1 to 5 "
                          "(1 specification, 2 pseudocode, 3 architecture, 4 refinement, 5 completion).")
    return sorted(chosen)
