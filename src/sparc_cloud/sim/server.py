"""The simulator's HTTP server on loopback: every provider's routes (`sim/<provider>.py`, listed in
`registry.SIM_MODULES`) dispatched through one table, plus the `/_sim/...` control routes."""

from __future__ import annotations

import importlib
import json
import threading
import urllib.parse
from functools import cache
from http.server import ThreadingHTTPServer
from pathlib import Path
from types import ModuleType
from typing import Any

from sparc_cloud.backends.registry import SIM_MODULES
from sparc_cloud.errors import ConfigError
from sparc_cloud.sim import envelopes as env
from sparc_cloud.sim.config import Fault, SimConfig, TaskScript
from sparc_cloud.sim.routing import PLAIN, Reply, Route, SimHandler
from sparc_cloud.sim.state import SIM_OAUTH_CLIENT_ID, SIM_OAUTH_CLIENT_SECRET, SimState


@cache
def providers() -> tuple[ModuleType, ...]:
    """Each provider's simulator module: `NAME`, `ROUTES`, `serve_lines`; with a login also `CREDENTIALS`,
    `BASE_PATH`, `write_credentials`, `written_by_simulator`, `client_settings`; optionally `counters(state)` (its
    own figures in `/_sim/counters`) and `API_KEY` (what its key-authenticated routes accept)."""
    return tuple(importlib.import_module(name) for name in SIM_MODULES)


@cache
def routes() -> tuple[Route, ...]:
    """The route table: every provider's routes, in registry order."""
    return tuple(route for module in providers() for route in module.ROUTES)


def _with_logins() -> list[ModuleType]:
    return [m for m in providers() if hasattr(m, "CREDENTIALS")]


class _Handler(SimHandler):
    server: _Server

    def _dispatch(self, method: str) -> None:
        path = urllib.parse.urlsplit(self.path).path
        # Read the whole body first: an early answer must not leave it in a kept-alive connection.
        length = int(self.headers.get("Content-Length") or 0)
        self._raw = self.rfile.read(length) if length else b""
        try:
            self._route(method, path)
        except Reply as reply:
            if reply.status > 0:  # -1: the connection was reset on purpose
                self.send(reply.status, reply.body, reply.headers)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def do_GET(self) -> None:  # noqa: N802 - stdlib name
        self._dispatch("GET")

    def do_POST(self) -> None:  # noqa: N802 - stdlib name
        self._dispatch("POST")

    def _route(self, method: str, path: str) -> None:
        if path.startswith("/_sim/"):
            return self._control(method, path)
        for route in routes():
            if route.method is None or route.method == method:
                match = route.pattern.match(path)
                if match:
                    return route.handle(self, match)
        raise Reply(404, env.json_error(404, "NOT_FOUND", f"The requested URL {path} was not found on this server."))

    def _control(self, method: str, path: str) -> None:
        if path == "/_sim/counters" and method == "GET":
            raise Reply(200, self.state.snapshot())
        if path == "/_sim/served" and method == "GET":
            with self.state.lock:
                served = [{"kind": k, "model": m, "prompt_sha256": d, "service_s": round(t, 6)}
                          for k, m, d, t in self.state.served]
            raise Reply(200, {"served": served})
        if path == "/_sim/health":
            raise Reply(200, {"ok": True})
        if path == "/_sim/scenario" and method == "POST":
            data = self.json_body(PLAIN) or {}
            try:
                faults = [Fault.model_validate(f) for f in data.get("faults", [])]
                tasks = [TaskScript.model_validate(t) for t in data.get("tasks", [])]
            except ValueError as exc:
                raise Reply(400, env.detail(f"invalid scenario: {exc}")) from None
            self.state.set_scenario(faults, tasks)
            raise Reply(200, {"ok": True, "faults": len(faults), "tasks": len(tasks)})
        raise Reply(404, env.detail("unknown simulator control route"))


def credential_paths(folder: Path) -> dict[str, Path]:
    """Where `sim serve --write-creds folder` puts each provider's credential file, by provider name."""
    return {m.NAME: folder / m.CREDENTIALS for m in _with_logins()}


def client_settings(url: str, paths: dict[str, Path]) -> dict[str, Any]:
    """Settings values that aim sparc-cloud's clients at a simulator at `url` whose credential files are
    at `paths` (by provider name, as `Simulator.write_credentials` returns them)."""
    out: dict[str, Any] = {}
    for module in _with_logins():
        out.update(module.client_settings(url, paths[module.NAME]))
    return out


def _written_by_simulator(path: Path) -> bool:
    """Whether a credential file holds the simulator's fake tokens (so writing over it loses nothing)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and any(m.written_by_simulator(data) for m in _with_logins())


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 256

    def __init__(self, address: tuple[str, int], state: SimState) -> None:
        super().__init__(address, _Handler)
        self.state = state


class Simulator:
    """Every provider's service on 127.0.0.1. Use as a context manager, or `start()` / `stop()`."""

    def __init__(self, config: SimConfig | None = None, *, host: str = "127.0.0.1", port: int = 0) -> None:
        if not 0 <= port <= 65535:
            raise ConfigError(f"Port {port} does not exist: give a port from 1 to 65535 (0 picks a free one).")
        self.config = config or SimConfig()
        self.state = SimState(self.config, [m.counters for m in providers() if hasattr(m, "counters")])
        try:
            self._server = _Server((host, port), self.state)
        except OSError as exc:
            raise ConfigError(f"Cannot listen on {host}:{port}: {exc.strerror or exc}. Choose another port (0 picks a "
                              "free one).") from None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """`http://127.0.0.1:<port>`."""
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def base_url(self, provider: str) -> str:
        """A provider's API base on this simulator (e.g. `.../v1internal`, `.../backend-api`)."""
        module = next(m for m in providers() if provider == m.NAME)
        return self.url + str(getattr(module, "BASE_PATH", ""))

    def start(self) -> Simulator:
        """Serve in a background thread."""
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="sparc-sim", daemon=True)
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        """Serve in this thread (for `sparc-cloud sim serve`)."""
        self._server.serve_forever()

    def stop(self) -> None:
        """Stop serving and close the socket."""
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> Simulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def set_scenario(self, faults: list[Fault], tasks: list[TaskScript] | None = None) -> None:
        """Replace the fault scripts."""
        self.state.set_scenario(faults, tasks or [])

    def counters(self) -> dict[str, Any]:
        """The counters `/_sim/counters` serves."""
        return self.state.snapshot()

    def add_environment(self, name: str | None) -> None:
        """Know the cloud environment a project names (by id or label), so `init NAME` then a sim run works."""
        if name and name.strip():
            self.state.add_environment(name.strip())

    def write_credentials(self, home: Path) -> dict[str, Path]:
        """Write each provider's fake credential file the simulator accepts, under `home`; by provider name.

        Refuses (ConfigError) to overwrite credential files it did not write itself (a real login), and says
        so plainly when `home` is not a writable folder."""
        paths = credential_paths(home)
        inside = " and ".join(f"{Path(m.CREDENTIALS).parts[0]}/" for m in _with_logins())
        if home.exists() and not home.is_dir():
            raise ConfigError(f"{home} is a file, not a folder: give --write-creds a folder (it gets {inside} "
                              "inside).")
        for path in paths.values():
            if path.exists() and not _written_by_simulator(path):
                raise ConfigError(f"{path} already exists and is not a simulator credential file (a real login?); "
                                  "it is left untouched. Give --write-creds an empty folder, e.g. a new temporary "
                                  "one.")
        try:
            for module in _with_logins():
                module.write_credentials(self.state, paths[module.NAME])
        except OSError as exc:
            raise ConfigError(f"Cannot write the simulator's credential files under {home}: "
                              f"{exc.strerror or exc}. Give --write-creds a folder you can write to.") from None
        return paths

    def client_settings(self, home: Path) -> dict[str, Any]:
        """Settings values that aim sparc-cloud's clients at this simulator, with fresh credential files
        written under `home` (merge them over a Settings' values)."""
        return client_settings(self.url, self.write_credentials(home))

    def serve_lines(self, paths: dict[str, Path] | None) -> list[str]:
        """What `sparc-cloud sim serve` prints: the settings that aim each backend here, the credential files."""
        lines = [line for m in providers() for line in m.serve_lines(self.url, (paths or {}).get(m.NAME))]
        return [*lines, f"counters: {self.url}/_sim/counters"]

    @staticmethod
    def oauth_client() -> tuple[str, str]:
        """The OAuth client id and secret the simulator's token endpoint accepts."""
        return SIM_OAUTH_CLIENT_ID, SIM_OAUTH_CLIENT_SECRET

    @staticmethod
    def api_key() -> str:
        """The API key the simulator's key-authenticated routes accept (the first provider's `API_KEY`)."""
        return str(next(m.API_KEY for m in providers() if hasattr(m, "API_KEY")))
