"""Deterministic, plausible, clearly simulated content shaped by what the prompt asks for.

The same seed and prompt always give the same text, so runs, tests and benchmarks are repeatable."""

from __future__ import annotations

import hashlib
import random
import re
import textwrap

BANNER = "> Simulated output from the sparc-cloud loopback simulator (seed {seed}); not written by a model."

_SUBJECT = re.compile(r"^(Topic|Component|Project):\s*(.+)$", re.MULTILINE)

_POINTS = [
    "keep the write path append-only and make every step idempotent so a retry never duplicates state",
    "separate the transport from the domain model so the protocol can change without touching storage",
    "bound every queue and cache, and expose its size as a metric",
    "prefer cosine similarity over raw dot products for normalised embeddings",
    "store provenance (source, time, model) next to each memory so stale entries can be evicted",
    "rank retrieved memories by a blend of semantic score, recency and explicit importance",
    "cap the context budget in tokens, not characters, and summarise what does not fit",
    "version the on-disk format from day one and refuse to read newer versions",
    "make the hot path allocation-free where it matters and measure before optimising",
    "treat every external call as fallible: timeouts, retries with jitter, and clear errors",
    "keep configuration in one validated object, never scattered environment reads",
    "write the integration tests against the public interface, not the internals",
]
_RISKS = [
    "embedding drift when the model is upgraded",
    "unbounded growth of the memory store",
    "latency spikes when the index is rebuilt",
    "leaking private data into shared context",
    "protocol version skew between client and server",
]


def _rng(seed: int, prompt: str) -> random.Random:
    digest = hashlib.sha256(f"{seed}\0{prompt}".encode()).hexdigest()
    return random.Random(int(digest[:16], 16))  # noqa: S311 - content, not crypto


def subject(prompt: str, kind: str) -> str:
    """The topic, component or project the prompt is about."""
    found = {m.group(1): m.group(2).strip() for m in _SUBJECT.finditer(prompt)}
    return found.get(kind) or found.get("Topic") or found.get("Component") or found.get("Project") or "the system"


def slug(text: str) -> str:
    """`Vector storage layer` -> `vector_storage_layer`."""
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")[:40] or "module"


_HEADER = re.compile(r"SPARC phase \d+ \((\w+)\):\s*([^\n]*)", re.IGNORECASE)
_KINDS = ("research", "specification", "pseudocode", "architecture", "refinement", "integration", "completion")


def text_kind(prompt: str) -> str:
    """What a prompt asks for: its `SPARC phase N (kind): what` header (the packaged templates), else the
    kind word that comes first in its opening lines (a project's own templates)."""
    head = prompt[:400]
    match = _HEADER.search(head)
    if match:
        kind, what = match.group(1).lower(), match.group(2).lower()
        if kind == "specification":
            return "research" if what.startswith("research") else "specification"
        if kind == "refinement":
            return "integration" if what.startswith("integration") else "refinement"
        if kind in _KINDS:
            return kind
    lowered = head.lower()
    found = [(lowered.find(k), k) for k in _KINDS if k in lowered]
    return min(found)[1] if found else "answer"


def text_answer(prompt: str, seed: int) -> str:
    """A Markdown answer shaped by the kind of request (what a model route answers with)."""
    rng = _rng(seed, prompt)
    kind = text_kind(prompt)
    topic = subject(prompt, "Topic")
    project = subject(prompt, "Project")
    points = rng.sample(_POINTS, 5)
    risks = rng.sample(_RISKS, 2)
    lines = [BANNER.format(seed=seed), ""]
    if kind == "research":
        lines += [f"# Research notes: {topic}", "", "## Key findings", *[f"- {p.capitalize()}." for p in points],
                  "", "## Risks", *[f"- {r.capitalize()}." for r in risks], "",
                  "## Recommendation", f"Adopt a small, well-tested core for {topic} and measure it early."]
    elif kind == "specification":
        lines += [f"# Specification: {project}", "", "## Goals", *[f"- G{i}: {p}." for i, p in enumerate(points, 1)],
                  "", "## Functional requirements",
                  *[f"- FR{i}: the system shall {p}." for i, p in enumerate(rng.sample(_POINTS, 4), 1)],
                  "", "## Non-functional requirements", "- p95 retrieval latency under 50 ms for 100k memories.",
                  "- No data loss on crash; every write is durable before it is acknowledged.",
                  "", "## Out of scope", f"- {risks[0].capitalize()} (tracked as a risk)."]
    elif kind == "pseudocode":
        lines += [f"# Pseudocode: {project}", "", "```text",
                  "function store(memory):", "    vector <- embed(memory.text)",
                  "    id <- index.insert(vector, memory.metadata)", "    journal.append(id, memory)", "    return id",
                  "", "function retrieve(query, budget):", "    candidates <- index.search(embed(query), k = 50)",
                  "    ranked <- sort candidates by 0.7*similarity + 0.2*recency + 0.1*importance",
                  "    return take_within_token_budget(ranked, budget)", "```", "",
                  "## Notes", *[f"- {p.capitalize()}." for p in points[:3]]]
    elif kind == "architecture":
        lines += [f"# Architecture: {project}", "", "## Components",
                  "- **MCP server core**: request routing, protocol negotiation, tool registry.",
                  "- **Vector storage layer**: embeddings, ANN index, persistence.",
                  "- **Memory manager**: lifecycle, deduplication, eviction.",
                  "- **Context optimizer**: ranking and token budgeting.", "",
                  "## Data flow", "client -> MCP server -> memory manager -> vector store -> context optimizer -> client",
                  "", "## Decisions", *[f"- {p.capitalize()}." for p in points[:4]]]
    elif kind in ("refinement", "integration"):
        name = subject(prompt, "Component") if kind == "refinement" else "the integration"
        lines += [f"# Implementation notes: {name}", "", "## Modules",
                  f"- `{slug(name)}.py`: the public interface named in the architecture, with type hints.",
                  f"- `test_{slug(name)}.py`: unit tests for every rule of the pseudocode.", "",
                  "## Steps", *[f"{i}. {p.capitalize()}." for i, p in enumerate(points[:4], 1)]]
    elif kind == "completion":
        lines += [f"# Tests and documentation: {project}", "", "## Test plan",
                  "- Unit tests per component, property tests for ranking, an end-to-end test over MCP.",
                  "", "## README outline", "1. Install", "2. Configure", "3. Run the MCP server", "4. Troubleshooting",
                  "", "## Release checklist", *[f"- [ ] {p.capitalize()}." for p in points[:4]]]
    else:
        lines += ["# Answer", "", *[f"- {p.capitalize()}." for p in points]]
    return "\n".join(lines) + "\n"


def _new_file_diff(path: str, body: str) -> str:
    content = body.splitlines()
    header = f"diff --git a/{path} b/{path}\nnew file mode 100644\n--- /dev/null\n+++ b/{path}\n"
    return header + f"@@ -0,0 +1,{len(content)} @@\n" + "".join(f"+{line}\n" for line in content)


def task_result(prompt: str, seed: int) -> tuple[str, str, list[str]]:
    """(summary text, unified diff, worklog) for a coding task's prompt (a cloud task, or a refinement asked for
    as a diff)."""
    from sparc_cloud.sim import answers  # imported here: answers builds on this module

    if answers.wants_json(prompt):  # a phase with a contract on a task backend: the text is the JSON
        return answers.structured_text(prompt, seed), "", ["Writing the answer as JSON (simulated)."]
    rng = _rng(seed, prompt)
    project = slug(subject(prompt, "Project"))
    integration = text_kind(prompt) == "integration"
    if integration:
        module = "app"
        body = textwrap.dedent(f'''\
            """{project}: the assembled application (simulated by sparc-cloud)."""

            from fastapi import FastAPI

            app = FastAPI(title="{project}")


            @app.get("/health")
            def health() -> dict[str, str]:
                return {{"status": "ok"}}
            ''')
        files = {f"src/{project}/__init__.py": f'"""{project} (simulated by sparc-cloud)."""\n',
                 f"src/{project}/{module}.py": body,
                 f"tests/test_{module}.py": textwrap.dedent(f'''\
                    from {project}.app import health


                    def test_health_reports_ok() -> None:
                        assert health() == {{"status": "ok"}}
                    ''')}
        title = "Integrate the components into one application"
    else:
        name = subject(prompt, "Component")
        module = slug(name)
        cls = "".join(w.capitalize() for w in module.split("_"))
        capacity = rng.choice([256, 512, 1024, 4096])
        body = textwrap.dedent(f'''\
            """{name} (simulated by sparc-cloud)."""

            from __future__ import annotations

            from dataclasses import dataclass, field


            @dataclass
            class {cls}:
                """{name}: keeps at most `capacity` items, oldest evicted first."""

                capacity: int = {capacity}
                items: list[str] = field(default_factory=list)

                def add(self, item: str) -> None:
                    self.items.append(item)
                    del self.items[: max(0, len(self.items) - self.capacity)]

                def __len__(self) -> int:
                    return len(self.items)
            ''')
        files = {f"src/{project}/{module}.py": body,
                 f"tests/test_{module}.py": textwrap.dedent(f'''\
                    from {project}.{module} import {cls}


                    def test_{module}_evicts_oldest() -> None:
                        store = {cls}(capacity=2)
                        for item in ("a", "b", "c"):
                            store.add(item)
                        assert store.items == ["b", "c"]
                    ''')}
        title = f"Implement {name}"
    diff = "".join(_new_file_diff(path, text) for path, text in files.items())
    summary = "\n".join([
        BANNER.format(seed=seed), "", f"## {title}", "",
        *[f"- Added `{path}`." for path in files],
        f"- {rng.choice(_POINTS).capitalize()}.", "", "Tests: `pytest -q` passed in the task container (simulated).",
    ])
    worklog = [f"Reading the repository layout for {project}.", f"Writing {len(files)} file(s).",
               "Running `pytest -q`: all tests passed (simulated)."]
    return summary, diff, worklog
