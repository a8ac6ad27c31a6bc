"""Simulated structured answers: schema-valid JSON for the phases that have a contract, derived from the prompt.

The specification's requirements and acceptance criteria come from the seeded content; the architecture keeps
the components the prompt expects (the project's list) or names its own from the project's goal; the completion
checks every acceptance criterion id the prompt's specification shows. `broken=True` (the `bad-json` fault)
leaves out the contract's main list once, so the repair path runs."""

from __future__ import annotations

import json
import re
from typing import Any

from sparc_cloud.sim.content import _POINTS, _RISKS, _rng, slug, subject, text_kind

JSON_WORDS = "answer with one json object only"  # the instruction the prompt carries when no schema is sent
_GOAL = re.compile(r"^(?:Project )?[Gg]oal:\s*(.+)$", re.MULTILINE)
_EXPECTS = re.compile(r"expects at least these components[^\n]*\n((?:- [^\n]+\n?)+)")
_CRITERION = re.compile(r"\*\*(AC[A-Za-z0-9_.-]*)\*\*")
_STOP = {"that", "this", "with", "from", "into", "over", "which", "their", "them", "when", "where", "your",
         "about", "every", "each", "able", "small", "simple", "tool", "system", "using", "make", "makes"}
KINDS = {"specification": "requirements", "pseudocode": "modules", "architecture": "components",
         "completion": "checklist"}


def wants_json(prompt: str) -> bool:
    """Whether a prompt without a schema field still asks for JSON (the schema is in the prompt)."""
    return JSON_WORDS in prompt.lower()


def contract_kind(prompt: str) -> str | None:
    """The contract a prompt's kind calls for (None: the phase answers free text)."""
    kind = text_kind(prompt)
    return kind if kind in KINDS else None


def structured_text(prompt: str, seed: int, *, broken: bool = False) -> str:
    """The JSON answer (as text) to a prompt that asks for its phase's contract."""
    kind = contract_kind(prompt) or "specification"
    data = _BUILDERS[kind](prompt, seed)
    if broken:
        data.pop(KINDS[kind], None)
    return json.dumps(data, indent=2)


def _specification(prompt: str, seed: int) -> dict[str, Any]:
    rng = _rng(seed, prompt)
    project = subject(prompt, "Project")
    points = rng.sample(_POINTS, 4)
    return {
        "summary": f"Simulated specification of {project} (sparc-cloud simulator, seed {seed}).",
        "requirements": [{"id": f"R{i}", "text": f"The system shall {p}."} for i, p in enumerate(points, 1)],
        "acceptance_criteria": [{"id": f"AC{i}", "requirement": f"R{i}",
                                 "text": f"A test shows that the system can {p}."} for i, p in enumerate(points, 1)],
        "constraints": ["p95 retrieval latency under 50 ms for 100k items.",
                        "No data loss on crash; every write is durable before it is acknowledged."],
        "open_questions": [f"How to handle {r}?" for r in rng.sample(_RISKS, 2)],
    }


def _pseudocode(prompt: str, seed: int) -> dict[str, Any]:
    return {
        "modules": [
            {"name": "store", "purpose": "durable writes", "functions": [
                {"name": "store", "signature": "store(item) -> id",
                 "steps": ["vector <- embed(item.text)", "id <- index.insert(vector, item.metadata)",
                           "journal.append(id, item)", "return id"]}]},
            {"name": "retrieve", "purpose": "ranked reads within a budget", "functions": [
                {"name": "retrieve", "signature": "retrieve(query, budget) -> items",
                 "steps": ["candidates <- index.search(embed(query), k = 50)",
                           "rank by 0.7*similarity + 0.2*recency + 0.1*importance",
                           "return take_within_token_budget(ranked, budget)"]}]},
        ],
        "notes": [f"Simulated pseudocode (seed {seed})."],
    }


def _goal_words(prompt: str) -> list[str]:
    found = _GOAL.search(prompt)
    words = re.findall(r"[A-Za-z][A-Za-z-]{3,}", found.group(1) if found else "")
    out: list[str] = []
    for word in words:
        if word.lower() not in _STOP and word.lower() not in (w.lower() for w in out):
            out.append(word)
    return out


def _component(name: str, responsibility: str, project: str, depends_on: list[str]) -> dict[str, Any]:
    module = slug(name)
    return {"name": name, "responsibility": responsibility, "files": [f"src/{project}/{module}.py"],
            "interfaces": [f"{module}.run(request) -> response"], "depends_on": depends_on,
            "tests": [f"tests/test_{module}.py"]}


def _architecture(prompt: str, seed: int) -> dict[str, Any]:
    project = slug(subject(prompt, "Project"))
    expected = _EXPECTS.search(prompt)
    if expected:
        comps = []
        for line in expected.group(1).splitlines():
            name, _, desc = line.removeprefix("- ").partition(":")
            comps.append(_component(name.strip(), desc.strip() or name.strip(), project, []))
    else:  # named from the goal: a core, a store on it, an interface on both
        words = [*_goal_words(prompt), "Domain", "Storage", "Interface"]
        core, store, face = (f"{words[0].capitalize()} core", f"{words[1].capitalize()} store",
                             f"{words[2].capitalize()} interface")
        comps = [_component(core, f"the rules and data model of {words[0].lower()}", project, []),
                 _component(store, f"keeps {words[1].lower()} durable and searchable", project, [core]),
                 _component(face, f"the {words[2].lower()} users and tools call", project, [core, store])]
    return {"summary": f"Simulated architecture (seed {seed}).", "components": comps,
            "data_flow": " -> ".join(c["name"] for c in comps),
            "decisions": [p.capitalize() + "." for p in _rng(seed, prompt).sample(_POINTS, 2)]}


def _completion(prompt: str, seed: int) -> dict[str, Any]:
    ids = list(dict.fromkeys(_CRITERION.findall(prompt))) or ["AC1"]
    return {"summary": f"Simulated completion (seed {seed}).",
            "checklist": [{"criterion": cid, "met": True, "evidence": f"tests/test_acceptance.py::test_{cid.lower()}"}
                          for cid in ids],
            "tests": ["tests/test_acceptance.py"], "documentation": "README: install, configure, run."}


_BUILDERS = {"specification": _specification, "pseudocode": _pseudocode, "architecture": _architecture,
             "completion": _completion}
