"""Typed contracts between phases: the models, reading and repairing answers, asking natively, and phase 4
growing from the architecture's components (end to end on the simulator)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from sparc_cloud.backends.base import AgentCall, RunHooks
from sparc_cloud.backends.gemini import GeminiBackend, schema_refused
from sparc_cloud.bundle import AgentRecord
from sparc_cloud.clients.gemini import GenerateResult, Usage
from sparc_cloud.contracts import Architecture, Completion, Specification, check_criteria, json_schema, slug
from sparc_cloud.errors import ApiError
from sparc_cloud.events import EventBus
from sparc_cloud.http.clock import RealClock
from sparc_cloud.phases import build_plan, component_ids
from sparc_cloud.project import load_templates, parse_project
from sparc_cloud.redact import SecretRegistry
from sparc_cloud.runfolder import RunFolder
from sparc_cloud.structured import ask_for, read_answer, repair_prompt, strip_fences
from tests.cliutil import agents, bundle, cli, scenario, sim_run

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
NO_COMPONENTS = str(EXAMPLES / "notes-site.toml")


def arch(*components: dict[str, Any]) -> dict[str, Any]:
    return {"components": list(components)}


def comp(name: str, *deps: str) -> dict[str, Any]:
    return {"name": name, "responsibility": f"does {name}", "depends_on": list(deps)}


# ----------------------------------------------------------------------------- the models


def test_schemas_are_shallow_with_no_refs_titles_or_max_items() -> None:
    for name in ("specification", "pseudocode", "architecture", "completion"):
        ask = ask_for(name)
        assert ask is not None
        text = json.dumps(ask.schema)
        for word in ("$ref", "$defs", "maxItems", '"title"', '"pattern"', "maxLength"):
            assert word not in text
        assert ask.schema["type"] == "object" and ask.schema["required"]
    components = json_schema(Architecture)["properties"]["components"]["items"]
    assert set(components["required"]) == {"name", "responsibility"}


def test_an_architecture_refuses_unknown_dependencies_cycles_and_duplicate_names() -> None:
    with pytest.raises(ValidationError, match="not a component"):
        Architecture.model_validate(arch(comp("a", "ghost")))
    with pytest.raises(ValidationError, match="cycle: a -> b -> a"):
        Architecture.model_validate(arch(comp("a", "b"), comp("b", "a")))
    with pytest.raises(ValidationError, match="'vector  STORE' appears twice"):
        Architecture.model_validate(arch(comp("Vector store"), comp("vector  STORE")))
    with pytest.raises(ValidationError, match="one line of printable characters"):
        Architecture.model_validate(arch(comp("evil\x1b[2J\nname")))
    with pytest.raises(ValidationError, match="at most 24"):
        Architecture.model_validate(arch(*(comp(f"c{i}") for i in range(30))))


def test_a_specification_criterion_must_check_a_known_requirement() -> None:
    with pytest.raises(ValidationError, match="refers to requirement 'R9'"):
        Specification.model_validate({"requirements": [{"id": "R1", "text": "x"}],
                                      "acceptance_criteria": [{"id": "AC1", "requirement": "R9", "text": "y"}]})


def test_the_completion_must_check_every_acceptance_criterion_by_id() -> None:
    done = Completion.model_validate({"checklist": [{"criterion": "AC1", "met": True, "evidence": "t"},
                                                    {"criterion": "AC7", "met": False, "evidence": "t"}]})
    errors = check_criteria(done, ["AC1", "AC2"])
    assert errors == ["checklist: acceptance criterion AC2 of the specification is not checked",
                      "checklist: 'AC7' is not an acceptance criterion of the specification (known: AC1, AC2)"]


@pytest.mark.parametrize("name, expected", [
    ("MCP server core", "mcp-server-core"), ("../../etc/passwd", "etc-passwd"), ("CON", "con"),
    ("", "component"), ("日本語", "component"), ("a" * 300, "a" * 40), ("x/../..\\y", "x-y"),
    ("Ünïcödé Name", "unicode-name"), ("Résumé parser", "resume-parser"), ("ﬁle ｓｔｏｒｅ", "file-store"),
])
def test_component_names_become_safe_bounded_slugs(name: str, expected: str) -> None:
    assert slug(name) == expected


def test_phase_4_ids_are_safe_unique_and_keep_the_projects_own_ids() -> None:
    project = parse_project('name = "p"\ngoal = "g"\n[research]\ntopics = ["t"]\n[[components]]\nname = "Core"\n'
                            'description = "the core"\n', "p.toml")
    architecture = Architecture.model_validate(arch(
        comp("../Integration"), comp("Core"), comp("Component 1", "Core"), comp("../../etc/Web UI"), comp("a" * 80)))
    ids = [aid for aid, *_ in component_ids(project, architecture)]
    # never the integration agent's id; the project's components keep theirs; no collision with them
    assert ids == ["p4-integration-2", "p4-component-1", "p4-component-1-2", "p4-etc-web-ui", "p4-" + "a" * 40]
    assert all(aid.replace("-", "").isalnum() and aid.isascii() for aid in ids)


def test_names_whose_slugs_collide_are_distinct_components_with_suffixed_ids() -> None:
    project = parse_project('name = "p"\ngoal = "g"\n[research]\ntopics = ["t"]\n', "p.toml")
    long = "Notification service for the email delivery "
    names = [long + "queue", long + "retries", "Résumé parser", "Ré sumé parser", "日本語", "中文", "Vector store",
             "vector-store"]
    architecture = Architecture.model_validate(arch(*(comp(n) for n in names[:-1]), comp("vector-store", "日本語")))
    comps = component_ids(project, architecture)
    ids = {name: aid for aid, name, *_ in comps}
    assert ids[long + "queue"] == "p4-notification-service-for-the-email-deliv"
    assert ids[long + "retries"] == "p4-notification-service-for-the-email-deliv-2"
    assert ids["Résumé parser"] == "p4-resume-parser" and ids["Ré sumé parser"] == "p4-re-sume-parser"
    assert ids["日本語"] == "p4-component-5" and ids["中文"] == "p4-component-6"
    assert ids["Vector store"] == "p4-vector-store" and ids["vector-store"] == "p4-vector-store-2"
    assert len(set(ids.values())) == len(names)
    plan = build_plan(project, load_templates(project), architecture)
    assert "p4-component-5" in plan.by_id["p4-vector-store-2"].depends_on  # found by its exact name
    assert "p4-vector-store" not in plan.by_id["p4-vector-store-2"].depends_on


def test_a_component_name_may_not_hold_an_html_comment() -> None:
    marker = "<!-- sparc-cloud: the agent's output starts below this line -->"
    with pytest.raises(ValidationError, match="must not contain '<!--'"):
        Architecture.model_validate(arch(comp(marker)))


def test_components_run_after_those_they_depend_on() -> None:
    project = parse_project('name = "p"\ngoal = "g"\n[research]\ntopics = ["t"]\n', "p.toml")
    architecture = Architecture.model_validate(arch(comp("ui", "api"), comp("api", "store"), comp("store")))
    plan = build_plan(project, load_templates(project), architecture)
    phase4 = plan.phase_agents(4)
    assert [a.id for a in phase4] == ["p4-store", "p4-api", "p4-ui", "p4-integration"]
    assert "p4-api" in plan.by_id["p4-ui"].depends_on and "p4-store" in plan.by_id["p4-api"].depends_on
    assert set(plan.by_id["p4-integration"].depends_on) >= {"p4-store", "p4-api", "p4-ui"}


# ----------------------------------------------------------------------------- reading and repairing


def test_an_answer_in_a_fence_with_prose_around_it_is_read() -> None:
    text = 'Here it is:\n```json\n{"components": [{"name": "a", "responsibility": "r"}]}\n```\nDone.'
    model, errors = read_answer("architecture", text)
    assert errors == [] and isinstance(model, Architecture) and model.components[0].name == "a"
    assert strip_fences('noise {"a": 1} trailing') == '{"a": 1}'
    inner = json.dumps({"checklist": [{"criterion": "AC1", "met": True, "evidence": "e"}],
                        "documentation": "Run:\n```json\n{\"x\": 1}\n```\n"})
    model, errors = read_answer("completion", inner)  # a fence inside a string of a bare JSON answer
    assert errors == [] and isinstance(model, Completion) and "```json" in model.documentation


@pytest.mark.parametrize("text, says", [
    ("not json at all", "not valid JSON"),
    ("[1, 2]", "a JSON list, not an object"),
    ('{"components": [{"name": "a"}]}', "components[0].responsibility: Field required"),
    ('{"summary": "x"}', "components: Field required"),
])
def test_bad_answers_give_errors_with_field_paths(text: str, says: str) -> None:
    model, errors = read_answer("architecture", text)
    assert model is None and any(says in e for e in errors), errors
    assert all("https://" not in e for e in errors)  # no pydantic URLs go back to the model


def test_the_repair_turn_sends_the_answer_and_its_errors_and_asks_for_json_only() -> None:
    ask = ask_for("architecture")
    assert ask is not None
    text = repair_prompt("PROMPT", ask, '{"summary": "x"}', ["components: Field required"])
    assert text.startswith("PROMPT") and '{"summary": "x"}' in text and "- components: Field required" in text
    assert "one JSON object only" in text


# ----------------------------------------------------------------------------- asking natively


class _FakeGemini:
    def __init__(self, refuse: bool) -> None:
        self.refuse = refuse
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.config = None

    def generate(self, prompt: str, *, generation_config: dict[str, Any], **_: Any) -> GenerateResult:
        self.calls.append((prompt, dict(generation_config)))
        if self.refuse and "responseJsonSchema" in generation_config:
            raise ApiError('gemini generateContent: HTTP 400 INVALID_ARGUMENT: Invalid JSON payload received. '
                           'Unknown name "responseJsonSchema" at \'generation_config\': Cannot find field.', status=400)
        return GenerateResult(text='{"x": 1}', model="gemini-2.5-pro", usage=Usage(1, 1, 2), latency_s=0.0,
                              attempts=1, request_id="r")


def _call(contract: str | None) -> AgentCall:
    project = parse_project('name = "p"\ngoal = "g"\n[research]\ntopics = ["t"]\n', "p.toml")
    agent = build_plan(project, load_templates(project)).by_id["p3-architecture"]
    record = AgentRecord(id=agent.id, phase=3, backend="gemini", model="gemini-2.5-pro", status="failed")
    return AgentCall(agent, "SYS", "PROMPT", record, lambda n: None, lambda s, w: None, ask_for(contract))


def _hooks() -> RunHooks:
    return RunHooks(bus=EventBus(SecretRegistry()), clock=RealClock())


def test_gemini_asks_with_response_mime_type_and_json_schema() -> None:
    fake = _FakeGemini(refuse=False)
    call = _call("architecture")
    GeminiBackend("gemini", fake, {"temperature": 0.4}).run(call, _hooks())  # type: ignore[arg-type]
    prompt, config = fake.calls[0]
    assert config["responseMimeType"] == "application/json" and config["temperature"] == 0.4
    assert config["responseJsonSchema"]["properties"]["components"]["type"] == "array"
    assert prompt == "PROMPT" and call.record.schema_fallback is None


def test_gemini_resends_with_the_schema_in_the_prompt_when_the_server_refuses_it() -> None:
    fake = _FakeGemini(refuse=True)
    call = _call("architecture")
    GeminiBackend("gemini", fake, {}).run(call, _hooks())  # type: ignore[arg-type]
    assert len(fake.calls) == 2
    prompt, config = fake.calls[1]
    assert "responseJsonSchema" not in config and "responseMimeType" not in config
    assert prompt.startswith("PROMPT") and '"components"' in prompt and call.record.schema_fallback == "prompt"


def test_a_400_that_is_not_about_the_schema_is_not_a_schema_refusal() -> None:
    assert not schema_refused(ApiError("HTTP 400: The input token count exceeds the maximum", status=400))
    assert schema_refused(ApiError("HTTP 500: Failed to parse responseJsonSchema field", status=500))


def test_an_agent_without_a_contract_sends_no_schema() -> None:
    fake = _FakeGemini(refuse=False)
    GeminiBackend("gemini", fake, {}).run(_call(None), _hooks())  # type: ignore[arg-type]
    assert "responseJsonSchema" not in fake.calls[0][1]


# ----------------------------------------------------------------------------- end to end on the simulator


def test_a_project_without_components_builds_what_the_architecture_names(tmp_path: Path) -> None:
    out = tmp_path / "run"
    code, output = sim_run(out, project=NO_COMPONENTS)
    assert code == 0, output
    records = agents(bundle(out))
    names = [c["name"] for c in records["p3-architecture"]["output_json"]["components"]]
    assert names == ["Publish core", "Markdown store", "Notes interface"]
    phase4 = [r["id"] for r in records.values() if r["phase"] == 4]
    assert phase4 == ["p4-publish-core", "p4-markdown-store", "p4-notes-interface", "p4-integration"]
    assert records["p4-markdown-store"]["depends_on"][-1] == "p4-publish-core"
    assert all(r["status"] == "completed" for r in records.values())
    spec_ids = [c["id"] for c in records["p1-synthesis"]["output_json"]["acceptance_criteria"]]
    checked = [c["criterion"] for c in records["p5-completion"]["output_json"]["checklist"]]
    assert checked == spec_ids and spec_ids
    for aid in ("p1-synthesis", "p2-pseudocode", "p3-architecture", "p5-completion"):
        assert records[aid]["contract_errors"] is None and not records[aid]["contract_repaired"]  # valid first time
    assert records["p1-research-1"]["output_json"] is None and records["p4-integration"]["output_json"] is None
    md = (out / "phase-3-architecture" / "p3-architecture.md").read_text(encoding="utf-8")
    assert "### Markdown store" in md and "- Depends on: Publish core" in md
    on_disk = json.loads((out / "phase-3-architecture" / "p3-architecture.json").read_text(encoding="utf-8"))
    assert on_disk == records["p3-architecture"]["output_json"]
    assert "follows the architecture: 3 component(s)" in output


def test_a_bad_answer_is_repaired_once_and_the_report_says_so(tmp_path: Path) -> None:
    out = tmp_path / "run"
    faults = scenario(tmp_path, '[[faults]]\nendpoint = "gemini.generate"\nmodel = "gemini-2.5-pro"\nat_call = 2\n'
                                'responses = ["bad-json"]\n')
    code, output = sim_run(out, "--scenario", faults, "--phases", "1-3", project=NO_COMPONENTS)
    assert code == 0, output
    rec = agents(bundle(out))["p3-architecture"]
    assert rec["status"] == "completed" and rec["contract_repaired"]
    assert rec["contract_errors"] == ["components: Field required"]
    first, second = rec["outputs"]
    assert "components" not in json.loads(first) and json.loads(second)["components"]
    assert rec["attempts"] == 2 and rec["output_json"]["components"]
    events = [json.loads(line) for line in (out / "events.jsonl").read_text(encoding="utf-8").splitlines()]
    assert any(e["kind"] == "agent_repairing" and e["agent_id"] == "p3-architecture" for e in events)
    report = cli("report", str(out))[1]
    assert "p3-architecture: repaired by one repair turn" in report and "completed (repaired)" in report
    data = json.loads(cli("report", str(out), "--json")[1])
    row = next(a for p in data["phases"] for a in p["agents"] if a["id"] == "p3-architecture")
    assert row["contract_status"] == "repaired"


def test_an_answer_broken_twice_fails_the_agent_and_keeps_both_answers(tmp_path: Path) -> None:
    out = tmp_path / "run"
    faults = scenario(tmp_path, '[[faults]]\nendpoint = "gemini.generate"\nmodel = "gemini-2.5-pro"\nat_call = 2\n'
                                'responses = ["bad-json", "bad-json"]\n')
    code, output = sim_run(out, "--scenario", faults, project=NO_COMPONENTS)
    assert code == 1, output
    records = agents(bundle(out))
    rec = records["p3-architecture"]
    assert rec["status"] == "failed" and rec["output_json"] is None and len(rec["outputs"]) == 2
    assert "broke its contract before and after the repair turn" in rec["error"]
    assert records["p2-pseudocode"]["status"] == "completed"  # earlier results are kept
    assert records["p4-integration"]["status"] == "skipped" and records["p5-completion"]["status"] == "skipped"
    assert "Traceback" not in output
    assert "p3-architecture: broken twice" in cli("report", str(out))[1]


def test_a_schema_refused_by_gemini_is_resent_in_the_prompt_and_is_no_model_failure(tmp_path: Path) -> None:
    out = tmp_path / "run"
    faults = scenario(tmp_path, '[[faults]]\nendpoint = "gemini.generate"\nmodel = "gemini-2.5-pro"\nat_call = 1\n'
                                'responses = ["schema-400"]\n')
    code, output = sim_run(out, "--scenario", faults, "--phases", "1", project=NO_COMPONENTS)
    assert code == 0, output
    rec = agents(bundle(out))["p1-synthesis"]
    assert rec["schema_fallback"] == "prompt" and rec["contract_errors"] is None and rec["output_json"]
    assert "refused the JSON Schema" in cli("report", str(out))[1]


def test_an_openai_server_refusing_json_schema_gets_json_object(tmp_path: Path) -> None:
    out = tmp_path / "run"
    faults = scenario(tmp_path, '[[faults]]\nendpoint = "openai.chat"\nmodel = "gpt-4.1"\nat_call = 1\n'
                                'responses = ["schema-400"]\n')
    code, output = sim_run(out, "--scenario", faults, "--phases", "1-3", project=str(EXAMPLES / "openai.toml"))
    assert code == 0, output
    records = agents(bundle(out))
    assert records["p1-synthesis"]["schema_fallback"] == "json_object" and records["p1-synthesis"]["output_json"]
    assert records["p3-architecture"]["schema_fallback"] is None  # the next agent asks natively again
    names = [c["name"] for c in records["p3-architecture"]["output_json"]["components"]]
    assert names == ["MCP server core", "Vector storage layer", "Memory manager", "Context optimizer"]


def test_a_rerun_of_phase_3_that_adds_and_removes_a_component(tmp_path: Path) -> None:
    out = tmp_path / "run"
    project = tmp_path / "notes-site.toml"
    text = Path(NO_COMPONENTS).read_text(encoding="utf-8")
    project.write_text(text, encoding="utf-8")
    assert sim_run(out, project=str(project))[0] == 0
    # The goal now names diagrams instead of notes: the architecture's third component changes.
    project.write_text(text.replace("Markdown notes", "Markdown diagrams"), encoding="utf-8")
    code, output = sim_run(out, "--phases", "3", project=str(project))
    assert code == 0, output
    data = bundle(out)
    phase4 = next(p for p in data["phases"] if p["number"] == 4)
    assert phase4["stale"] and "new: p4-diagrams-interface" in phase4["stale_reason"]
    assert "gone: p4-notes-interface" in phase4["stale_reason"]
    assert "phase 4 (Refinement): the architecture now names other components" in output
    code, output = sim_run(out, "--phases", "4-5", project=str(project))
    assert code == 0, output
    records = agents(bundle(out))
    assert "p4-notes-interface" not in records and records["p4-diagrams-interface"]["status"] == "completed"
    assert "Dropped from the bundle: p4-notes-interface" in output
    assert records["p4-publish-core"]["status"] == "completed"
    # its files left the phase folder for history/, none deleted
    phase_folder = out / "phase-4-refinement"
    assert not list(phase_folder.glob("p4-notes-interface.*")) and (phase_folder / "p4-diagrams-interface.md").exists()
    aside = out / "history" / f"{data['run_id']}-dropped" / "phase-4-refinement"
    assert sorted(p.name for p in aside.iterdir()) == ["p4-notes-interface.md", "p4-notes-interface.patch"]
    # phases 1-3 are stale (the goal changed under them); phase 4 matches the architecture now, but it and phase 5
    # read phase 3, which is stale: staleness is a fixed point
    assert {p["number"] for p in bundle(out)["phases"] if p["stale"]} == {1, 2, 3, 4, 5}
    # the journal still holds the dropped agent's record: neither a rerun nor a resume brings it back
    code, output = sim_run(out, "--phases", "5", project=str(project))
    assert code == 0 and "gone:" not in output and "p4-notes-interface" not in agents(bundle(out))
    code, output = sim_run(out, "--resume", project=str(project))
    assert code == 0 and "p4-notes-interface" not in output and "p4-notes-interface" not in agents(bundle(out))


def test_phase_4_alone_needs_an_architecture_with_a_contract(tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert sim_run(out, "--phases", "1-3", project=NO_COMPONENTS)[0] == 0
    data = bundle(out)
    for phase in data["phases"]:
        for rec in phase["agents"]:
            if rec["id"] == "p3-architecture":
                rec["output_json"] = None  # as an earlier version wrote it
    (out / "bundle.json").write_text(json.dumps(data), encoding="utf-8")
    lines = []
    for line in (out / "journal.jsonl").read_text(encoding="utf-8").splitlines():
        entry = json.loads(line)
        if isinstance(entry.get("record"), dict) and entry["record"]["id"] == "p3-architecture":
            entry["record"]["output_json"] = None
        lines.append(json.dumps(entry))
    (out / "journal.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    code, output = sim_run(out, "--phases", "4", project=NO_COMPONENTS)
    assert code == 2 and "has no contract" in output and "--phases 3-4" in output


def test_a_resume_in_the_middle_of_a_grown_phase_4(tmp_path: Path) -> None:
    out = tmp_path / "run"
    # The second Codex task (p4-markdown-store) fails: phase 4 stops half-way.
    tasks = scenario(tmp_path, '[[tasks]]\nindex = 2\noutcome = "failed"\n')
    code, output = sim_run(out, "--scenario", tasks, project=NO_COMPONENTS)
    assert code == 1, output
    records = agents(bundle(out))
    assert records["p4-publish-core"]["status"] == "completed"
    assert records["p4-markdown-store"]["status"] == "failed"
    assert records["p4-notes-interface"]["status"] == "skipped"
    code, output = sim_run(out, "--resume", project=NO_COMPONENTS)
    assert code == 0, output
    records = agents(bundle(out))
    assert all(r["status"] == "completed" for r in records.values())
    assert records["p4-publish-core"]["reused"] and records["p3-architecture"]["reused"]
    assert not records["p4-markdown-store"]["reused"] and not records["p4-notes-interface"]["reused"]
    assert [r["id"] for r in records.values() if r["phase"] == 4] == [
        "p4-publish-core", "p4-markdown-store", "p4-notes-interface", "p4-integration"]


def test_an_edited_architecture_json_decides_phase_4_and_a_broken_one_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert sim_run(out, "--pause-after", "3", project=NO_COMPONENTS)[0] == 0
    path = out / "phase-3-architecture" / "p3-architecture.json"
    good = path.read_text(encoding="utf-8")
    path.write_text('{"components": [{"name": "x", "depends_on": ["ghost"]}]}', encoding="utf-8")
    code, output = sim_run(out, "--phases", "4-5", project=NO_COMPONENTS)
    assert code == 2 and "p3-architecture.json breaks the architecture contract at components.0.responsibility" \
        in output and "Traceback" not in output
    assert agents(bundle(out))["p3-architecture"]["output_json"] == json.loads(good)  # nothing was lost
    data = json.loads(good)
    data["components"] = [c for c in data["components"] if c["name"] != "Notes interface"]
    data["components"].append({"name": "Search index", "responsibility": "client-side search",
                               "depends_on": ["Markdown store"]})
    path.write_text(json.dumps(data), encoding="utf-8")
    code, output = sim_run(out, "--phases", "4-5", project=NO_COMPONENTS)
    assert code == 0, output
    records = agents(bundle(out))
    assert records["p3-architecture"]["edited"] is True
    assert [r["id"] for r in records.values() if r["phase"] == 4] == [
        "p4-publish-core", "p4-markdown-store", "p4-search-index", "p4-integration"]
    _follows_the_edit(out, records, output)


def _follows_the_edit(out: Path, records: dict[str, Any], output: str) -> None:
    """The prose of an edited architecture (record, .md) is rendered from the edited contract, and said so."""
    assert "using your edited output of p3-architecture" in output
    text = records["p3-architecture"]["output_text"]
    assert "### Search index" in text and "### Notes interface" not in text
    md = (out / "phase-3-architecture" / "p3-architecture.md").read_text(encoding="utf-8")
    assert "### Search index" in md and "### Notes interface" not in md


def test_an_edited_architecture_json_is_taken_in_on_resume_with_its_prose(tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert sim_run(out, "--pause-after", "3", project=NO_COMPONENTS)[0] == 0
    path = out / "phase-3-architecture" / "p3-architecture.json"
    data = json.loads(path.read_text(encoding="utf-8"))
    data["components"] = [c for c in data["components"] if c["name"] != "Notes interface"]
    data["components"].append({"name": "Search index", "responsibility": "client-side search"})
    path.write_text(json.dumps(data), encoding="utf-8")
    code, output = sim_run(out, "--resume", project=NO_COMPONENTS)
    assert code == 0, output
    records = agents(bundle(out))
    assert records["p3-architecture"]["edited"] is True and "p4-search-index" in records
    _follows_the_edit(out, records, output)


def test_an_architecture_on_codex_is_parsed_from_the_tasks_text(tmp_path: Path) -> None:
    project = tmp_path / "arch-on-codex.toml"
    project.write_text(Path(NO_COMPONENTS).read_text(encoding="utf-8") + '\n[phases.architecture]\nbackend = "codex"\n',
                       encoding="utf-8")
    out = tmp_path / "run"
    code, output = sim_run(out, "--phases", "1-4", project=str(project))
    assert code == 0, output
    records = agents(bundle(out))
    assert records["p3-architecture"]["backend"] == "codex" and records["p3-architecture"]["task_id"]
    assert records["p3-architecture"]["output_json"]["components"][0]["name"] == "Publish core"
    assert "p4-publish-core" in records


def test_the_live_view_follows_a_grown_phase_4() -> None:
    from rich.console import Console

    from sparc_cloud.progress import LiveProgress

    project = parse_project('name = "p"\ngoal = "g"\n[research]\ntopics = ["t"]\n', "p.toml")
    templates = load_templates(project)
    before = build_plan(project, templates)
    view = LiveProgress(before.agents, Console(record=True, width=160, color_system=None))
    assert [aid for aid in view.rows if aid.startswith("p4-")] == ["p4-integration"]
    after = build_plan(project, templates, Architecture.model_validate(arch(comp("api"), comp("ui", "api"))))
    view.replace_phase(4, after.phase_agents(4))
    assert list(view.rows)[-4:] == ["p4-api", "p4-ui", "p4-integration", "p5-completion"]
    view.console.print(view)
    assert "p4-ui" in view.console.export_text()


def test_a_failed_architecture_rerun_drops_no_component(tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert sim_run(out, project=NO_COMPONENTS)[0] == 0
    earlier = {aid: r for aid, r in agents(bundle(out)).items() if r["phase"] == 4}
    before = list(earlier)
    faults = scenario(tmp_path, '[[faults]]\nendpoint = "gemini.generate"\nmodel = "gemini-2.5-pro"\nat_call = 1\n'
                                'responses = ["bad-json", "bad-json"]\n')
    code, output = sim_run(out, "--scenario", faults, "--phases", "3-4", project=NO_COMPONENTS)
    assert code == 1 and "Dropped" not in output and "Traceback" not in output
    records = agents(bundle(out))
    assert records["p3-architecture"]["status"] == "failed"
    assert [r["id"] for r in records.values() if r["phase"] == 4] == before
    # never started (their dependency failed): the earlier records stay, and phase 4 is stale, saying why
    assert all(records[aid] == earlier[aid] for aid in before)
    phase4 = next(p for p in bundle(out)["phases"] if p["number"] == 4)
    assert phase4["stale"] and "was not rerun" in phase4["stale_reason"] and "Not rerun: " in output
    assert records["p2-pseudocode"]["status"] == "completed" and records["p5-completion"]["status"] == "completed"


def test_the_contract_repair_demo_scenario_shows_a_refused_schema_and_a_repair(tmp_path: Path) -> None:
    out = tmp_path / "run"
    demo = str(EXAMPLES / "scenarios" / "contract-repair.toml")
    code, output = sim_run(out, "--scenario", demo, project=NO_COMPONENTS)
    assert code == 0, output
    records = agents(bundle(out))
    assert records["p1-synthesis"]["schema_fallback"] == "prompt" and records["p3-architecture"]["contract_repaired"]
    report = cli("report", str(out))[1]
    assert "p1-synthesis: the server refused the JSON Schema" in report
    assert "p3-architecture: repaired by one repair turn" in report


def test_the_simulators_chat_route_takes_response_format_as_openai_does(sim: Any) -> None:
    import requests

    from sparc_cloud.sim.chat import SIM_CHAT_KEY

    url, headers = f"{sim.url}/v1/chat/completions", {"Authorization": f"Bearer {SIM_CHAT_KEY}"}
    prompt = "SPARC phase 3 (architecture): system architecture.\nProject: p\nGoal: Index garden photos quickly."
    ask = ask_for("architecture")
    assert ask is not None
    fmt = {"type": "json_schema", "json_schema": {"name": "architecture", "schema": ask.schema}}
    answer = requests.post(url, headers=headers, timeout=10, json={
        "model": "gpt-4.1", "messages": [{"role": "user", "content": prompt}], "response_format": fmt})
    assert answer.status_code == 200
    model, errors = read_answer("architecture", answer.json()["choices"][0]["message"]["content"])
    assert errors == [] and isinstance(model, Architecture)
    assert [c.name for c in model.components] == ["Index core", "Garden store", "Photos interface"]
    refused = requests.post(url, headers=headers, timeout=10, json={
        "model": "gpt-4.1", "messages": [{"role": "user", "content": prompt}],
        "response_format": {"type": "json_object"}})
    assert refused.status_code == 400 and "must contain the word 'json'" in refused.json()["error"]["message"]
    bad = requests.post(url, headers=headers, timeout=10, json={
        "model": "gpt-4.1", "messages": [{"role": "user", "content": prompt}],
        "response_format": {"type": "json_schema", "json_schema": {"name": "x"}}})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "response_format"


def test_a_code_assist_500_about_the_schema_after_retries_is_a_schema_refusal() -> None:
    from sparc_cloud.errors import RetriesExhausted

    exc = RetriesExhausted("gemini generateContent: HTTP 500: Failed to parse responseJsonSchema field", attempts=3,
                           status=500)
    assert schema_refused(exc)
    assert not schema_refused(RetriesExhausted("HTTP 500: Internal error", attempts=3, status=500))


class _FakeChat:
    """A chat server that refuses json_schema and answers bad JSON first, good JSON after."""

    def __init__(self) -> None:
        self.formats: list[str | None] = []

    def complete(self, prompt: str, *, response_format: dict[str, Any] | None = None, **_: Any) -> Any:
        from sparc_cloud.clients.openai import ChatResult, ChatUsage

        kind = response_format["type"] if response_format else None
        self.formats.append(kind)
        if kind == "json_schema":
            raise ApiError("local chat/completions: HTTP 400: response_format json_schema is not supported",
                           status=400)
        good = "Your previous answer" in prompt
        text = json.dumps(arch(comp("core")) if good else {"summary": "no components"})
        return ChatResult(text=text, model="m", usage=ChatUsage(prompt_tokens=10, completion_tokens=5, total_tokens=15),
                          attempts=1, request_id=f"id-{len(self.formats)}")


def test_the_repair_turn_keeps_the_format_the_server_took_and_adds_up_usage() -> None:
    from sparc_cloud.backends.openai import OpenAIBackend
    from sparc_cloud.repair import run_with_contract

    fake = _FakeChat()
    call = _call("architecture")
    repairs: list[list[str]] = []
    run_with_contract(OpenAIBackend("local", fake), call, _hooks(), None, repairs.append)  # type: ignore[arg-type]
    assert fake.formats == ["json_schema", "json_object", "json_object"]  # refused once, then kept
    record = call.record
    assert record.schema_fallback == "json_object" and record.contract_repaired
    assert repairs == [["components: Field required"]]
    assert record.usage.total_tokens == 30 and record.attempts == 2 and record.request_id == "id-3"
    assert record.output_json == {"summary": "", "components": [
        {"name": "core", "responsibility": "does core", "files": [], "interfaces": [], "depends_on": [], "tests": []}],
        "data_flow": "", "decisions": []}
    assert record.output_text.startswith("# Architecture")


@pytest.mark.parametrize("api_key", [False, True], ids=["code-assist", "public-api"])
def test_gemini_answers_a_schema_with_json_on_both_paths(sim: Any, isolated_env: Path, api_key: bool) -> None:
    from sparc_cloud.clients.factory import ClientContext
    from sparc_cloud.clients.gemini import make_gemini
    from sparc_cloud.redact import SecretRegistry
    from tests.conftest import FAST, sim_settings

    extra = {"gemini_api_key": sim.api_key()} if api_key else {}
    ctx = ClientContext(settings=sim_settings(sim, isolated_env, **extra), clock=RealClock(), secrets=SecretRegistry(),
                        time_scale=FAST)
    client = make_gemini(ctx)
    assert client.config.mode == ("api-key" if api_key else "code-assist")
    ask = ask_for("specification")
    assert ask is not None
    prompt = "SPARC phase 1 (specification): synthesis.\nProject: p\n\nWrite the specification."
    result = client.generate(prompt, model="gemini-2.5-pro", generation_config={
        "responseMimeType": "application/json", "responseJsonSchema": ask.schema})
    model, errors = read_answer("specification", result.text)
    assert errors == [] and isinstance(model, Specification) and model.acceptance_criteria[0].id == "AC1"
    plain = client.generate(prompt, model="gemini-2.5-pro")  # asked for no JSON: Markdown as before
    assert read_answer("specification", plain.text)[0] is None


def test_the_architecture_must_cover_the_projects_components() -> None:
    from sparc_cloud.phases import contract_checks

    project = parse_project('name = "p"\ngoal = "g"\n[research]\ntopics = ["t"]\n[[components]]\nname = "Vector store"\n'
                            'description = "d"\n[[components]]\nname = "API"\ndescription = "d"\n', "p.toml")
    plan = build_plan(project, load_templates(project))
    checks = contract_checks(plan, plan.by_id["p3-architecture"], {})
    assert checks is not None
    model, errors = read_answer("architecture", json.dumps(arch(comp("vector-store"), comp("UI"))), checks)
    assert model is None and errors == [
        "components: the project lists the component 'API'; the architecture must include it (same name)"]
    assert read_answer("architecture", json.dumps(arch(comp("Vector Store"), comp("api"))), checks)[1] == []


def test_the_dashboard_plans_phase_4_from_the_bundles_architecture(tmp_path: Path) -> None:
    from sparc_cloud.bundle import load_bundle
    from sparc_cloud.dashboard.state import load_plan

    out = tmp_path / "run"
    assert sim_run(out, "--pause-after", "3", project=NO_COMPONENTS)[0] == 0
    plan = load_plan(load_bundle(out / "bundle.json"))
    assert plan is not None
    assert [a.id for a in plan.phase_agents(4)] == [
        "p4-publish-core", "p4-markdown-store", "p4-notes-interface", "p4-integration"]


# ----------------------------------------------------------------------------- the run folder's files

MARKER = "<!-- sparc-cloud: the agent's output starts below this line -->"


def test_a_header_value_quoting_the_output_marker_never_splits_the_file(tmp_path: Path) -> None:
    folder = RunFolder(tmp_path / "run")
    folder.prepare()
    record = AgentRecord(id="p4-x", phase=4, title=f"Component: {MARKER}", backend="sim", model=MARKER,
                         status="completed", output_text="the real output\n", error=f"x {MARKER}")
    folder.write_outputs(record)
    text = folder.output_path(record).read_text(encoding="utf-8")
    assert text.count(MARKER) == 1 and "&lt;!-- sparc-cloud" in text
    assert folder.apply_edits({record.id: record}) == [] and record.output_text == "the real output\n"
    assert not record.edited
    # a file of an earlier version, with the marker in its title: the marker line is what counts
    folder.output_path(record).write_text(f"# p4-x: Component: {MARKER}\n\n- status: completed\n\n{MARKER}\n\n"
                                          "the real output\n", encoding="utf-8")
    assert folder.apply_edits({record.id: record}) == [] and record.output_text == "the real output\n"


def test_a_component_dropped_twice_never_overwrites_its_first_set_aside_copy(tmp_path: Path) -> None:
    folder = RunFolder(tmp_path / "run")
    folder.prepare()
    phase4 = folder.path / "phase-4-refinement"
    phase4.mkdir()
    (phase4 / "p4-x.md").write_text("first\n", encoding="utf-8")
    assert folder.set_aside("r1", 4, ["p4-x"]) == "history/r1-dropped/"
    (phase4 / "p4-x.md").write_text("second\n", encoding="utf-8")
    (phase4 / "p4-x.patch").write_text("diff\n", encoding="utf-8")
    assert folder.set_aside("r1", 4, ["p4-x", "p4-gone"]) == "history/r1-dropped-2/"
    first = folder.path / "history" / "r1-dropped" / "phase-4-refinement"
    second = folder.path / "history" / "r1-dropped-2" / "phase-4-refinement"
    assert (first / "p4-x.md").read_text(encoding="utf-8") == "first\n"
    assert (second / "p4-x.md").read_text(encoding="utf-8") == "second\n" and (second / "p4-x.patch").exists()
    assert folder.set_aside("r1", 4, ["p4-x"]) is None and not (folder.path / "history" / "r1-dropped-3").exists()
    assert not list(phase4.iterdir())


def _plant(out: Path, components: list[dict[str, Any]]) -> None:
    """The journal's p3-architecture record made to hold `components` (as a hand or a damaged disk might)."""
    lines = []
    for line in (out / "journal.jsonl").read_text(encoding="utf-8").splitlines():
        entry = json.loads(line)
        if isinstance(entry.get("record"), dict) and entry["record"]["id"] == "p3-architecture":
            entry["record"]["output_json"]["components"] = components
        lines.append(json.dumps(entry))
    (out / "journal.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")


@pytest.mark.parametrize("components, says", [
    ([comp("a", "b"), comp("b", "a")], "cycle: a -> b -> a"),
    ([comp("evil\x1b[2Jname")], "one line of printable characters"),
    ([comp(f"c{i}") for i in range(300)], "300 items, at most 24"),
])
def test_a_resume_from_the_journal_alone_checks_the_contracts_it_reads(
        tmp_path: Path, components: list[dict[str, Any]], says: str) -> None:
    out = tmp_path / "run"
    assert sim_run(out, "--pause-after", "3", project=NO_COMPONENTS)[0] == 0
    (out / "bundle.json").unlink()
    (out / "phase-3-architecture" / "p3-architecture.json").unlink()
    _plant(out, components)
    code, output = sim_run(out, "--resume", project=NO_COMPONENTS)
    assert code == 2, output
    assert "journal.jsonl holds an output of agent p3-architecture that breaks the architecture contract" in output
    assert says in output and "Traceback" not in output and "\x1b[2J" not in output
    assert not (out / "phase-4-refinement").exists()


def test_a_rerun_checks_the_contracts_in_the_bundle(tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert sim_run(out, "--pause-after", "3", project=NO_COMPONENTS)[0] == 0
    data = bundle(out)
    for phase in data["phases"]:
        for rec in phase["agents"]:
            if rec["id"] == "p3-architecture":
                rec["output_json"]["components"] = [comp("a", "a")]
    (out / "bundle.json").write_text(json.dumps(data), encoding="utf-8")
    code, output = sim_run(out, "--phases", "4", project=NO_COMPONENTS)
    assert code == 2 and "bundle.json holds an output of agent p3-architecture" in output and "depends on itself" \
        in output, output


def test_a_project_listing_more_components_than_an_architecture_may_hold_is_refused_at_load(tmp_path: Path) -> None:
    text = 'name = "many"\ngoal = "g"\n[research]\ntopics = ["t"]\n'
    project = tmp_path / "many.toml"
    project.write_text(text + "".join(f'[[components]]\nname = "c{i}"\ndescription = "d"\n' for i in range(25)),
                       encoding="utf-8")
    code, output = cli("run", "--project", str(project), "--backend", "sim", "--dry-run")
    assert code == 2 and "lists 25 components" in output and "at most 24" in output and "Traceback" not in output
    project.write_text(text + "".join(f'[[components]]\nname = "c{i}"\ndescription = "d"\n' for i in range(24)),
                       encoding="utf-8")
    assert cli("run", "--project", str(project), "--backend", "sim", "--dry-run")[0] == 0
