"""The typed contracts between phases: what the specification, pseudocode, architecture and completion agents
hand on, as pydantic models, each with the Markdown people read and the checks that need another phase's
contract (the architecture covers the project's components; the completion checks every acceptance criterion).

The models ignore fields a model adds and refuse what is missing or inconsistent. Their JSON Schemas are made
shallow for the servers (`json_schema`: `$defs` inlined, no `maxItems`); bounds that would need `maxItems` are
checked by validators instead, so a model never gets a schema the server refuses for its size."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Iterable
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

MAX_COMPONENTS = 24  # phase 4 runs one agent per component: an architecture may not fan out without bound
MAX_ITEMS = 200  # any other list
_ID = r"^[A-Za-z][A-Za-z0-9_.-]{0,31}$"


class _Contract(BaseModel):
    model_config = ConfigDict(extra="ignore", str_strip_whitespace=True)


def _bounded(items: list[Any], what: str, limit: int = MAX_ITEMS) -> None:
    if len(items) > limit:
        raise ValueError(f"{what}: {len(items)} items, at most {limit} are allowed")


def _unique(values: Iterable[str], what: str) -> None:
    seen: set[str] = set()
    for value in values:
        key = value.lower()
        if key in seen:
            raise ValueError(f"{what} {value!r} appears twice; each must be unique")
        seen.add(key)


class Requirement(_Contract):
    """One requirement, with an id the acceptance criteria refer to."""

    id: str = Field(pattern=_ID, description="short id, e.g. R1")
    text: str = Field(min_length=1)


class AcceptanceCriterion(_Contract):
    """A check that shows a requirement is met; the completion phase answers it by id."""

    id: str = Field(pattern=_ID, description="short id, e.g. AC1")
    requirement: str = Field(description="the id of the requirement it checks")
    text: str = Field(min_length=1)


class Specification(_Contract):
    """Phase 1's synthesis: requirements, acceptance criteria, constraints, open questions."""

    summary: str = ""
    requirements: list[Requirement] = Field(min_length=1)
    acceptance_criteria: list[AcceptanceCriterion] = Field(min_length=1)
    constraints: list[str] = Field(default_factory=list)
    open_questions: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _ids(self) -> Specification:
        for what, items in (("requirements", self.requirements), ("acceptance_criteria", self.acceptance_criteria),
                            ("constraints", self.constraints), ("open_questions", self.open_questions)):
            _bounded(list(items), what)
        _unique((r.id for r in self.requirements), "requirement id")
        _unique((c.id for c in self.acceptance_criteria), "acceptance criterion id")
        known = {r.id.lower() for r in self.requirements}
        for criterion in self.acceptance_criteria:
            if criterion.requirement.lower() not in known:
                raise ValueError(f"acceptance criterion {criterion.id} refers to requirement "
                                 f"{criterion.requirement!r}, which is not among the requirements")
        return self


class Function(_Contract):
    """One function of the pseudocode: its signature and its steps."""

    name: str = Field(min_length=1)
    signature: str = ""
    steps: list[str] = Field(min_length=1)


class Module(_Contract):
    """A module of the pseudocode and its functions."""

    name: str = Field(min_length=1)
    purpose: str = ""
    functions: list[Function] = Field(min_length=1)


class Pseudocode(_Contract):
    """Phase 2: modules -> functions -> steps."""

    modules: list[Module] = Field(min_length=1)
    notes: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _bounds(self) -> Pseudocode:
        _bounded(self.modules, "modules")
        _unique((m.name for m in self.modules), "module")
        return self


class Component(_Contract):
    """One component the architecture decides on; phase 4 builds each with one agent."""

    name: str = Field(min_length=1, max_length=80)
    responsibility: str = Field(min_length=1)
    files: list[str] = Field(default_factory=list)
    interfaces: list[str] = Field(default_factory=list)
    depends_on: list[str] = Field(default_factory=list, description="names of components this one builds on")
    tests: list[str] = Field(default_factory=list)

    @field_validator("name")
    @classmethod
    def _printable(cls, name: str) -> str:
        return cls.check_name(name)

    @staticmethod
    def check_name(name: str) -> str:
        """A component's name titles an agent on terminals and in files: no escape sequences, no line breaks, and
        no `<!--` (the Markdown files' output marker is an HTML comment; a name must never pass for it)."""
        if any(unicodedata.category(ch).startswith("C") for ch in name):
            raise ValueError("the name must be one line of printable characters")
        if "<!--" in name:
            raise ValueError("the name must not contain '<!--'")
        return name


class Architecture(_Contract):
    """Phase 3: the components, their interfaces and what builds on what."""

    summary: str = ""
    components: list[Component] = Field(min_length=1)
    data_flow: str = ""
    decisions: list[str] = Field(default_factory=list)

    @field_validator("components")
    @classmethod
    def _few(cls, components: list[Component]) -> list[Component]:
        _bounded(components, "components", MAX_COMPONENTS)
        return components

    @model_validator(mode="after")
    def _graph(self) -> Architecture:
        seen: set[str] = set()
        for comp in self.components:  # by name: two names whose slugs collide are still two components
            if name_key(comp.name) in seen:
                raise ValueError(f"component {comp.name!r} appears twice; each must be unique")
            seen.add(name_key(comp.name))
        find = resolver(self.components)
        for comp in self.components:
            for dep in comp.depends_on:
                target = find(dep)
                if target is None:
                    raise ValueError(f"component {comp.name!r} depends on {dep!r}, which is not a component")
                if target is comp:
                    raise ValueError(f"component {comp.name!r} depends on itself")
        order_components(self.components)  # raises on a cycle
        return self


class CheckItem(_Contract):
    """One acceptance criterion of the specification, met or not, with the evidence."""

    criterion: str = Field(description="the acceptance criterion's id, e.g. AC1")
    met: bool
    evidence: str = Field(min_length=1)


class Completion(_Contract):
    """Phase 5: the specification's acceptance criteria checked one by one, tests and documentation."""

    summary: str = ""
    checklist: list[CheckItem] = Field(min_length=1)
    tests: list[str] = Field(default_factory=list)
    documentation: str = ""

    @model_validator(mode="after")
    def _bounds(self) -> Completion:
        _bounded(self.checklist, "checklist")
        _unique((c.criterion for c in self.checklist), "criterion")
        return self


CONTRACTS: dict[str, type[_Contract]] = {
    "specification": Specification,
    "pseudocode": Pseudocode,
    "architecture": Architecture,
    "completion": Completion,
}


def slug(name: str, limit: int = 40) -> str:
    """`MCP server core` -> `mcp-server-core`, `Ünïcödé Name` -> `unicode-name`: NFKD-normalised with the
    combining marks dropped, then lower-case ASCII letters, digits and single dashes, at most `limit` characters;
    a name with none of those gives `component`. Safe as a file name and an agent id. Two names may give the
    same slug: `unique_slugs` tells them apart."""
    folded = "".join(ch for ch in unicodedata.normalize("NFKD", name) if not unicodedata.combining(ch))
    text = re.sub(r"[^a-z0-9]+", "-", folded.lower()).strip("-")[:limit].strip("-")
    return text or "component"


def name_key(name: str) -> str:
    """What makes two component names the same name: case and runs of white space do not count."""
    return " ".join(unicodedata.normalize("NFKC", name).casefold().split())


def unique_slugs(names: Iterable[str], taken: Iterable[str] = ()) -> dict[str, str]:
    """A distinct slug per name (keyed by `name_key`), in order: a slug already taken gets `-2`, `-3`; a name
    with no ASCII letter or digit left gets `component-N` (N: its place in the list)."""
    used = set(taken)
    out: dict[str, str] = {}
    for i, name in enumerate(names, 1):
        key = name_key(name)
        if key in out:
            continue
        base = slug(name)
        if base == "component" and not re.search(r"[a-z0-9]", name.lower()):
            base = f"component-{i}"
        candidate, n = base, 2
        while candidate in used:
            candidate, n = f"{base}-{n}", n + 1
        used.add(candidate)
        out[key] = candidate
    return out


def resolver(components: list[Component]) -> Callable[[str], Component | None]:
    """How a `depends_on` entry finds its component: by name (`name_key`), else by slug where exactly one
    component has that slug (`mcp_server_core` finds `MCP server core`)."""
    by_name = {name_key(c.name): c for c in components}
    by_slug: dict[str, list[Component]] = {}
    for comp in components:
        by_slug.setdefault(slug(comp.name), []).append(comp)

    def find(name: str) -> Component | None:
        found = by_name.get(name_key(name))
        if found is not None:
            return found
        candidates = by_slug.get(slug(name), [])
        return candidates[0] if len(candidates) == 1 else None

    return find


def order_components(components: list[Component]) -> list[Component]:
    """The components in an order where each comes after those it depends on (stable otherwise); a cycle is a
    ValueError naming it."""
    find = resolver(components)
    done: list[Component] = []
    placed: set[int] = set()
    visiting: list[Component] = []

    def visit(comp: Component) -> None:
        if id(comp) in placed:
            return
        if any(v is comp for v in visiting):
            start = next(i for i, v in enumerate(visiting) if v is comp)
            cycle = [v.name for v in visiting[start:]] + [comp.name]
            raise ValueError("components depend on each other in a cycle: " + " -> ".join(cycle))
        visiting.append(comp)
        for dep in comp.depends_on:
            target = find(dep)
            if target is not None:
                visit(target)
        visiting.pop()
        placed.add(id(comp))
        done.append(comp)

    for comp in components:
        visit(comp)
    return done


# ---------------------------------------------------------------------------------------- cross-phase checks


def check_covers(architecture: Architecture, expected: Iterable[str]) -> list[str]:
    """Errors for each component the project lists that the architecture leaves out (matched by name)."""
    find = resolver(architecture.components)
    return [f"components: the project lists the component {name!r}; the architecture must include it (same name)"
            for name in expected if find(name) is None]


def check_criteria(completion: Completion, criteria: Iterable[str]) -> list[str]:
    """Errors for each acceptance criterion of the specification the checklist leaves out, and for unknown ids."""
    wanted = list(criteria)
    if not wanted:
        return []
    have = {c.criterion.lower() for c in completion.checklist}
    known = {c.lower() for c in wanted}
    errors = [f"checklist: acceptance criterion {cid} of the specification is not checked" for cid in wanted
              if cid.lower() not in have]
    errors += [f"checklist: {item.criterion!r} is not an acceptance criterion of the specification (known: "
               f"{', '.join(wanted)})" for item in completion.checklist if item.criterion.lower() not in known]
    return errors


# ---------------------------------------------------------------------------------------- schemas


# Keywords left out of the schema sent to servers (the model checks them locally): titles and defaults are
# noise, `maxItems` is refused by some, and string bounds and patterns are not supported everywhere.
_DROPPED = ("title", "default", "maxItems", "minLength", "maxLength", "pattern")


def json_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The model's JSON Schema as servers take it: `$defs` inlined; only types, properties, required, items,
    minItems, enum and descriptions remain."""
    raw = model.model_json_schema()
    defs = raw.pop("$defs", {})

    def inline(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                return inline(defs[ref.removeprefix("#/$defs/")])
            return {k: inline(v) for k, v in node.items() if k not in _DROPPED}
        if isinstance(node, list):
            return [inline(v) for v in node]
        return node

    schema: dict[str, Any] = inline(raw)
    return schema


# ---------------------------------------------------------------------------------------- Markdown


def _bullets(items: Iterable[str]) -> list[str]:
    return [f"- {item}" for item in items]


def render_markdown(contract: BaseModel) -> str:
    """The prose people read (and the next phases' prompts quote): one Markdown document per contract."""
    out: list[str] = []
    if isinstance(contract, Specification):
        out += ["# Specification", ""] + ([contract.summary, ""] if contract.summary else [])
        out += ["## Requirements", "", *(f"- **{r.id}**: {r.text}" for r in contract.requirements), ""]
        out += ["## Acceptance criteria", "",
                *(f"- **{c.id}** ({c.requirement}): {c.text}" for c in contract.acceptance_criteria), ""]
        if contract.constraints:
            out += ["## Constraints", "", *_bullets(contract.constraints), ""]
        if contract.open_questions:
            out += ["## Open questions", "", *_bullets(contract.open_questions), ""]
    elif isinstance(contract, Pseudocode):
        out += ["# Pseudocode", ""]
        for module in contract.modules:
            out += [f"## Module {module.name}", ""] + ([module.purpose, ""] if module.purpose else [])
            for fn in module.functions:
                out += [f"### {fn.signature or fn.name}", "", *(f"{i}. {s}" for i, s in enumerate(fn.steps, 1)), ""]
        if contract.notes:
            out += ["## Notes", "", *_bullets(contract.notes), ""]
    elif isinstance(contract, Architecture):
        out += ["# Architecture", ""] + ([contract.summary, ""] if contract.summary else [])
        out += ["## Components", ""]
        for comp in contract.components:
            out += [f"### {comp.name}", "", comp.responsibility, ""]
            for label, items in (("Files", comp.files), ("Interfaces", comp.interfaces),
                                 ("Depends on", comp.depends_on), ("Tests", comp.tests)):
                if items:
                    out.append(f"- {label}: " + "; ".join(f"`{i}`" if label == "Files" else i for i in items))
            out.append("")
        if contract.data_flow:
            out += ["## Data flow", "", contract.data_flow, ""]
        if contract.decisions:
            out += ["## Decisions", "", *_bullets(contract.decisions), ""]
    elif isinstance(contract, Completion):
        out += ["# Completion", ""] + ([contract.summary, ""] if contract.summary else [])
        out += ["## Acceptance criteria", "",
                *(f"- [{'x' if c.met else ' '}] **{c.criterion}**: {'met' if c.met else 'not met'} ({c.evidence})"
                  for c in contract.checklist), ""]
        if contract.tests:
            out += ["## Tests", "", *_bullets(contract.tests), ""]
        if contract.documentation:
            out += ["## Documentation", "", contract.documentation, ""]
    else:  # pragma: no cover - every contract is listed above
        raise TypeError(f"no Markdown for {type(contract).__name__}")
    return "\n".join(out).rstrip() + "\n"
