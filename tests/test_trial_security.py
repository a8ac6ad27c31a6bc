"""What a second user trial found: a project file that borrows another backend's key, a password in a base_url
printed and stored, escape sequences and stale phases in `export`, huge echoed values, and CLI rough edges."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from sparc_cloud.backends.openai import EndpointConfigError, chat_config, guarded_key_vars
from sparc_cloud.project import parse_project
from sparc_cloud.redact import SecretRegistry, hide_userinfo
from tests.cliutil import cli

MINIMAL = '''name = "p"
goal = "g"
[research]
topics = ["t"]
[[components]]
name = "c"
description = "d"
'''


def _endpoint(base_url: str, key_env: str | None) -> str:
    key = f'api_key_env = "{key_env}"\n' if key_env else ""
    return MINIMAL + f'''
[backends.local]
kind = "openai"
base_url = "{base_url}"
{key}
[phases.specification]
model = "local/m"
synthesis_model = "local/m"
'''


# (1) a project file may not send another backend's own key anywhere it likes

def test_the_guarded_variables_come_from_the_registry() -> None:
    guarded = guarded_key_vars()
    assert {"GEMINI_API_KEY", "SPARC_GEMINI_API_KEY", "OPENAI_API_KEY", "GOOGLE_API_KEY"} <= set(guarded)
    assert "api.openai.com" in guarded["OPENAI_API_KEY"]


@pytest.mark.parametrize("url", ["http://127.0.0.1:18555/v1", "https://evil.example/v1"])
@pytest.mark.parametrize("variable", ["GEMINI_API_KEY", "OPENAI_API_KEY", "GOOGLE_API_KEY"])
def test_a_table_may_not_borrow_another_backends_key(url: str, variable: str,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(variable, "MARKER-BORROWED-KEY-0001")
    monkeypatch.delenv("SPARC_ALLOW_KEY_VARS", raising=False)
    project = parse_project(_endpoint(url, variable), "p.toml")
    with pytest.raises(EndpointConfigError) as caught:
        chat_config("local", project.backends["local"], sim_url=None, timeout_s=5)
    message = str(caught.value)
    assert variable in message and "SPARC_ALLOW_KEY_VARS" in message and "api_key_env" in message
    assert "MARKER-BORROWED-KEY-0001" not in message and "\n" not in message
    assert "SPARC_ALLOW_KEY_VARS" in caught.value.fix


def test_the_user_may_allow_a_key_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GEMINI_API_KEY", "MARKER-ALLOWED-KEY-0001")
    monkeypatch.setenv("SPARC_ALLOW_KEY_VARS", "OTHER_KEY, gemini_api_key")
    project = parse_project(_endpoint("http://127.0.0.1:18555/v1", "GEMINI_API_KEY"), "p.toml")
    cfg = chat_config("local", project.backends["local"], sim_url=None, timeout_s=5)
    assert cfg.api_key == "MARKER-ALLOWED-KEY-0001"


@pytest.mark.parametrize(("url", "variable"), [("https://api.openai.com/v1", "OPENAI_API_KEY"),
                                               ("http://localhost:4000", "LITELLM_MASTER_KEY"),
                                               ("https://openrouter.ai/api/v1", "OPENROUTER_API_KEY")])
def test_legitimate_setups_keep_working(url: str, variable: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(variable, "MARKER-OWN-KEY-0001")
    monkeypatch.delenv("SPARC_ALLOW_KEY_VARS", raising=False)
    project = parse_project(_endpoint(url, variable), "p.toml")
    cfg = chat_config("local", project.backends["local"], sim_url=None, timeout_s=5)
    assert cfg.api_key == "MARKER-OWN-KEY-0001"


def test_the_built_in_openai_backend_reads_its_own_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "MARKER-OWN-KEY-0002")
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    assert chat_config("openai", None, sim_url=None, timeout_s=5).api_key == "MARKER-OWN-KEY-0002"


def test_a_borrowed_key_is_exit_2_and_a_doctor_fail(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GEMINI_API_KEY", "MARKER-BORROWED-KEY-0002")
    monkeypatch.delenv("SPARC_ALLOW_KEY_VARS", raising=False)
    path = tmp_path / "p.toml"
    path.write_text(_endpoint("http://127.0.0.1:9/v1", "GEMINI_API_KEY"), encoding="utf-8")
    code, output = cli("run", "--project", str(path), "--phases", "1", "--output", str(tmp_path / "run"),
                       "--no-progress")
    assert code == 2 and "SPARC_ALLOW_KEY_VARS=GEMINI_API_KEY" in output and "Traceback" not in output
    assert "MARKER-BORROWED-KEY-0002" not in output
    code, output = cli("doctor", "--project", str(path), "--json")
    checks = {c["name"]: c for c in json.loads(output)["checks"]}
    assert checks["local credentials"]["level"] == "fail" and code == 1
    assert "api_key_env" in checks["local credentials"]["fix"]
    assert "MARKER-BORROWED-KEY-0002" not in output


# (2) a password in base_url is never shown nor written

def test_userinfo_is_hidden() -> None:
    assert hide_userinfo("at http://user:hunter2pw@host:8/v1 now") == "at http://user:***@host:8/v1 now"
    assert hide_userinfo("https://host/v1") == "https://host/v1"
    secrets = SecretRegistry()
    from sparc_cloud.redact import url_secrets
    secrets.add(*url_secrets("http://user:hunter%402pw@host/v1"))
    assert "hunter" not in secrets.redact("hunter%402pw and hunter@2pw")


class _Refuses(BaseHTTPRequestHandler):
    def do_POST(self) -> None:  # noqa: N802
        body = b'{"error": {"message": "no such thing", "type": "invalid_request_error"}}'
        self.send_response(400)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:  # noqa: N802
        body = b'{"object": "list", "data": [{"id": "m", "object": "model"}]}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def refusing_server() -> Iterator[int]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Refuses)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def test_a_password_in_base_url_is_never_printed_nor_stored(tmp_path: Path, refusing_server: int) -> None:
    url = f"http://user:hunter2pw@127.0.0.1:{refusing_server}/v1"
    path = tmp_path / "p.toml"
    path.write_text(_endpoint(url, None), encoding="utf-8")
    out = tmp_path / "run"
    code, output = cli("run", "--project", str(path), "--phases", "1", "--output", str(out), "--no-progress")
    assert code != 0 and "user:***@127.0.0.1" in output, output
    assert "hunter2pw" not in output
    written = [p for p in out.rglob("*") if p.is_file()]
    assert any(p.name == "bundle.json" for p in written)
    for p in written:
        assert "hunter2pw" not in p.read_text(encoding="utf-8", errors="replace"), p
    for args in (("doctor", "--project", str(path)), ("doctor", "--project", str(path), "--json")):
        code, output = cli(*args)
        assert "hunter2pw" not in output and "user:***@" in output, output


# (15) error messages cap the values they echo; (20) base_url is checked at load

def test_a_huge_value_is_not_echoed_whole() -> None:
    from sparc_cloud.errors import ConfigError
    from sparc_cloud.structured import read_answer

    huge = "x" * 200_000
    with pytest.raises(ConfigError) as caught:
        parse_project(MINIMAL + f'[phases.specification]\nmodel = 5\n[backends.{"b" * 300}]\nkind = "{huge}"\n',
                      "p.toml")
    assert len(str(caught.value)) < 2_000 and "characters)" in str(caught.value)
    answer = json.dumps({"overview": "o", "components": [
        {"name": "a", "responsibility": "r", "interface": "i", "depends_on": [huge]}]})
    model, errors = read_answer("architecture", answer)
    assert model is None and errors and all(len(e) < 1_000 for e in errors), [len(e) for e in errors]


@pytest.mark.parametrize(("url", "says"), [("http://[::1]:99999/v1", "not a usable URL"),
                                          ("http://localhost:0/v1", "port 0"),
                                          ("http://local\x1b[31mhost/v1", "control character"),
                                          ("http://local\nhost/v1", "control character")])
def test_a_bad_base_url_is_refused_at_load(url: str, says: str, tmp_path: Path) -> None:
    path = tmp_path / "p.toml"
    path.write_text(_endpoint(json.dumps(url)[1:-1], None), encoding="utf-8")
    code, output = cli("run", "--project", str(path), "--dry-run")
    assert code == 2 and says in output and "\x1b" not in output, output
