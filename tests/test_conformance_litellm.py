"""Conformance with an OpenAI-compatible server no one here wrote: LiteLLM's proxy, started on 127.0.0.1 by the
test with `mock_response` models (no upstream is called). Our client's requests, usage parsing and error
classification must hold against its real envelopes, and a mixed project must run through it."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from sparc_cloud.backends.diffs import check_diff, extract_diff
from sparc_cloud.clients.openai import ChatClient, ChatConfig
from sparc_cloud.errors import ApiError
from sparc_cloud.http.clock import RealClock
from sparc_cloud.http.ratelimit import RateLimiters
from sparc_cloud.http.retry import RetryPolicy
from sparc_cloud.pipeline import RunOptions, run
from sparc_cloud.redact import SecretRegistry
from sparc_cloud.sim import SimConfig, Simulator
from tests.conftest import FAST, sim_settings

MASTER_KEY = "sk-MARKER-LITELLM-MASTER-0000000000"
DIFF = ("diff --git a/pkg/store.py b/pkg/store.py\nnew file mode 100644\n--- /dev/null\n+++ b/pkg/store.py\n"
        "@@ -0,0 +1,2 @@\n+STORE: dict[str, str] = {}\n+LIMIT = 100\n")
NOTES = "# Notes\n\nA mocked answer from the proxy."
# Phases with a contract answer JSON: the proxy's mocked answers meet the contracts (the completion checks the
# simulator's specification's acceptance criteria AC1-AC4 by id).
PSEUDO = {"modules": [{"name": "store", "functions": [{"name": "put", "steps": ["validate", "write"]}]}]}
ARCH = {"components": [{"name": "Store core", "responsibility": "the in-memory store", "files": ["pkg/store.py"]}]}
DONE = {"checklist": [{"criterion": f"AC{i}", "met": True, "evidence": "pkg/store.py"} for i in range(1, 5)]}
CONFIG = {
    "model_list": [
        {"model_name": "notes", "litellm_params": {"model": "openai/notes", "api_key": "sk-unused",
                                                   "mock_response": NOTES}},
        {"model_name": "coder", "litellm_params": {"model": "openai/coder", "api_key": "sk-unused",
                                                   "mock_response": f"Built the store.\n\n```diff\n{DIFF}```\n"}},
        *({"model_name": name, "litellm_params": {"model": f"openai/{name}", "api_key": "sk-unused",
                                                  "mock_response": json.dumps(answer)}}
          for name, answer in (("pseudo", PSEUDO), ("arch", ARCH), ("done", DONE))),
    ],
}
STARTUP_S = 120.0  # generous: the proxy imports a lot; the test waits for its liveness route, not a fixed time


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """LiteLLM's proxy on a free loopback port; its /v1 base URL."""
    folder = tmp_path_factory.mktemp("litellm")
    (folder / "config.json").write_text(json.dumps(CONFIG), encoding="utf-8")
    port = _free_port()
    exe = Path(sys.executable).parent / "litellm"
    env = {**os.environ, "LITELLM_MASTER_KEY": MASTER_KEY, "LITELLM_LOCAL_MODEL_COST_MAP": "True",
           "LITELLM_LOG": "ERROR", "NO_PROXY": "127.0.0.1,localhost"}
    log = (folder / "proxy.log").open("w")
    proc = subprocess.Popen([str(exe), "--config", str(folder / "config.json"), "--host", "127.0.0.1", "--port",
                             str(port)], cwd=folder, env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + STARTUP_S
        while True:
            try:
                if requests.get(f"{base}/health/liveliness", timeout=2).ok:
                    break
            except requests.RequestException:
                pass
            assert proc.poll() is None, (folder / "proxy.log").read_text(encoding="utf-8")[-3000:]
            assert time.monotonic() < deadline, "LiteLLM's proxy did not come up"
            time.sleep(0.25)
        yield f"{base}/v1"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def chat(base: str, key: str | None = MASTER_KEY) -> ChatClient:
    cfg = ChatConfig("litellm", base, key, "[backends.litellm] base_url", "LITELLM_KEY", 30.0)
    clock = RealClock(threading.Event())
    return ChatClient(cfg, session=requests.Session(), limiters=RateLimiters(clock, {}),
                      policy=RetryPolicy(max_attempts=2, initial_s=0.05), clock=clock, secrets=SecretRegistry())


def test_a_completion_from_the_proxy_is_read_with_its_usage(proxy: str) -> None:
    result = chat(proxy).complete("Say something.", model="notes", system="Be brief.")
    assert result.text == NOTES and result.attempts == 1
    assert result.usage.prompt_tokens > 0 and result.usage.completion_tokens > 0
    assert result.usage.total_tokens == result.usage.prompt_tokens + result.usage.completion_tokens
    assert result.request_id and result.request_id.startswith("chatcmpl-")


def test_the_proxys_diff_answer_passes_the_diff_contract(proxy: str) -> None:
    answer = chat(proxy).complete("Implement the store as a unified diff.", model="coder").text
    diff = extract_diff(answer)
    assert diff == DIFF and check_diff(diff) is None


def test_the_proxys_error_envelopes_map_to_our_errors(proxy: str) -> None:
    # An unknown model: a 400 in OpenAI's envelope, fatal at once, saying what to check.
    with pytest.raises(ApiError, match="Invalid model name passed in model=no-such-model") as info:
        chat(proxy).complete("hi", model="no-such-model")
    assert "check the model name (no-such-model)" in str(info.value)
    # A key the proxy does not know (without a database LiteLLM answers 400, not 401): fatal, never echoed.
    wrong = "sk-MARKER-WRONG-KEY-0000"
    with pytest.raises(ApiError) as info:
        chat(proxy, key=wrong).complete("hi", model="notes")
    assert info.value.status == 400 and wrong not in str(info.value)


def test_a_mixed_project_runs_through_the_proxy_and_the_simulator(proxy: str, tmp_path: Path, isolated_env: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Gemini and Codex on the simulator, the built-in `openai` and a named endpoint on LiteLLM's proxy."""
    monkeypatch.setenv("OPENAI_API_KEY", MASTER_KEY)
    monkeypatch.setenv("OPENAI_BASE_URL", proxy)
    monkeypatch.setenv("LITELLM_KEY", MASTER_KEY)
    project = tmp_path / "mixed.toml"
    project.write_text(f'''name = "conformance"
goal = "A tiny key-value store."
[research]
topics = ["Storage engines", "HTTP APIs"]
[[components]]
name = "Store core"
description = "The in-memory store."
[backends.litellm]
kind = "openai"
base_url = "{proxy}"
api_key_env = "LITELLM_KEY"
[phases.specification]
model = "gemini-2.5-flash"
synthesis_model = "gemini-2.5-pro"
[phases.pseudocode]
model = "litellm/pseudo"
[phases.architecture]
model = "openai/arch"
[phases.refinement]
backend = "codex"
[phases.completion]
model = "litellm/done"
[codex]
environment = "memory-extension"
''', encoding="utf-8")
    with Simulator(SimConfig(time_scale=FAST)) as simulator:
        settings = sim_settings(simulator, isolated_env)
        outcome = run(RunOptions(project=str(project), settings=settings, backend="live",
                                 output=tmp_path / "run"))
    assert outcome.exit_code == 0, outcome.message
    assert outcome.bundle is not None
    records = {a.id: a for p in outcome.bundle.phases for a in p.agents}
    assert {r.backend for r in records.values()} == {"gemini", "litellm", "openai", "codex"}
    assert records["p2-pseudocode"].output_json is not None
    assert records["p2-pseudocode"].schema_fallback is None  # the proxy takes response_format json_schema
    assert records["p2-pseudocode"].output_json["modules"][0]["functions"][0]["steps"] == ["validate", "write"]
    assert records["p5-completion"].output_json is not None
    assert records["p3-architecture"].output_json is not None
    assert [c["name"] for c in records["p3-architecture"].output_json["components"]] == ["Store core"]
    assert "### Store core" in records["p3-architecture"].output_text  # the Markdown rendered from the contract
    assert records["p2-pseudocode"].usage.prompt_tokens > 0
    assert records["p4-component-1"].diff and records["p4-component-1"].diff.startswith("diff --git")
    leaked = [p for p in (tmp_path / "run").rglob("*") if p.is_file() and MASTER_KEY in p.read_text(errors="replace")]
    assert leaked == []
