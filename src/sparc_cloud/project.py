"""Project definitions: the TOML model, loading with clear errors, and the built-in projects."""

from __future__ import annotations

import re
import tomllib
from importlib import resources
from pathlib import Path
from string import Template
from typing import Any
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from sparc_cloud.backends.registry import (
    DEFAULT_BACKEND,
    DEFAULT_MODEL,
    ENDPOINT_KINDS,
    EXAMPLE_MODEL,
    KINDS,
    PHASE_DEFAULTS,
    fit_model,
    kind_name,
    known_names,
    split_model,
)
from sparc_cloud.backends.registry_fields import ProviderTables
from sparc_cloud.catalog import builtin_projects, builtin_text
from sparc_cloud.contracts import MAX_COMPONENTS, name_key
from sparc_cloud.contracts import Component as ArchComponent
from sparc_cloud.errors import ConfigError
from sparc_cloud.redact import hide_userinfo
from sparc_cloud.terminal import ECHO_LIMIT, clip

Backend = str  # a backend name: a built-in one (backends/registry.py) or a `[backends.NAME]` table

TEMPLATE_NAMES = ("system", "research", "synthesis", "pseudocode", "architecture", "component", "integration",
                  "completion")
COMMON_VARS = {"project_name", "goal", "description", "components_list"}
TEMPLATE_VARS: dict[str, set[str]] = {
    "system": COMMON_VARS,
    "research": COMMON_VARS | {"topic", "topic_index", "topic_count"},
    "synthesis": COMMON_VARS | {"research_notes"},
    "pseudocode": COMMON_VARS | {"specification"},
    "architecture": COMMON_VARS | {"specification", "pseudocode", "expected_components"},
    "component": COMMON_VARS | {"component_name", "component_description", "component_index", "specification",
                                "pseudocode", "architecture"},
    "integration": COMMON_VARS | {"specification", "pseudocode", "architecture", "component_outputs"},
    "completion": COMMON_VARS | {"specification", "pseudocode", "architecture", "implementation",
                                 "acceptance_criteria"},
}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class Component(_Strict):
    """One thing to build in phase 4 (its name follows the architecture contract's rules for a name: the
    architecture must include it under that name)."""

    name: str = Field(min_length=1, max_length=80)
    description: str = Field(min_length=1)

    @field_validator("name")
    @classmethod
    def _printable(cls, name: str) -> str:
        return ArchComponent.check_name(name)


class Research(_Strict):
    """Phase 1 research topics (one agent each)."""

    topics: list[str] = Field(min_length=1)

    @field_validator("topics")
    @classmethod
    def _unique(cls, topics: list[str]) -> list[str]:
        if any(not t.strip() for t in topics):
            raise ValueError("topics must not be empty strings")
        seen = {t.lower() for t in topics}
        if len(seen) != len(topics):
            raise ValueError("topics must be unique (two agents would get the same id and prompt)")
        return topics


class PhaseConfig(_Strict):
    """Backend and model of one phase."""

    backend: Backend = DEFAULT_BACKEND
    model: str = DEFAULT_MODEL
    synthesis_model: str | None = None
    synthesis_backend: Backend | None = None  # set from `synthesis_model = "BACKEND/MODEL"`; else `backend`

    def split(self) -> None:
        """Apply `BACKEND/MODEL` model names: the part before the first `/` becomes the backend."""
        prefix, model = split_model(self.model)
        if prefix is not None:
            self.backend, self.model = prefix, model
        if self.synthesis_model is not None:
            prefix, model = split_model(self.synthesis_model)
            if prefix is not None:
                self.synthesis_backend, self.synthesis_model = prefix, model


def _phase(name: str) -> PhaseConfig:
    backend, model, synthesis = PHASE_DEFAULTS[name]
    return PhaseConfig(backend=backend, model=model, synthesis_model=synthesis)


class Phases(_Strict):
    """The five phases, by name."""

    specification: PhaseConfig = Field(default_factory=lambda: _phase("specification"))
    pseudocode: PhaseConfig = Field(default_factory=lambda: _phase("pseudocode"))
    architecture: PhaseConfig = Field(default_factory=lambda: _phase("architecture"))
    refinement: PhaseConfig = Field(default_factory=lambda: _phase("refinement"))
    completion: PhaseConfig = Field(default_factory=lambda: _phase("completion"))

    @model_validator(mode="after")
    def _fit_models(self) -> Phases:
        for cfg in (self.specification, self.pseudocode, self.architecture, self.refinement, self.completion):
            cfg.model = fit_model(cfg.backend, cfg.model)
        return self


class Limit(_Strict):
    """A rate-limit override."""

    per_minute: float = Field(gt=0)
    burst: int = Field(default=1, ge=1)


class Endpoint(_Strict):
    """`[backends.NAME]`: another endpoint of a kind that talks to any URL (`registry.ENDPOINT_KINDS`)."""

    kind: str
    base_url: str
    api_key_env: str | None = None  # the environment variable holding its API key; unset: no key is sent
    requests_per_minute: float | None = Field(default=None, gt=0)
    tokens_per_minute: float | None = Field(default=None, gt=0)
    prices: dict[str, tuple[float, float]] = Field(default_factory=dict)  # model -> USD per million (in, out)

    @field_validator("kind")
    @classmethod
    def _kind(cls, kind: str) -> str:
        if kind not in ENDPOINT_KINDS:
            raise ValueError(f"unknown kind {kind!r}; an endpoint table may be of kind {', '.join(ENDPOINT_KINDS)}")
        return kind

    @field_validator("base_url")
    @classmethod
    def _url(cls, url: str) -> str:
        shown = clip(hide_userinfo(url))
        if any(ord(c) < 32 or 127 <= ord(c) < 160 for c in url):
            raise ValueError(f"base_url {shown!r} holds a control character (an escape, a newline); write the URL "
                             "alone, e.g. http://localhost:11434/v1")
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError as exc:
            raise ValueError(f"base_url {shown!r} is not a usable URL ({exc}); e.g. http://localhost:11434/v1") \
                from None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"base_url {shown!r} is not an http(s) URL with a host (e.g. http://localhost:11434/v1)")
        if port == 0:
            raise ValueError(f"base_url {shown!r} has port 0; give the port the server listens on (1 to 65535)")
        return url.rstrip("/")

    @field_validator("api_key_env")
    @classmethod
    def _env_name(cls, name: str | None) -> str | None:
        if name is not None and not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
            raise ValueError(f"api_key_env {name!r} is not an environment variable name (it names the variable, "
                             "never the key itself)")
        return name


class Project(ProviderTables, _Strict):
    """A validated project definition. Each provider's own table (`[NAME]`) comes from `ProviderTables`."""

    name: str = Field(min_length=1, max_length=80)
    goal: str = Field(min_length=1)
    description: str = ""
    research: Research
    components: list[Component] = Field(default_factory=list)  # none: the architecture decides phase 4's split
    phases: Phases = Field(default_factory=Phases)
    limits: dict[str, Limit] = Field(default_factory=dict)
    prompts: dict[str, str] = Field(default_factory=dict)
    backends: dict[str, Endpoint] = Field(default_factory=dict)

    @field_validator("backends")
    @classmethod
    def _endpoint_names(cls, backends: dict[str, Endpoint]) -> dict[str, Endpoint]:
        for name, endpoint in backends.items():
            if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_-]*", name):
                raise ValueError(f"backend name {name!r}: use letters, digits, '_' and '-' only")
            if name in KINDS and name != endpoint.kind:
                raise ValueError(f"[backends.{name}] cannot be of kind {endpoint.kind!r}: {name!r} is the built-in "
                                 f"{name} backend; give the table another name")
        return backends

    @model_validator(mode="after")
    def _backend_names(self) -> Project:
        endpoints = {name: e.kind for name, e in self.backends.items()}
        for phase in ("specification", "pseudocode", "architecture", "refinement", "completion"):
            cfg: PhaseConfig = getattr(self.phases, phase)
            cfg.split()
            for name in (cfg.backend, cfg.synthesis_backend):
                if name is not None and kind_name(name, endpoints) is None:
                    raise ValueError(
                        f"phases.{phase} names backend {name!r}, which is not known. Known backends: "
                        f"{', '.join(known_names(endpoints))}. Write a model as BACKEND/MODEL (e.g. {EXAMPLE_MODEL}), "
                        f"or add a [backends.{name}] table with kind = \"{ENDPOINT_KINDS[0]}\" and base_url")
        return self

    def endpoint_kinds(self) -> dict[str, str]:
        """The project's own backend names -> their kinds."""
        return {name: e.kind for name, e in self.backends.items()}

    def backends_used(self) -> list[str]:
        """The backend names the five phases use, in phase order, each once."""
        names: list[str] = []
        for cfg in (self.phases.specification, self.phases.pseudocode, self.phases.architecture,
                    self.phases.refinement, self.phases.completion):
            for name in (cfg.backend, cfg.synthesis_backend):
                if name is not None and name not in names:
                    names.append(name)
        return names

    @field_validator("name")
    @classmethod
    def _name(cls, name: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name):
            raise ValueError("use letters, digits, '.', '_' and '-' only (it names the run folder)")
        return name

    @field_validator("components")
    @classmethod
    def _unique_components(cls, components: list[Component]) -> list[Component]:
        names = [name_key(c.name) for c in components]
        if len(set(names)) != len(names):
            raise ValueError("component names must be unique (two agents would get the same prompt)")
        if len(components) > MAX_COMPONENTS:
            raise ValueError(f"the project lists {len(components)} components, but an architecture may have at most "
                             f"{MAX_COMPONENTS} (phase 4 runs one agent per component) and must include every "
                             f"component the project lists, so phase 3 could never succeed. List at most "
                             f"{MAX_COMPONENTS} components (merge related ones), or leave [[components]] out and let "
                             "the architect decide the split")
        return components

    @field_validator("prompts")
    @classmethod
    def _templates(cls, prompts: dict[str, str]) -> dict[str, str]:
        for name, text in prompts.items():
            if name not in TEMPLATE_VARS:
                raise ValueError(f"unknown template {name!r}; templates are {', '.join(TEMPLATE_NAMES)}")
            template = Template(text)
            if not template.is_valid():
                raise ValueError(f"template {name!r} has a malformed placeholder (use ${{name}}; write $$ for $)")
            unknown = set(template.get_identifiers()) - TEMPLATE_VARS[name]
            if unknown:
                allowed = ", ".join(sorted(TEMPLATE_VARS[name]))
                raise ValueError(f"template {name!r} names unknown variable(s) "
                                 f"{', '.join(sorted(unknown))}; it may use: {allowed}")
        return prompts


def _line_of(text: str, loc: tuple[int | str, ...]) -> int | None:
    """Best effort: the line where the innermost named key of `loc` appears."""
    names = [p for p in loc if isinstance(p, str)]
    for name in reversed(names):
        pattern = re.compile(rf"^\s*(\[+\s*)?[\"']?{re.escape(name)}[\"']?\s*(=|\]|\.)", re.MULTILINE)
        match = pattern.search(text)
        if match:
            return text.count("\n", 0, match.start()) + 1
    return None


def _describe(error: dict[str, Any]) -> str:
    kind, msg = error["type"], error["msg"]
    if kind == "extra_forbidden":
        return "is not a known field (check the spelling; see examples/memory-extension.toml)"
    if kind == "missing":
        return "is required but missing"
    if kind.endswith("_type") or kind.endswith("_parsing"):
        return clip(f"has the wrong type: {str(msg).lower()} (got {clip(repr(error.get('input')))})",
                    2 * ECHO_LIMIT)
    return clip(str(msg).removeprefix("Value error, "), 2 * ECHO_LIMIT)


def parse_project(text: str, source: str) -> Project:
    """Validate project TOML text; `source` names the file in errors."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"Project file {source} is not valid TOML: {exc}. Fix the syntax there.") from None
    try:
        return Project.model_validate(data)
    except ValidationError as exc:
        problems = []
        for error in exc.errors()[:5]:
            field = clip(".".join(str(p) for p in error["loc"]) or "(top level)")
            line = _line_of(text, error["loc"])
            where = f" (line {line})" if line else ""
            problems.append(f"field '{field}'{where} {_describe(dict(error))}")
        more = f" (and {len(exc.errors()) - 5} more)" if len(exc.errors()) > 5 else ""
        raise ConfigError(f"Project file {source} is invalid: " + "; ".join(problems) + more + ".") from None


def load_project(ref: str) -> tuple[Project, str]:
    """A built-in name or a path -> (project, where it came from)."""
    path = Path(ref)
    if path.suffix == ".toml" or path.exists() or "/" in ref:
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise ConfigError(f"Project file {path} does not exist. Give a path to a TOML file or one of the "
                              f"built-in projects: {', '.join(builtin_projects())}.") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"Project file {path} cannot be read: {exc}.") from None
        return parse_project(text, str(path)), str(path)
    builtins = builtin_projects()
    if ref not in builtins:
        raise ConfigError(f"No built-in project named {ref!r} and no such file. Built-in projects: "
                          f"{', '.join(builtins)}; or give a path to a .toml file.")
    text = builtin_text(ref)
    return parse_project(text, f"built-in project {ref}"), f"builtin:{ref}"


def load_templates(project: Project) -> dict[str, Template]:
    """The prompt templates: the project's overrides, else the packaged ones."""
    out: dict[str, Template] = {}
    for name in TEMPLATE_NAMES:
        text = project.prompts.get(name)
        if text is None:
            text = resources.files("sparc_cloud.prompts").joinpath(f"{name}.md").read_text(encoding="utf-8")
        out[name] = Template(text)
    return out
