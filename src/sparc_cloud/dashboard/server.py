"""The dashboard's HTTP server: the standard library's ThreadingHTTPServer on 127.0.0.1, read-only.

Routes (every one but the static assets needs `?token=`; a missing or wrong token is 403):
  GET /                 the page
  GET /static/<file>    its script and style (package data; no CDN, works offline)
  GET /api/run          the run as the bundle has it, with live statuses (JSON)
  GET /api/agent?id=X   one agent in full: record, output, diff, worklog, prompt when known (JSON)
  GET /api/events       the run's event stream (`events.jsonl`) as server-sent events; a finished run replays
                        and the stream ends with `event: end`
Any other method is 405: nothing on the page changes the run."""

from __future__ import annotations

import contextlib
import fcntl
import hmac
import json
import logging
import os
import secrets
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path
from stat import S_ISREG
from typing import Any
from urllib.parse import parse_qs, urlsplit

from sparc_cloud.dashboard.state import RunView, event_line, read_no_link

log = logging.getLogger(__name__)
POLL_S = 0.1
HEARTBEAT_S = 10.0
_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8",
          ".png": "image/png", ".svg": "image/svg+xml"}
_CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
        "base-uri 'none'; form-action 'none'; frame-ancestors 'none'")


def asset(name: str) -> bytes | None:
    """A file shipped under `sparc_cloud/dashboard/static/` (None if there is no such file)."""
    if not name or "/" in name or name.startswith("."):
        return None
    item = resources.files("sparc_cloud.dashboard").joinpath("static", name)
    try:
        return item.read_bytes()
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        return None


def folder_busy(folder: Path) -> bool:
    """Whether a run holds the folder's lock now (a `sparc-cloud run` is writing it)."""
    lock = folder / ".lock"
    try:
        handle = lock.open("r", encoding="utf-8")
    except OSError:
        return False
    with handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        except OSError:
            return False
        fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
        return False


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, dashboard: Dashboard, port: int) -> None:
        self.dashboard = dashboard
        super().__init__(("127.0.0.1", port), _Handler)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        log.debug("dashboard: " + format, *args)

    # ------------------------------------------------------------------ plumbing

    def _headers(self, status: int, content_type: str, length: int | None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        if length is not None:
            self.send_header("Content-Length", str(length))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Referrer-Policy", "no-referrer")
        self.send_header("Content-Security-Policy", _CSP)
        self.end_headers()

    def _send(self, status: int, body: bytes, content_type: str = "text/plain; charset=utf-8") -> None:
        self._headers(status, content_type, len(body))
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, data: Any) -> None:
        self._send(200, json.dumps(data, ensure_ascii=False).encode("utf-8"), "application/json; charset=utf-8")

    def _refuse(self) -> None:
        self.send_response(405)
        self.send_header("Allow", "GET, HEAD")
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _refuse  # noqa: N815 - stdlib names

    def do_HEAD(self) -> None:  # noqa: N802 - stdlib name
        self.do_GET()

    def do_GET(self) -> None:  # noqa: N802 - stdlib name
        url = urlsplit(self.path)
        query = parse_qs(url.query)
        dash = self.server.dashboard
        try:
            if url.path.startswith("/static/"):
                body = asset(url.path.removeprefix("/static/"))
                if body is None:
                    self._send(404, b"not found\n")
                else:
                    self._send(200, body, _TYPES.get(Path(url.path).suffix, "application/octet-stream"))
                return
            if url.path == "/favicon.ico":
                self._send(404, b"not found\n")
                return
            if not dash.allowed(query.get("token", [""])[0]):
                self._send(403, b"forbidden: open the URL sparc-cloud printed, with its ?token=...\n")
                return
            if url.path in ("/", "/index.html"):
                self._send(200, asset("index.html") or b"", "text/html; charset=utf-8")
            elif url.path == "/api/run":
                self._json(dash.view.snapshot())
            elif url.path == "/api/agent":
                detail = dash.view.agent(query.get("id", [""])[0])
                if detail is None:
                    self._send(404, b"no such agent\n")
                else:
                    self._json(detail)
            elif url.path == "/api/events":
                self._stream(self.headers.get("Last-Event-ID") or query.get("after", [""])[0])
            else:
                self._send(404, b"not found\n")
        except (BrokenPipeError, ConnectionResetError):
            return

    # ------------------------------------------------------------------ events

    def _stream(self, after: str) -> None:
        """`events.jsonl` as server-sent events from `after` (an id this stream sent: "<inode>-<offset>")."""
        dash = self.server.dashboard
        self._headers(200, "text/event-stream; charset=utf-8", None)
        if self.command == "HEAD":
            return
        self.close_connection = True
        path = dash.view.events_path
        inode, offset = _parse_id(after)
        pending = b""
        last_kind = ""
        beat = time.monotonic()
        with dash.streams():
            while not dash.stopping.is_set():
                try:
                    stat = path.lstat()  # a link planted as events.jsonl is never followed (read_no_link)
                except OSError:
                    stat = None
                if stat is not None and not S_ISREG(stat.st_mode):
                    self.wfile.write(b'event: end\ndata: {"error": "events.jsonl is not a regular file"}\n\n')
                    self.wfile.flush()
                    return
                if stat is not None and (stat.st_ino != inode or stat.st_size < offset):
                    inode, offset, pending = stat.st_ino, 0, b""  # a new run replaced the file: start over
                chunk = b""
                if stat is not None and stat.st_size > offset:
                    chunk = read_no_link(path, offset)
                    offset += len(chunk)
                data = pending + chunk
                position = offset - len(data)  # where `data` starts in the file
                lines = data.split(b"\n")
                pending = lines.pop()
                out = []
                for line in lines:
                    position += len(line) + 1
                    sent = position  # each event's id is the offset just after its line: a reconnect resumes there
                    text = line.decode("utf-8", errors="replace").strip()
                    event = event_line(text) if text else None
                    if event is None:
                        continue  # only events are sent on: never a line of something else
                    last_kind = str(event["kind"])
                    out.append(f"id: {inode}-{sent}\ndata: {text}\n\n")
                if out:
                    self.wfile.write("".join(out).encode("utf-8"))
                    self.wfile.flush()
                    beat = time.monotonic()
                elif last_kind == "run_done" and not pending and not dash.following.is_set() \
                        and not folder_busy(dash.view.folder):
                    self.wfile.write(b"event: end\ndata: {}\n\n")
                    self.wfile.flush()
                    return
                elif time.monotonic() - beat > HEARTBEAT_S:
                    self.wfile.write(b": keep-alive\n\n")
                    self.wfile.flush()
                    beat = time.monotonic()
                dash.stopping.wait(POLL_S)


def _parse_id(value: str) -> tuple[int, int]:
    try:
        inode, offset = value.split("-", 1)
        return int(inode), int(offset)
    except ValueError:
        return -1, 0


class Dashboard:
    """The live dashboard of one run folder on 127.0.0.1 (a random port and token unless given).

    `following` is set while a run in this process may still write the folder (`run --dashboard`): the event
    stream then waits for more instead of ending after a finished run's `run_done`."""

    def __init__(self, folder: Path, *, port: int = 0, token: str | None = None, following: bool = False) -> None:
        self.view = RunView(folder)
        self.token = token or secrets.token_urlsafe(18)
        self.stopping = threading.Event()
        self.following = threading.Event()
        if following:
            self.following.set()
        self._active = 0
        self._lock = threading.Lock()
        self._server = _Server(self, port)
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        """The port it listens on."""
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        """The page's URL, token included."""
        return f"http://127.0.0.1:{self.port}/?token={self.token}"

    def allowed(self, token: str) -> bool:
        """Whether a request's token is this dashboard's (compared in constant time)."""
        return bool(token) and hmac.compare_digest(token.encode(), self.token.encode())

    @contextlib.contextmanager
    def streams(self) -> Any:
        """Count an open event stream while it lasts."""
        with self._lock:
            self._active += 1
        try:
            yield
        finally:
            with self._lock:
                self._active -= 1

    def start(self) -> Dashboard:
        """Serve in a background thread."""
        self._thread = threading.Thread(target=self._server.serve_forever, name="sparc-dashboard", daemon=True)
        self._thread.start()
        return self

    def finish(self, grace_s: float = 2.0) -> None:
        """The run writing the folder is over: let open event streams send what is left and end (up to
        `grace_s` seconds)."""
        self.following.clear()
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline:
            with self._lock:
                if self._active == 0:
                    return
            time.sleep(POLL_S)

    def stop(self) -> None:
        """Stop serving and close every stream."""
        self.stopping.set()
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> Dashboard:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def environment_port() -> int | None:
    """SPARC_DASHBOARD_PORT, if set to a number."""
    value = os.environ.get("SPARC_DASHBOARD_PORT", "")
    return int(value) if value.isdigit() else None
