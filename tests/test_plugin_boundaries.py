"""Backends are plug-ins: provider names appear only in their own modules, the registry and bundled data.

A provider's name in a shared module (the runner, the pipeline, the CLI, `http/`...) is a seam leaking: adding a
fourth provider would mean editing it. The scan is case-insensitive and matches inside identifiers too
(`GeminiSettings`, `codex_env`), so a new mention anywhere outside the allow-list fails this test."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import sparc_cloud

PACKAGE = Path(sparc_cloud.__file__).parent
PROVIDERS = ("gemini", "codex", "openai")
NAME = re.compile("|".join(PROVIDERS), re.IGNORECASE)

# A provider's own modules: `backends/<p>.py`, `clients/<p>*.py`, `sim/<p>*.py` (the file name starts with it).
OWN_DIRS = ("backends", "clients", "sim")
# Named explicitly: the registry maps names to kinds (registry_fields.py is its pydantic half, composing the
# providers' settings and project tables); sim/chat.py is the OpenAI-compatible simulator's routes.
ALLOWED = {"backends/registry.py", "backends/registry_fields.py", "sim/chat.py"}
# Bundled data: the built-in projects, prompt templates and `init`'s project template name the models they run on.
DATA_DIRS = ("projects", "prompts", "templates")
# Shared modules that still name a provider while a change moves them out, each with why (none now).
# This list only shrinks: an entry whose file no longer names a provider fails the test until it is removed.
PENDING: dict[str, str] = {}


def own_module(rel: str) -> bool:
    """Whether a file (relative to the package) is allowed to name providers."""
    parts = rel.split("/")
    if rel in ALLOWED or parts[0] in DATA_DIRS:
        return True
    return len(parts) == 2 and parts[0] in OWN_DIRS and parts[1].lower().startswith(PROVIDERS)


def offenders(root: Path = PACKAGE) -> dict[str, list[str]]:
    """Shared files that name a provider -> their first few offending lines."""
    found: dict[str, list[str]] = {}
    for path in sorted(root.rglob("*")):
        if not path.is_file() or path.suffix not in (".py", ".js", ".html", ".css", ".toml", ".md", ".txt", ".in"):
            continue
        rel = path.relative_to(root).as_posix()
        if own_module(rel):
            continue
        lines = [f"{n}: {line.strip()}" for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
                 if NAME.search(line)]
        if lines:
            found[rel] = lines[:3]
    return found


def test_shared_modules_name_no_provider() -> None:
    leaks = {rel: lines for rel, lines in offenders().items() if rel not in PENDING}
    report = "\n".join(f"{rel}:\n    " + "\n    ".join(lines) for rel, lines in leaks.items())
    assert not leaks, ("These shared modules name a provider; move the provider's part into its own module "
                       "(backends/<p>.py, clients/<p>*.py, sim/<p>*.py) behind the BackendKind seam:\n" + report)


def test_pending_list_only_names_files_that_still_leak() -> None:
    stale = sorted(set(PENDING) - set(offenders()))
    assert not stale, f"Remove these from PENDING, they name no provider any more: {stale}"


@pytest.mark.parametrize("line", ["from sparc_cloud.clients.codex import CodexClient", "# talk to Gemini here",
                                  'KIND = "OpenAI"'])
def test_the_scan_catches_a_provider_added_to_a_shared_module(tmp_path: Path, line: str) -> None:
    (tmp_path / "pipeline.py").write_text(f'"""The run."""\n{line}\n', encoding="utf-8")
    (tmp_path / "backends").mkdir()
    (tmp_path / "backends" / "codex.py").write_text("CODEX = 1\n", encoding="utf-8")
    assert list(offenders(tmp_path)) == ["pipeline.py"]
    assert offenders(tmp_path)["pipeline.py"] == [f"2: {line}"]


def test_the_real_pipeline_would_be_caught(tmp_path: Path) -> None:
    """The package's own pipeline.py with one provider line added is reported."""
    text = (PACKAGE / "pipeline.py").read_text(encoding="utf-8")
    (tmp_path / "pipeline.py").write_text(text + '\nDEFAULT = "codex"\n', encoding="utf-8")
    assert "pipeline.py" in offenders(tmp_path)


def test_kind_options_have_generic_names_and_keep_the_old_spellings_hidden() -> None:
    from tests.cliutil import cli

    code, output = cli("run", "--help")
    assert code == 0 and "--environment" in output and "--fallback" in output and "SPARC_CODEX_ENVIRONMENT" in output
    assert "--codex-env" not in output and "--gemini-fallback" not in output
    code, output = cli("run", "--project", "memory-extension", "--codex-env", "e1", "--gemini-fallback", "--dry-run")
    assert code == 0, output
    code, output = cli("codex", "--help")  # the Codex kind's sub-app, added through the registry
    assert code == 0 and "envs" in output


def test_the_simulator_is_assembled_from_each_providers_module(tmp_path: Path) -> None:
    """Routes, credential files, client settings, `sim serve` lines and fault endpoints come from sim/<p>*.py."""
    from sparc_cloud.backends.registry import SIM_MODULES
    from sparc_cloud.sim import SimConfig, Simulator
    from sparc_cloud.sim.config import ENDPOINTS, Fault
    from sparc_cloud.sim.server import providers, routes
    from sparc_cloud.sim.state import SIM_OAUTH_CLIENT_SECRET

    assert [m.__name__ for m in providers()] == list(SIM_MODULES)
    assert len(routes()) == sum(len(m.ROUTES) for m in providers())
    assert {"gemini.generate", "codex.create", "openai.chat", "oauth.token"} <= set(ENDPOINTS)
    with pytest.raises(ValueError, match="created-502 applies to endpoint codex.create only"):
        Fault(endpoint="gemini.generate", responses=["created-502"])
    with pytest.raises(ValueError, match="unknown endpoint 'nowhere.call'"):
        Fault(endpoint="nowhere.call", responses=["500"])
    with Simulator(SimConfig()) as sim:
        paths = sim.write_credentials(tmp_path)
        assert set(paths) == {"gemini", "codex"} and all(p.is_file() for p in paths.values())
        settings = sim.client_settings(tmp_path)
        assert settings["gemini_base_url"] == sim.base_url("gemini") == sim.url + "/v1internal"
        assert settings["codex_base_url"] == sim.base_url("codex") == sim.url + "/backend-api"
        lines = sim.serve_lines(paths)
        assert any(line.startswith("SPARC_GEMINI_CREDS=") for line in lines)
        assert any(line.startswith("SPARC_CODEX_AUTH=") for line in lines)
        assert any(line.startswith("OPENAI_BASE_URL=") for line in lines)
        assert not any(SIM_OAUTH_CLIENT_SECRET in line for line in lines)
