"""The dashboard's server: token, read-only JSON of a run (live and finished), the event stream, the CLI."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from cliutil import cli, serve, sim_run, stop
from dashutil import api, get, held_run, poll

from sparc_cloud.dashboard import Dashboard
from sparc_cloud.dashboard.server import asset

STATIC = Path(__file__).resolve().parents[1] / "src" / "sparc_cloud" / "dashboard" / "static"


@pytest.fixture
def finished_run(tmp_path: Path) -> Path:
    out = tmp_path / "run"
    assert sim_run(out)[0] == 0
    return out


def _statuses(snapshot: dict[str, object]) -> dict[str, str]:
    phases = snapshot["phases"]
    assert isinstance(phases, list)
    return {a["id"]: a["status"] for p in phases for a in p["agents"]}


def test_page_and_json_need_the_printed_token(finished_run: Path) -> None:
    with Dashboard(finished_run) as board:
        base = f"http://127.0.0.1:{board.port}"
        assert board.url == f"{base}/?token={board.token}" and len(board.token) >= 20
        for path in ("/", "/api/run", "/api/events", "/api/agent?id=p1-synthesis"):
            sep = "&" if "?" in path else "?"
            assert get(base + path)[0] == 403
            assert get(f"{base}{path}{sep}token=wrong-{board.token}")[0] == 403
        status, body, headers = get(board.url)
        assert status == 200 and b"/static/app.js" in body
        assert "script-src 'self'" in headers["Content-Security-Policy"]
        assert headers["X-Content-Type-Options"] == "nosniff"


def test_the_dashboard_is_read_only_and_only_on_loopback(finished_run: Path) -> None:
    with Dashboard(finished_run) as board:
        assert board._server.server_address[0] == "127.0.0.1"
        for method in ("POST", "PUT", "DELETE", "PATCH"):
            request = urllib.request.Request(board.url, method=method, data=b"{}")  # noqa: S310 - loopback
            with pytest.raises(urllib.error.HTTPError) as caught:
                urllib.request.urlopen(request, timeout=10)  # noqa: S310 - loopback
            assert caught.value.code == 405


def test_api_run_is_the_bundle_with_statuses_and_the_critical_path_of_report(finished_run: Path) -> None:
    with Dashboard(finished_run) as board:
        run = api(board, "/api/run")
    bundle = json.loads((finished_run / "bundle.json").read_text(encoding="utf-8"))
    assert run["run_id"] == bundle["run_id"] and run["project"] == "memory-extension"
    assert [p["number"] for p in run["phases"]] == [1, 2, 3, 4, 5]
    assert set(_statuses(run).values()) == {"completed"} and len(_statuses(run)) == 13
    assert [f"{p['done']}/{p['total']}" for p in run["phases"]] == ["5/5", "1/1", "1/1", "5/5", "1/1"]
    report = json.loads(cli("report", str(finished_run), "--json")[1])
    assert run["live"]["critical_path"] == report["critical_path"]
    assert run["live"]["finished"] is True and run["live"]["eta_s"] == 0.0
    assert run["live"]["cost_usd"] == pytest.approx(report["totals"]["cost_usd"], rel=1e-3)
    critical = [a["id"] for p in run["phases"] for a in p["agents"] if a["critical"]]
    assert sorted(critical) == sorted(report["critical_path"])


def test_agent_detail_has_output_diff_worklog_and_prompt(finished_run: Path) -> None:
    bundle = json.loads((finished_run / "bundle.json").read_text(encoding="utf-8"))
    record = next(a for p in bundle["phases"] for a in p["agents"] if a["id"] == "p4-component-1")
    with Dashboard(finished_run) as board:
        detail = api(board, "/api/agent", "&id=p4-component-1")
        assert get(f"{board.url}".replace("/?", "/api/agent?") + "&id=nope")[0] == 404
    assert detail["record"]["output_text"] == record["output_text"]
    assert detail["record"]["diff"] == record["diff"] and detail["record"]["diff"].startswith("diff --git")
    assert detail["record"]["worklog"] == record["worklog"]
    assert "MCP server core" in detail["prompt"] or detail["prompt"]
    assert detail["tokens"] == record["usage"]["total_tokens"] and detail["cost_usd"] > 0


def test_a_finished_run_replays_its_events_and_the_stream_ends(finished_run: Path) -> None:
    lines = (finished_run / "events.jsonl").read_text(encoding="utf-8").splitlines()
    with Dashboard(finished_run) as board:
        status, body, headers = get(board.url.replace("/?", "/api/events?"))
    assert status == 200 and headers["Content-Type"].startswith("text/event-stream")
    data = [json.loads(line[len("data: "):]) for line in body.decode().splitlines() if line.startswith("data: {\"")]
    assert [e["kind"] for e in data] == [json.loads(line)["kind"] for line in lines]
    assert body.decode().rstrip().endswith("event: end\ndata: {}")


def test_each_replayed_event_has_its_own_id_where_a_reconnect_resumes(finished_run: Path) -> None:
    with Dashboard(finished_run) as board:
        body = get(board.url.replace("/?", "/api/events?"))[1].decode()
    ids = [line[len("id: "):] for line in body.splitlines() if line.startswith("id: ")]
    size = (finished_run / "events.jsonl").stat().st_size
    assert len(ids) == len(set(ids)) > 10  # one id per event, each the offset just after its line
    assert int(ids[-1].split("-")[1]) == size


def test_a_link_planted_as_events_jsonl_is_never_followed(finished_run: Path, tmp_path: Path) -> None:
    secret = tmp_path / "outside.txt"
    secret.write_text("root:x:0:0:not for the browser\n" + '{"kind": "run_done", "smuggled": true}\n', encoding="utf-8")
    events = finished_run / "events.jsonl"
    events.unlink()
    events.symlink_to(secret)
    with Dashboard(finished_run) as board:
        body = get(board.url.replace("/?", "/api/events?"))[1].decode()
        snapshot = api(board, "/api/run")
    assert "not for the browser" not in body and "smuggled" not in body
    assert "smuggled" not in json.dumps(snapshot)


def test_live_statuses_change_while_the_run_goes_on(tmp_path: Path) -> None:
    with held_run(tmp_path / "run") as held:
        assert held.reached.wait(60), "the run never reached p1-synthesis"
        mid = poll(lambda: (s := api(held.board, "/api/run")) and _statuses(s).get("p1-synthesis") == "running" and s,
                   "p1-synthesis running")
        statuses = _statuses(mid)
        assert all(statuses[f"p1-research-{i}"] == "completed" for i in range(1, 5))
        assert statuses["p5-completion"] == "pending"
        assert mid["live"]["finished"] is False and mid["live"]["elapsed_s"] > 0
        assert mid["live"]["counts"]["running"] == 1
        assert mid["live"]["eta_s"] is not None and mid["live"]["eta_s"] > 0
        held.release()
        outcome = held.wait()
        assert outcome.exit_code == 0
        done = poll(lambda: (s := api(held.board, "/api/run")) and s["live"]["finished"] and s, "the run finished")
        assert set(_statuses(done).values()) == {"completed"}


def test_assets_ship_in_the_package_and_fetch_nothing_from_the_network() -> None:
    for name in ("index.html", "app.js", "app.css"):
        body = asset(name)
        assert body is not None, name
        assert not re.search(rb"(src|href)=\"https?://|url\(https?:|import\s+['\"]https?:", body), name
    assert asset("../server.py") is None and asset(".hidden") is None


def test_the_page_writes_every_string_as_text_never_as_html() -> None:
    script = (STATIC / "app.js").read_text(encoding="utf-8")
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function"):
        assert sink not in script, sink
    assert "textContent" in script


@pytest.mark.parametrize(("signum", "sigint_ignored"), [
    (signal.SIGINT, False),  # Ctrl-C in a terminal
    (signal.SIGINT, True),  # Ctrl-C / kill -INT on a job a script started in the background
    (signal.SIGTERM, False),  # kill, a container stop, a CI runner
    (signal.SIGHUP, False),  # the terminal closed
], ids=["ctrl-c", "ctrl-c-on-a-background-job", "sigterm", "sighup"])
def test_dashboard_command_prints_a_tokenised_url_and_stops_on_a_signal(
        finished_run: Path, signum: int, sigint_ignored: bool) -> None:
    proc = serve("dashboard", str(finished_run), "--port", "0", sigint_ignored=sigint_ignored)
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+/\?token=[A-Za-z0-9_-]{20,}", url), url
        status, body, _ = get(url.replace("/?", "/api/run?"))
        assert status == 200 and json.loads(body)["project"] == "memory-extension"
    finally:
        _, err = stop(proc, signum)
    assert proc.returncode == 0, err
    assert "dashboard stopped" in err and "Traceback" not in err


def test_dashboard_of_a_missing_folder_is_a_clear_error(tmp_path: Path) -> None:
    code, text = cli("dashboard", str(tmp_path / "nowhere"))
    assert code == 2 and "not a run folder" in text
    code, text = cli("dashboard")
    assert code == 2 and "No run folder under sparc-runs" in text and "--backend sim" in text


def test_run_with_dashboard_prints_the_url_on_stderr_and_stops_serving_at_the_end(tmp_path: Path) -> None:
    src = Path(__file__).resolve().parents[1] / "src"
    result = subprocess.run(
        [sys.executable, "-m", "sparc_cloud", "run", "--project", "memory-extension", "--backend", "sim",
         "--sim-time-scale", "0.002", "--output", str(tmp_path / "run"), "--no-progress", "--dashboard"],
        capture_output=True, text=True, timeout=300, check=False, env={**os.environ, "PYTHONPATH": str(src)})
    assert result.returncode == 0, result.stderr
    found = re.search(r"^dashboard: (http://127\.0\.0\.1:(\d+)/\?token=[A-Za-z0-9_-]{20,})$", result.stderr, re.M)
    assert found, result.stderr
    assert "token=" not in result.stdout and result.stdout.startswith("13 completed")  # stdout: the result only
    with pytest.raises(OSError):
        urllib.request.urlopen(found.group(1), timeout=5)  # noqa: S310 - loopback; the server is gone


def test_a_run_holding_the_folder_keeps_the_stream_open_after_its_last_event(finished_run: Path) -> None:
    import threading

    from sparc_cloud.dashboard.server import folder_busy
    from sparc_cloud.runfolder import RunFolder

    holder = RunFolder(finished_run)
    holder.lock()  # as a `sparc-cloud run` in another terminal would
    try:
        assert folder_busy(finished_run)
        with Dashboard(finished_run) as board:
            answer: list[bytes] = []
            reader = threading.Thread(target=lambda: answer.append(get(board.url.replace("/?", "/api/events?"))[1]))
            reader.start()
            reader.join(1.0)
            assert reader.is_alive()  # replayed everything, still waiting: the run may write more
            holder.close()
            assert not folder_busy(finished_run)
            reader.join(30)
            assert not reader.is_alive() and answer[0].decode().rstrip().endswith("event: end\ndata: {}")
    finally:
        holder.close()
