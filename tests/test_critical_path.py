"""The critical path: the schedule it comes from, the report's fields, and what a rerun counts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cliutil import agents, bundle, cli, sim_run

from sparc_cloud.bundle import AgentRecord
from sparc_cloud.critical_path import Node, from_records, schedule


def _rec(aid: str, latency: float, deps: tuple[str, ...] = (), throttled: float = 0.0) -> AgentRecord:
    return AgentRecord(id=aid, phase=1, backend="gemini", model="m", depends_on=list(deps), status="completed",
                       latency_s=latency, throttled_s=throttled)


def test_the_longest_chain_of_dependent_agents_is_the_critical_path() -> None:
    nodes = [Node("a", (), 1.0), Node("b", (), 3.0), Node("c", ("a", "b"), 2.0), Node("d", ("a",), 4.0)]
    plan = schedule(nodes)
    assert [s.agent_id for s in plan.path] == ["a", "d"]
    assert plan.length_s == pytest.approx(5.0)
    assert plan.start["c"] == pytest.approx(3.0)  # waits for b, the slower of its two dependencies


def test_dependencies_from_an_earlier_session_count_as_done_at_the_start() -> None:
    plan = schedule([Node("p4", ("p3",), 2.0), Node("p5", ("p4",), 1.0)])
    assert [s.agent_id for s in plan.path] == ["p4", "p5"]
    assert plan.length_s == pytest.approx(3.0)


def test_a_slot_delays_starts_the_way_a_rate_limiter_would() -> None:
    taken: list[float] = []

    def one_at_a_time(node: Node, ready: float) -> float:
        begin = max(ready, taken[-1] + 1.0 if taken else 0.0)
        taken.append(begin)
        return begin

    plan = schedule([Node("a", (), 0.5), Node("b", (), 0.5), Node("c", (), 0.5)], one_at_a_time)
    assert sorted(plan.start.values()) == [0.0, 1.0, 2.0]
    assert plan.length_s == pytest.approx(2.5)


def test_a_dependency_cycle_is_refused() -> None:
    with pytest.raises(ValueError, match="cycle"):
        schedule([Node("a", ("b",), 1.0), Node("b", ("a",), 1.0)])


def test_ratio_and_throttling_on_the_path_come_from_the_records() -> None:
    path = from_records([_rec("a", 2.0, throttled=0.5), _rec("b", 1.0, ("a",), throttled=0.25), _rec("c", 0.1)],
                        makespan_s=3.3)
    assert path is not None
    assert path.agent_ids == ["a", "b"]
    assert path.lower_bound_s == pytest.approx(3.0)
    assert path.ratio == pytest.approx(1.1)
    assert path.throttled_s == pytest.approx(0.75)
    assert from_records([]) is None


def test_report_json_has_the_critical_path_bound_makespan_and_ratio(tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert sim_run(out)[0] == 0
    code, text = cli("report", str(out), "--json")
    assert code == 0
    data = json.loads(text)
    recs = agents(bundle(out))
    path = data["critical_path"]
    assert path[-1] == "p5-completion" and path[0].startswith("p1-research")
    for earlier, later in zip(path, path[1:], strict=False):
        assert earlier in recs[later]["depends_on"]
    assert data["lower_bound_s"] == pytest.approx(sum(recs[a]["latency_s"] for a in path), abs=0.01)
    assert data["makespan_s"] == pytest.approx(bundle(out)["totals"]["wall_time_s"])
    assert data["ratio"] == pytest.approx(data["makespan_s"] / data["lower_bound_s"], rel=1e-3)
    assert data["ratio"] >= 0.99  # the agents on the path ran one after the other: the run cannot beat them
    assert data["throttled_on_critical_path_s"] == pytest.approx(sum(recs[a]["throttled_s"] for a in path), abs=0.01)


def test_report_table_and_markdown_name_the_path_and_its_times(tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert sim_run(out)[0] == 0
    code, text = cli("report", str(out))
    assert code == 0
    flat = " ".join(text.split())
    assert "Critical path: p1-research" in flat and "-> p5-completion (" in flat
    assert "Lower bound" in flat and "measured makespan" in flat and "ratio" in flat and "throttling on the path" in flat
    code, md = cli("report", str(out), "--markdown")
    assert code == 0 and "Critical path: p1-research" in md


def test_a_rerun_of_phase_4_counts_only_the_agents_it_ran(tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert sim_run(out)[0] == 0
    assert sim_run(out, "--phases", "4")[0] == 0
    data = json.loads(cli("report", str(out), "--json")[1])
    assert data["critical_path"][-1] == "p4-integration"
    assert all(a.startswith("p4-") for a in data["critical_path"])


def test_time_left_scales_a_model_with_no_result_by_how_the_others_compared_with_their_typical_latency() -> None:
    from sparc_cloud.critical_path import Progress, time_left

    items = [
        Progress("a", (), "flash", True, latency_s=1.0, typical_s=20.0),   # ran at 1/20 of its typical latency
        Progress("b", ("a",), "flash", False, elapsed_s=0.25, typical_s=20.0),
        Progress("c", ("b",), "codex", False, typical_s=60.0),
    ]
    assert time_left(items) == pytest.approx(0.75 + 3.0)  # b: 1.0 - 0.25 left; c: 60 / 20 = 3.0
    assert time_left([Progress("x", (), "m", False)]) is None  # nothing finished to estimate from
    assert time_left([Progress("x", (), "m", True, latency_s=2.0)]) == 0.0
