"""The dashboard in a real browser: headless Chromium (Debian's package) driven by Playwright during a simulator
run. Needs /usr/bin/chromium (`apt-get install -y chromium`; `.ci/run` installs it) or CHROMIUM_PATH."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from dashutil import held_run

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def _chromium() -> str:
    path = os.environ.get("CHROMIUM_PATH") or shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(path).is_file():
        pytest.fail("The dashboard's browser test needs Chromium: `apt-get install -y chromium` (Debian), or set "
                    "CHROMIUM_PATH to a Chromium/Chrome executable. `.ci/run` installs it.", pytrace=False)
    return path


@pytest.fixture
def browser() -> Iterator[object]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as driver:
        chromium = driver.chromium.launch(executable_path=_chromium(), args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


def test_the_page_follows_a_simulator_run_live_and_shows_an_agents_output(browser: object, tmp_path: Path,
                                                                         capsys: pytest.CaptureFixture[str]) -> None:
    from playwright.sync_api import Browser, expect

    assert isinstance(browser, Browser)
    page = browser.new_page(viewport={"width": 1600, "height": 900})
    problems: list[str] = []
    page.on("pageerror", lambda exc: problems.append(str(exc)))
    page.on("console", lambda msg: problems.append(msg.text) if msg.type == "error" else None)
    scale = float(os.environ.get("DASHBOARD_TIME_SCALE", "0.01"))
    with held_run(tmp_path / "run", time_scale=scale) as held:
        assert held.reached.wait(60), "the run never reached p1-synthesis"
        page.goto(held.board.url)
        node = page.locator('[data-agent="p1-synthesis"]')
        expect(node).to_have_attribute("data-status", "running", timeout=30_000)
        expect(page.locator('[data-agent="p1-research-1"]')).to_have_attribute("data-status", "completed")
        final = page.locator('[data-agent="p5-completion"]')
        expect(final).to_have_attribute("data-status", "pending")
        expect(page.locator("#connection")).to_have_text("live")
        expect(page.locator(".column").first.locator(".count")).to_have_text("4/5")
        shot = tmp_path / "dashboard-held.png"
        page.screenshot(path=str(shot), full_page=True)
        held.release()
        # The same page, never reloaded, follows the run to its end from the event stream.
        expect(node).to_have_attribute("data-status", "completed", timeout=60_000)
        docs_shot = os.environ.get("DASHBOARD_SCREENSHOT")
        if docs_shot:  # how docs/dashboard.png is made (not an assertion): phase 4 running, one agent open
            expect(page.locator('[data-agent="p4-component-2"]')).to_have_attribute("data-status", "running",
                                                                                    timeout=60_000)
            page.locator('[data-agent="p1-synthesis"]').click()
            expect(page.locator("#detail-output")).to_be_visible()
            page.screenshot(path=docs_shot)
        expect(final).to_have_attribute("data-status", "completed", timeout=60_000)
        assert held.wait().exit_code == 0
        expect(page.locator("#connection")).to_have_text("run finished", timeout=30_000)
        expect(page.locator("#eta")).to_have_text("done", timeout=30_000)
        # The detail view shows an agent's output, exactly as the run recorded it (as text); asked while the
        # dashboard still serves (after it stops, the page's fetch of the agent is refused, an error in the console)
        bundle = json.loads((tmp_path / "run" / "bundle.json").read_text(encoding="utf-8"))
        record = next(a for p in bundle["phases"] for a in p["agents"] if a["id"] == "p1-synthesis")
        node.click()
        output = page.locator("#detail-output")
        expect(output).to_be_visible()
        assert output.text_content() == record["output_text"]
        expect(page.locator("#detail-fields")).to_contain_text("gemini-2.5-pro")
        expect(page.locator('[data-agent="p5-completion"]')).to_have_attribute("data-critical", "true")
        final_shot = tmp_path / "dashboard-final.png"
        page.screenshot(path=str(final_shot), full_page=True)
        with capsys.disabled():  # the artifact's path, shown even when the test passes
            print(f"\ndashboard screenshots: {shot} {final_shot}")
        assert shot.stat().st_size > 10_000 and final_shot.stat().st_size > 10_000
    assert problems == []


HOSTILE_TOPIC = '<img src=x onerror="window.__pwned=1">MCP protocol'
HOSTILE_COMPONENT = "<script>window.__pwned=2</script>Vector storage layer"


def test_strings_from_a_project_file_and_a_model_are_shown_as_text_never_run(browser: object, tmp_path: Path) -> None:
    from cliutil import sim_run
    from playwright.sync_api import Browser, expect

    from sparc_cloud.dashboard import Dashboard

    assert isinstance(browser, Browser)
    example = (Path(__file__).resolve().parents[1] / "examples" / "memory-extension.toml").read_text(encoding="utf-8")
    hostile = example.replace('"MCP protocol"', json.dumps(HOSTILE_TOPIC)).replace(
        '"Vector storage layer"', json.dumps(HOSTILE_COMPONENT))
    assert hostile != example
    project = tmp_path / "memory-extension.toml"
    project.write_text(hostile, encoding="utf-8")
    out = tmp_path / "run"
    code, text = sim_run(out, project=str(project))
    assert code == 0, text
    page = browser.new_page(viewport={"width": 1600, "height": 900})
    with Dashboard(out) as board:
        page.goto(board.url)
        expect(page.locator("#connection")).to_have_text("run finished", timeout=30_000)
        page.locator('[data-agent="p1-research-1"]').click()
        expect(page.locator("#detail-prompt")).to_contain_text(HOSTILE_TOPIC)
        expect(page.locator("#detail-fields")).to_contain_text(HOSTILE_TOPIC)
        page.locator('[data-agent="p4-component-2"]').click()
        expect(page.locator("#detail-prompt")).to_contain_text(HOSTILE_COMPONENT)
        assert page.evaluate("window.__pwned") is None
        assert page.locator("img").count() == 0
        assert page.locator("script").count() == 1  # the page's own app.js, nothing a string brought in
