"""Project files: the built-in project, the plan it expands into, and clear errors for broken files."""

from __future__ import annotations

from pathlib import Path

import pytest

from sparc_cloud.catalog import builtin_projects
from sparc_cloud.errors import ConfigError
from sparc_cloud.phases import Output, build_plan, parse_phase_selection, render_prompt
from sparc_cloud.project import load_project, load_templates

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "memory-extension.toml"


def test_example_file_is_the_built_in_project() -> None:
    from_path, _ = load_project(str(EXAMPLE))
    builtin, source = load_project("memory-extension")
    assert from_path == builtin and source == "builtin:memory-extension"
    assert "memory-extension" in builtin_projects()


def test_memory_extension_expands_as_the_runbook_describes() -> None:
    project, _ = load_project("memory-extension")
    plan = build_plan(project, load_templates(project))
    ids = [a.id for a in plan.agents]
    assert ids == ["p1-research-1", "p1-research-2", "p1-research-3", "p1-research-4", "p1-synthesis",
                   "p2-pseudocode", "p3-architecture", "p4-component-1", "p4-component-2", "p4-component-3",
                   "p4-component-4", "p4-integration", "p5-completion"]
    by = plan.by_id
    assert {by[f"p1-research-{i}"].model for i in range(1, 5)} == {"gemini-2.5-flash"}
    assert by["p1-synthesis"].model == "gemini-2.5-pro"
    assert by["p1-synthesis"].depends_on == ("p1-research-1", "p1-research-2", "p1-research-3", "p1-research-4")
    assert by["p2-pseudocode"].model == "gemini-2.5-flash" and by["p3-architecture"].model == "gemini-2.5-pro"
    assert {by[f"p4-component-{i}"].backend for i in range(1, 5)} == {"codex"}
    assert set(by["p4-integration"].depends_on) >= {f"p4-component-{i}" for i in range(1, 5)}
    assert by["p5-completion"].model == "gemini-2.5-pro" and "p4-integration" in by["p5-completion"].depends_on


def test_prompts_carry_the_dependencies_outputs() -> None:
    project, _ = load_project("memory-extension")
    plan = build_plan(project, load_templates(project))
    _, prompt = render_prompt(plan, plan.by_id["p1-synthesis"],
                              {f"p1-research-{i}": Output(f"NOTES-{i}") for i in range(1, 5)})
    assert all(f"NOTES-{i}" in prompt for i in range(1, 5)) and "## Research: MCP protocol" in prompt
    _, prompt = render_prompt(plan, plan.by_id["p4-integration"],
                              {"p3-architecture": Output("ARCH"), "p4-component-1": Output("C1", "diff --git a/x b/x\n")})
    assert "ARCH" in prompt and "```diff\ndiff --git a/x b/x" in prompt


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "p.toml"
    path.write_text(text, encoding="utf-8")
    return str(path)


GOOD = """name = "demo"
goal = "a demo"
[research]
topics = ["a", "b"]
[[components]]
name = "core"
description = "the core"
"""


def test_a_minimal_project_gets_default_phases(tmp_path: Path) -> None:
    project, _ = load_project(write(tmp_path, GOOD))
    assert project.phases.refinement.backend == "codex" and project.phases.specification.synthesis_model


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (GOOD + "colour = 'red'\n", r"field 'components.0.colour' \(line 8\) is not a known field"),
        ("colour = 'red'\n" + GOOD, r"field 'colour' \(line 1\) is not a known field"),
        (GOOD.replace('topics = ["a", "b"]', "topics = 3"), r"field 'research.topics' \(line 4\) has the wrong type"),
        (GOOD.replace('topics = ["a", "b"]', "topics = []"), r"field 'research.topics'.*at least 1 item"),
        (GOOD.replace('topics = ["a", "b"]', 'topics = ["a", "A"]'), "topics must be unique"),
        (GOOD + "[phases.deployment]\nmodel = 'x'\n", r"field 'phases.deployment'.*not a known field"),
        (GOOD + "[[components]]\nname = 'Core'\ndescription = 'again'\n", "component names must be unique"),
        (GOOD + "[[components]]\nname = ' core '\ndescription = 'again'\n", "component names must be unique"),
        (GOOD + "[[components]]\nname = 'a <!-- b'\ndescription = 'd'\n", "must not contain '<!--'"),
        (GOOD + "[[components]]\nname = \"red \\u001b[31m\"\ndescription = 'd'\n", "one line of printable"),
        (GOOD + "[prompts]\nresearch = 'About ${topik}'\n", r"unknown variable\(s\) topik; it may use: .*topic"),
        (GOOD + "[prompts]\nsummary = 'x'\n", "unknown template 'summary'"),
        (GOOD.replace('name = "demo"', 'name = "../etc"'), "letters, digits"),
        (GOOD.replace('goal = "a demo"\n', ""), r"field 'goal' is required"),
        ("name = [\n", "not valid TOML"),
    ],
)
def test_broken_project_files_name_file_and_field(tmp_path: Path, text: str, expected: str) -> None:
    ref = write(tmp_path, text)
    with pytest.raises(ConfigError, match=expected) as info:
        load_project(ref)
    assert ref in str(info.value)


def test_unknown_project_name_lists_the_built_ins() -> None:
    with pytest.raises(ConfigError, match="Built-in projects: memory-extension"):
        load_project("no-such-project")


def test_missing_project_path() -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_project("./nope.toml")


@pytest.mark.parametrize(("text", "phases"), [("4", [4]), ("1,3", [1, 3]), ("2-4", [2, 3, 4]), (" 5 , 1-2", [1, 2, 5])])
def test_phase_selection(text: str, phases: list[int]) -> None:
    assert parse_phase_selection(text) == phases


@pytest.mark.parametrize("text", ["0", "6", "4-2", "x", "", "1,,a"])
def test_bad_phase_selection(text: str) -> None:
    with pytest.raises(ConfigError, match="--phases"):
        parse_phase_selection(text)
