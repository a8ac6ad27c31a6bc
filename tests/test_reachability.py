"""An address that cannot be reached says so, on every retry, with the URL and the setting it comes from; a
refused loopback address is given up after two tries; doctor makes one short attempt; a run says where it
goes before its first call."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import requests
import responses
from urllib3.exceptions import MaxRetryError, NewConnectionError

from sparc_cloud.clients.codex import make_codex
from sparc_cloud.clients.factory import ClientContext
from sparc_cloud.errors import RetriesExhausted, TransientError, Unreachable
from sparc_cloud.http.clock import FakeClock
from sparc_cloud.http.retry import RetryNotice, RetryPolicy, call_with_retry
from sparc_cloud.redact import SecretRegistry
from sparc_cloud.settings import Settings
from sparc_cloud.sim import SimConfig, Simulator
from tests.cliutil import cli


def closed_port() -> int:
    """A loopback port nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@pytest.fixture
def creds(isolated_env: Path) -> Path:
    with Simulator(SimConfig(time_scale=1.0)) as sim:  # tokens that live for the real 50 minutes
        sim.write_credentials(isolated_env)
    return isolated_env


def test_a_refused_loopback_address_is_given_up_after_two_tries_naming_url_and_setting(
        creds: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    port = closed_port()
    monkeypatch.setenv("SPARC_CODEX_BASE_URL", f"http://127.0.0.1:{port}/backend-api")
    monkeypatch.setenv("SPARC_RETRY_INITIAL_S", "0.01")
    code, output = cli("codex", "envs")
    assert code == 1
    retry_lines = [line for line in output.splitlines() if line.startswith("retry ")]
    assert len(retry_lines) == 1  # one retry: two tries in all
    assert f"cannot reach http://127.0.0.1:{port} (connection refused)" in retry_lines[0]
    assert "SPARC_CODEX_BASE_URL" in retry_lines[0]
    assert "gave up after 2 attempt(s)" in output and "Check SPARC_CODEX_BASE_URL (is the server running?)" in output
    assert "Traceback" not in output


def _dns_failure() -> requests.ConnectionError:
    reason = NewConnectionError(None, "Failed to resolve 'chatgpt.example' ([Errno -2] Name or service not known)")  # type: ignore[arg-type]
    return requests.ConnectionError(MaxRetryError(None, "/backend-api/wham/environments", reason))  # type: ignore[arg-type]


@responses.activate
def test_a_dns_failure_prints_a_line_per_retry_with_url_and_setting(creds: Path) -> None:
    responses.get("https://chatgpt.example/backend-api/wham/environments", body=_dns_failure())
    notices: list[RetryNotice] = []
    settings = Settings(codex_base_url="https://chatgpt.example/backend-api", retry_max_attempts=3)
    ctx = ClientContext(settings=settings, clock=FakeClock(), secrets=SecretRegistry(), on_retry=notices.append)
    with pytest.raises(RetriesExhausted) as info:
        make_codex(ctx).environments()
    assert len(notices) == 2  # not a loopback address: the whole retry budget
    for notice in notices:
        assert "cannot reach https://chatgpt.example (DNS lookup failed)" in notice.endpoint
        assert "SPARC_CODEX_BASE_URL" in notice.endpoint
    assert "Check SPARC_CODEX_BASE_URL and the network" in str(info.value)


def test_only_unreachable_loopback_addresses_stop_early() -> None:
    for error, tries in ((Unreachable("x", loopback=True), 2), (Unreachable("x", loopback=False), 5),
                         (TransientError("502"), 5)):
        calls = {"n": 0}

        def fn(error: Exception = error, calls: dict[str, int] = calls) -> None:
            calls["n"] += 1
            raise error

        with pytest.raises(RetriesExhausted):
            call_with_retry(fn, policy=RetryPolicy(max_attempts=5), clock=FakeClock(), endpoint="x")
        assert calls["n"] == tries


def test_doctor_makes_one_short_attempt_per_network_check(creds: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    port = closed_port()
    monkeypatch.setenv("SPARC_GEMINI_BASE_URL", f"http://127.0.0.1:{port}/v1internal")
    monkeypatch.setenv("SPARC_CODEX_BASE_URL", f"http://127.0.0.1:{port}/backend-api")
    code, output = cli("doctor", "--codex-env", "memory-extension")
    assert code == 1
    assert "retry " not in output  # one attempt, no retries
    assert output.count("gave up after 1 attempt(s)") == 2
    assert "fix: Check SPARC_GEMINI_BASE_URL (is the server running?) and the network." in output
    assert "fix: Check SPARC_CODEX_BASE_URL (is the server running?) and the network." in output


def test_a_run_says_where_it_goes_before_its_first_call_and_names_the_setting_when_it_cannot(
        creds: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    port = closed_port()
    monkeypatch.setenv("SPARC_GEMINI_BASE_URL", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("SPARC_RETRY_INITIAL_S", "0.01")
    code, output = cli("run", "--project", "memory-extension", "--phases", "1", "--output", str(tmp_path / "r"),
                       "--no-progress")
    lines = output.splitlines()
    assert code == 1 and lines[0].startswith(f"gemini: Code Assist at http://127.0.0.1:{port}/v1internal "
                                             "(SPARC_GEMINI_BASE_URL), account sim@example.invalid")
    assert lines[1].startswith("retry 2 in ") and "cannot reach" in lines[1] and "SPARC_GEMINI_BASE_URL" in lines[1]
    assert "gave up after 2 attempt(s)" in output and "Traceback" not in output


def test_a_sim_run_prints_one_line_per_cloud_first(tmp_path: Path) -> None:
    code, output = cli("run", "--project", "memory-extension", "--backend", "sim", "--sim-time-scale", "0.002",
                       "--output", str(tmp_path / "r"), "--no-progress")
    first, second, third = output.splitlines()[:3]
    assert code == 0
    assert first.startswith("gemini: Code Assist at http://127.0.0.1:") and "project: found with loadCodeAssist" in first
    assert second.startswith("codex: Codex Cloud tasks at http://127.0.0.1:") and "sim@example.invalid (pro plan)" in second
    assert "environment memory-extension, branch main" in second
    assert "run started" in third
