"""What a second user trial found: a project file that borrows another backend's key, a password in a base_url
printed and stored, escape sequences and stale phases in `export`, huge echoed values, and CLI rough edges."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from sparc_cloud.backends.openai import EndpointConfigError, chat_config, guarded_key_vars
from sparc_cloud.project import parse_project
from sparc_cloud.redact import SecretRegistry, hide_userinfo
from tests.cliutil import MINIMAL, cli


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


# (3) (13) (18) export: escapes, stale phases, a target inside the run

@pytest.fixture(scope="module")
def _one_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.cliutil import sim_run

    out = tmp_path_factory.mktemp("once") / "run"
    code, output = sim_run(out)
    assert code == 0, output
    return out


@pytest.fixture
def finished(_one_run: Path, tmp_path: Path) -> Path:
    import shutil

    out = tmp_path / "run"
    shutil.copytree(_one_run, out)
    return out


def _change_bundle(out: Path, change: Callable[[dict[str, Any]], None]) -> None:
    data = json.loads((out / "bundle.json").read_text(encoding="utf-8"))
    change(data)
    (out / "bundle.json").write_text(json.dumps(data), encoding="utf-8")


def _set_diff(out: Path, agent_id: str, diff: str) -> None:
    def change(data: dict[str, Any]) -> None:
        for agent in data["phases"][3]["agents"]:
            if agent["id"] == agent_id:
                agent["diff"] = diff
    _change_bundle(out, change)


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()} \
        if folder.exists() else {}


def test_export_cleans_escape_sequences_out_of_document_titles(finished: Path, tmp_path: Path) -> None:
    def change(data: dict[str, Any]) -> None:
        data["phases"][0]["agents"][0]["title"] = "Research \x1b[31mred\x1b]0;owned\x07"
    _change_bundle(finished, change)
    target = tmp_path / "out"
    code, output = cli("export", str(finished), "--to", str(target))
    assert code == 0, output
    written = b"".join(_files(target / "docs").values())
    assert b"\x1b" not in written and b"\x07" not in written and b"Research \\x1b[31mred" in written


def test_export_refuses_a_path_with_a_control_character(finished: Path, tmp_path: Path) -> None:
    name = "\x1b[31mred.txt"
    _set_diff(finished, "p4-component-1", f"diff --git a/{name} b/{name}\nnew file mode 100644\n--- /dev/null\n"
                                          f"+++ b/{name}\n@@ -0,0 +1 @@\n+red\n")
    target = tmp_path / "out"
    code, output = cli("export", str(finished), "--to", str(target))
    assert code == 2 and "p4-component-1" in output and "control character" in output, output
    assert "\x1b" not in output and not target.exists()


def test_the_link_error_names_the_diff_that_creates_the_link(finished: Path, tmp_path: Path) -> None:
    _set_diff(finished, "p4-component-2", "diff --git a/lnk2 b/lnk2\nnew file mode 120000\n--- /dev/null\n"
                                          "+++ b/lnk2\n@@ -0,0 +1 @@\n+/etc/passwd\n\\ No newline at end of file\n")
    target = tmp_path / "out"
    code, output = cli("export", str(finished), "--to", str(target))
    assert code == 2 and "The diff of p4-component-2 creates lnk2 as a symbolic link" in output, output
    assert "p4-component-1" not in output and not target.exists()


def test_export_of_stale_phases_is_refused_unless_asked(finished: Path, tmp_path: Path) -> None:
    def change(data: dict[str, Any]) -> None:
        for phase in data["phases"][3:]:
            phase["stale"], phase["stale_reason"] = True, "it reads phase 3 (architecture), which was rerun"
    _change_bundle(finished, change)
    target = tmp_path / "out"
    code, output = cli("export", str(finished), "--to", str(target))
    assert code == 2 and "phase 4 (refinement)" in output and "phase 5 (completion)" in output, output
    assert "--phases 4-5" in output and "--backend sim" in output and "--stale-ok" in output
    assert not target.exists()
    code, output = cli("export", str(finished), "--to", str(target), "--stale-ok")
    assert code == 0 and "stale" in output and (target / "docs" / "sparc").is_dir(), output


@pytest.mark.parametrize("inside", ["", "phase-4-refinement", "new/deeper"])
def test_export_into_the_run_folder_is_refused(finished: Path, inside: str) -> None:
    before = _files(finished)
    code, output = cli("export", str(finished), "--to", str(finished / inside))
    assert code == 2 and "inside the run folder" in output, output
    assert _files(finished) == before and not (finished / "new").exists()


def test_a_run_folder_inside_the_targets_git_is_refused(_one_run: Path, tmp_path: Path) -> None:
    import shutil

    target = tmp_path / "checkout"
    run = target / ".git" / "run"
    shutil.copytree(_one_run, run)
    code, output = cli("export", str(run), "--to", str(target))
    assert code == 2 and ".git" in output, output
    assert sorted(p.name for p in target.iterdir()) == [".git"]


# (19) CLI rough edges

def test_an_option_and_its_old_spelling_together_are_refused() -> None:
    code, output = cli("run", "--project", "memory-extension", "--backend", "sim", "--codex-env", "foo",
                       "--environment", "bar", "--dry-run")
    assert code == 2 and "--codex-env" in output and "--environment" in output, output


def test_usage_lines_use_plain_metavars() -> None:
    for command, usage in (("export", "export [OPTIONS] RUN_DIR"), ("init", "init [OPTIONS] NAME"),
                           ("report", "report [OPTIONS] [RUN_DIR]")):
        code, output = cli(command, "--help")
        assert code == 0 and usage in output, output


def test_quiet_prints_no_describe_lines(tmp_path: Path) -> None:
    from tests.cliutil import FAST

    code, output = cli("-q", "run", "--project", "memory-extension", "--backend", "sim", "--sim-time-scale", FAST,
                       "--output", str(tmp_path / "run"), "--phases", "1")
    assert code == 0 and "gemini:" not in output and "Code Assist at" not in output, output
    assert output.count("\n") == 1, output
