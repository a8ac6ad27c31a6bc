"""`sparc-cloud init NAME`: a commented project file to start from."""

from __future__ import annotations

import re
from pathlib import Path

from sparc_cloud.errors import ConfigError
from sparc_cloud.safefs import Root

TEMPLATE = '''# {name}: a sparc-cloud project. Run it with:
#   sparc-cloud run --project {path} --backend sim     (the simulator, no account needed)
#   sparc-cloud run --project {path}                   (your Gemini and Codex accounts)
# Every field is checked when the file is loaded; unknown fields are errors.

name = "{name}"                       # letters, digits, '.', '_', '-': it names the run folder
goal = "One sentence: what should exist at the end?"
description = """
A paragraph or two of context for every agent: who it is for, constraints, what exists already.
"""

[research]
# Phase 1 runs one research agent per topic in parallel, then a synthesis agent writes the specification.
topics = [
    "First topic to research",
    "Second topic to research",
]

# Phase 4 runs one Codex Cloud task per component, then an integration task. Add as many as you need.
[[components]]
name = "Core"
description = "What this component does and its interface."

[[components]]
name = "Storage"
description = "What this component does and its interface."

# Models and backends per phase (these are the defaults; delete what you do not change). Any model may be
# written BACKEND/MODEL: "openai/gpt-4.1" (OPENAI_API_KEY), or "local/llama3.1:8b" with a [backends.local]
# table (kind = "openai", base_url = "http://localhost:11434/v1"); see docs/BACKENDS.md.
[phases.specification]
model = "gemini-2.5-flash"            # research agents
synthesis_model = "gemini-2.5-pro"    # the agent that writes the specification

[phases.pseudocode]
model = "gemini-2.5-flash"

[phases.architecture]
model = "gemini-2.5-pro"

[phases.refinement]
backend = "codex"                     # or "gemini" for text-only implementation notes

[phases.completion]
model = "gemini-2.5-pro"

[codex]
environment = "my-environment"        # a Codex environment id or name (`sparc-cloud codex envs` lists yours)
# branch = "main"                    # default: --branch, else this checkout's branch, else main

# Optional: rate limits you know better than the defaults (requests per minute, burst).
# [limits."gemini-2.5-pro"]
# per_minute = 3
# burst = 3

# Optional: fall back from pro to flash when pro's daily quota runs out.
# [gemini]
# fallback = true
# generation_config = {{ temperature = 0.4 }}

# Optional: replace a prompt template (system, research, synthesis, pseudocode, architecture, component,
# integration, completion). Variables are written ${{name}}; unknown variables are errors.
# [prompts]
# research = """Research ${{topic}} for ${{project_name}}: ${{goal}}"""
'''


MAX_NAME = 80  # the project file's own limit on `name` (it names the run folder)


def write_project(name: str, directory: Path) -> Path:
    """Write `<directory>/<name>.toml`; never overwrite (not even through a link left where it goes)."""
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name):
        raise ConfigError(f"Project name {name!r}: use letters, digits, '.', '_' and '-' only.")
    if len(name) > MAX_NAME:
        raise ConfigError(f"Project name {name[:20]}... is {len(name)} characters long; a project name has at most "
                          f"{MAX_NAME} (it names the run folder). Choose a shorter name.")
    path = directory / f"{name}.toml"
    try:
        Root(directory).create_new(path.name, TEMPLATE.format(name=name, path=path))
    except OSError as exc:
        raise ConfigError(f"Cannot write {path}: {exc.strerror}. Check that {directory} is a folder you can write "
                          "to (--dir).") from None
    return path
