"""Damaged credential files are a clear AuthError (exit 2) at once: never an internal error, never retried as a
network error, never quoting the secret. And `sim serve` refuses what cannot work, in one paragraph."""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Any

import pytest

from sparc_cloud.sim import SimConfig, Simulator
from tests.cliutil import cli, serve, stop

SECRET = "MARKER-TOKEN-0123456789"


@pytest.fixture
def home(isolated_env: Path) -> Path:
    with Simulator(SimConfig(time_scale=1.0)) as sim:
        sim.write_credentials(isolated_env)
    return isolated_env


def codex_file(home: Path) -> Path:
    return home / ".codex" / "auth.json"


def gemini_file(home: Path) -> Path:
    return home / ".gemini" / "oauth_creds.json"


def edit(path: Path, change: dict[str, Any], where: str | None = None) -> None:
    data = json.loads(path.read_text())
    (data[where] if where else data).update(change)
    path.write_text(json.dumps(data))


def check(code: int, output: str, path: Path, login: str) -> None:
    assert code == 2, output
    assert str(path) in output and login in output
    assert "internal error" not in output and "Traceback" not in output and "retry" not in output
    assert SECRET not in output


@pytest.mark.parametrize(("change", "what"), [
    ({"access_token": 12345678901234}, "access_token is a number"),
    ({"account_id": 4242424242}, "account_id is a number"),
    ({"access_token": ["a", "b"]}, "access_token is a JSON list"),
    ({"access_token": SECRET + "\n"}, "line break"),
    ({"access_token": SECRET + "€"}, "cannot be sent in an HTTP header"),
    ({"account_id": SECRET + "\r\nX-Injected: 1"}, "line break"),
])
def test_a_damaged_codex_auth_json_is_a_clear_auth_error(home: Path, change: dict[str, Any], what: str) -> None:
    edit(codex_file(home), change, "tokens")
    code, output = cli("codex", "envs")
    check(code, output, codex_file(home), "codex login")
    assert what in output


@pytest.mark.parametrize(("change", "what"), [
    ({"access_token": 3.14}, "access_token is a number"),
    ({"refresh_token": {"nested": True}}, "refresh_token is a JSON dict"),
    ({"access_token": SECRET + "\n"}, "line break"),
    ({"access_token": "ya29." + SECRET + "ü✓"}, "cannot be sent in an HTTP header"),
])
def test_a_damaged_gemini_oauth_file_is_a_clear_auth_error(home: Path, tmp_path: Path, change: dict[str, Any],
                                                           what: str) -> None:
    edit(gemini_file(home), change)
    code, output = cli("run", "--project", "memory-extension", "--phases", "1", "--output", str(tmp_path / "r"),
                       "--no-progress")
    check(code, output, gemini_file(home), "gemini")
    assert what in output


@pytest.mark.parametrize("which", ["codex", "gemini"])
def test_a_credential_file_that_is_not_utf8_is_a_clear_auth_error(home: Path, tmp_path: Path, which: str) -> None:
    path = codex_file(home) if which == "codex" else gemini_file(home)
    path.write_bytes(b'{"tokens": {"access_token": "\xff\xfe' + SECRET.encode() + b'"}}')
    if which == "codex":
        code, output = cli("codex", "envs")
    else:
        code, output = cli("run", "--project", "memory-extension", "--phases", "1", "--output", str(tmp_path / "r"))
    check(code, output, path, "codex login" if which == "codex" else "gemini")
    assert "not UTF-8" in output


def test_doctor_reports_a_non_utf8_file_instead_of_crashing(home: Path) -> None:
    gemini_file(home).write_bytes(b"\xff\xfe\x00garbage")
    code, output = cli("doctor")
    assert code == 1 and "is not UTF-8 text" in output and "internal error" not in output


# ------------------------------------------------------------------------------------------- sim serve

@pytest.mark.parametrize("port", ["99999", "-1", "65536"])
def test_sim_serve_on_a_port_that_does_not_exist_is_exit_2(port: str) -> None:
    code, output = cli("sim", "serve", "--port", port)
    assert code == 2 and f"Port {port} does not exist" in output and "internal error" not in output
    assert len(output.strip().splitlines()) == 1


def test_sim_serve_on_a_port_in_use_is_exit_2() -> None:
    with Simulator() as busy:
        port = busy.url.rsplit(":", 1)[1]
        code, output = cli("sim", "serve", "--port", port)
    assert code == 2 and f"Cannot listen on 127.0.0.1:{port}" in output


def test_sim_serve_write_creds_onto_a_file_is_exit_2(tmp_path: Path) -> None:
    target = tmp_path / "a-file"
    target.write_text("keep me")
    code, output = cli("sim", "serve", "--port", "0", "--write-creds", str(target))
    assert code == 2 and "is a file, not a folder" in output and target.read_text() == "keep me"


def test_sim_serve_never_overwrites_a_real_login(home: Path) -> None:
    real = {"access_token": "ya29.real-" + SECRET, "refresh_token": "1//real-refresh-token-abcdefghijkl",
            "expiry_date": 1}
    gemini_file(home).write_text(json.dumps(real))
    code, output = cli("sim", "serve", "--port", "0", "--write-creds", str(home))
    assert code == 2 and "is not a simulator credential file" in output
    assert json.loads(gemini_file(home).read_text()) == real and SECRET not in output


def test_sim_serve_write_creds_into_an_unwritable_place_is_exit_2(tmp_path: Path) -> None:
    blocker = tmp_path / "blocker"
    blocker.write_text("x")
    code, output = cli("sim", "serve", "--port", "0", "--write-creds", str(blocker / "sub"))
    assert code == 2 and "Cannot write the simulator's credential files" in output and "internal error" not in output


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["sigint", "sigterm"])
def test_sim_serve_stops_cleanly_on_a_signal_even_started_with_sigint_ignored(signum: int) -> None:
    # a script's background job starts with SIGINT ignored; `kill` sends SIGTERM: both stop the simulator
    proc = serve("sim", "serve", "--port", "0", sigint_ignored=True)
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        assert first.startswith("simulator listening on http://127.0.0.1:"), first
    finally:
        out, err = stop(proc, signum)
    assert proc.returncode == 0 and "simulator stopped" in out and "Traceback" not in err, err


def test_sim_credentials_can_be_written_again_over_the_simulators_own(tmp_path: Path) -> None:
    with Simulator() as sim:
        first = sim.write_credentials(tmp_path)
        second = sim.write_credentials(tmp_path)
    assert first == second and json.loads(second["codex"].read_text())["tokens"]["account_id"]
