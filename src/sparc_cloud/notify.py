"""Webhook notifications (`--notify URL`): phase done, agent failed, rate-limited for long, run finished.

Slack and Discord incoming webhooks get their own body shapes ({"text"} / {"content"}); any other URL gets
the event as generic JSON. Each webhook has its own queue and its own background thread, so a slow or
failing webhook never slows the run nor the other webhooks. A post that meets a connection error, a 429
or a 5xx is retried under the shared retry policy (3 attempts, backoff from 1 s, a Retry-After hint
honoured up to 30 s); one that still fails is logged (with its URL masked) and never fails the run. At the
end every webhook gets `CLOSE_WAIT_S` (together, not each) to send what is queued; `close()` returns one
line per webhook that failed or did not finish, for the console.

Only whole webhook URLs are registered as secrets: a part of one (its path) could be a word that appears
elsewhere, and masking it everywhere would garble logs and messages."""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import asdict, dataclass, field
from functools import partial
from typing import Any
from urllib.parse import urlsplit

import requests

from sparc_cloud.errors import ApiError, RateLimited, SparcError, TransientError
from sparc_cloud.events import Event
from sparc_cloud.http.classify import parse_header_hint
from sparc_cloud.http.clock import Clock, RealClock
from sparc_cloud.http.retry import RetryPolicy, call_with_retry
from sparc_cloud.redact import SecretRegistry

log = logging.getLogger(__name__)
LONG_WAIT_S = 60.0
MAX_HINT_S = 30.0  # a webhook asking for a longer pause is not worth holding later notifications for
CLOSE_WAIT_S = 3.0  # at the end, how long all webhooks together may take to send what is queued
NOTIFIED = {"phase_done", "agent_failed", "run_done"}


def mask_url(url: str) -> str:
    """`https://hooks.slack.com/***`, `http://10.0.0.5:8080/***`: scheme, host and port only (webhook paths
    and queries are credentials)."""
    parts = urlsplit(url)
    host = parts.hostname or "?"
    if ":" in host:
        host = f"[{host}]"
    try:
        port = parts.port
    except ValueError:
        port = None
    return f"{parts.scheme}://{host}{f':{port}' if port else ''}/***"


def webhook_kind(url: str) -> str:
    """slack, discord or json, from the URL's host."""
    host = (urlsplit(url).hostname or "").lower()
    if host == "hooks.slack.com":
        return "slack"
    if host in ("discord.com", "discordapp.com") and "/api/webhooks/" in url:
        return "discord"
    return "json"


def body_for(kind: str, event: Event, project: str) -> dict[str, Any]:
    """The request body for one event in a webhook's format."""
    text = f"sparc-cloud {project}: {event.agent_id + ' ' if event.agent_id else ''}" \
           f"{event.kind.replace('_', ' ')}{': ' + event.message if event.message else ''}"
    if kind == "slack":
        return {"text": text}
    if kind == "discord":
        return {"content": text[:2000]}
    return {"project": project, **asdict(event)}


@dataclass
class _Hook:
    """One webhook: its queue, its thread and what became of its notifications."""

    number: int
    url: str
    queue: queue.Queue[Event | None] = field(default_factory=queue.Queue)
    thread: threading.Thread | None = None
    queued: int = 0
    delivered: int = 0
    failed: int = 0
    last_error: str = ""

    @property
    def label(self) -> str:
        """`webhook #2 (https://hooks.slack.com/***)`: its place on the command line tells two alike apart."""
        return f"webhook #{self.number} ({mask_url(self.url)})"


class Notifier:
    """An event sink posting the notified events to every URL, each URL on its own thread."""

    def __init__(self, urls: list[str], project: str, secrets: SecretRegistry, *, long_wait_s: float = LONG_WAIT_S,
                 timeout_s: float = 10.0, session: requests.Session | None = None, clock: Clock | None = None,
                 time_scale: float = 1.0) -> None:
        self.urls = urls
        self.project = project
        self.secrets = secrets
        self.long_wait_s = long_wait_s
        self.timeout_s = timeout_s
        self.session = session or requests.Session()
        self.clock = clock or RealClock()  # not the run's: notifications about a Ctrl-C still go out
        self.policy = RetryPolicy(max_attempts=3, initial_s=1.0, max_backoff_s=4.0, max_wait_s=MAX_HINT_S,
                                  deadline_s=60.0, time_scale=time_scale)
        secrets.add(*urls)  # whole URLs only (see the module docstring)
        self.hooks = [_Hook(number, url) for number, url in enumerate(urls, 1)]
        for hook in self.hooks:
            hook.thread = threading.Thread(target=self._work, args=(hook,), name=f"sparc-notify-{hook.number}",
                                           daemon=True)
            hook.thread.start()

    @property
    def failures(self) -> int:
        """Notifications that could not be delivered, over all webhooks."""
        return sum(hook.failed for hook in self.hooks)

    def __call__(self, event: Event) -> None:
        waited = float(event.data.get("wait_s") or 0.0) if isinstance(event.data, dict) else 0.0
        if event.kind in NOTIFIED or (event.kind in ("agent_rate_limited", "agent_waiting")
                                      and waited >= self.long_wait_s):
            for hook in self.hooks:
                hook.queued += 1
                hook.queue.put(event)

    def _work(self, hook: _Hook) -> None:
        endpoint = f"webhook {mask_url(hook.url)}"
        while True:
            event = hook.queue.get()
            if event is None:
                return
            try:
                call_with_retry(partial(self._post, hook.url, endpoint, event), policy=self.policy, clock=self.clock,
                                endpoint=endpoint)
                hook.delivered += 1
            except SparcError as exc:
                hook.failed += 1
                hook.last_error = self.secrets.redact(str(exc))
                log.warning("notification to %s failed (%s); the run goes on", mask_url(hook.url), hook.last_error)
    def _post(self, url: str, endpoint: str, event: Event) -> None:
        try:
            resp = self.session.post(url, json=body_for(webhook_kind(url), event, self.project), timeout=self.timeout_s)
        except requests.RequestException as exc:
            raise TransientError(f"{endpoint}: {type(exc).__name__}", endpoint=endpoint) from None
        status = resp.status_code
        if status == 429 or status >= 500:
            hint = parse_header_hint(resp.headers)
            delay = min(hint, MAX_HINT_S) if hint is not None else None
            kind = RateLimited if status == 429 else TransientError
            raise kind(f"{endpoint}: HTTP {status}", status=status, endpoint=endpoint, delay=delay)
        if status >= 300:
            raise ApiError(f"{endpoint}: HTTP {status}", status=status, endpoint=endpoint)

    def close(self, timeout_s: float | None = None) -> list[str]:
        """Send what is queued, all webhooks together waiting at most `timeout_s` (default `CLOSE_WAIT_S`),
        and stop. Returns one line per webhook that failed or did not finish in time (its URL masked), for the
        console."""
        for hook in self.hooks:
            hook.queue.put(None)
        deadline = time.monotonic() + (CLOSE_WAIT_S if timeout_s is None else timeout_s)
        for hook in self.hooks:
            if hook.thread is not None:
                hook.thread.join(max(0.0, deadline - time.monotonic()))
        return self.problems()

    def problems(self) -> list[str]:
        """One line per webhook with notifications not delivered (failed, or still waiting on a slow server)."""
        lines = []
        for hook in self.hooks:
            missing = hook.queued - hook.delivered
            if missing <= 0:
                continue
            busy = hook.thread is not None and hook.thread.is_alive()
            why = f"last error: {hook.last_error}" if hook.last_error else "it did not answer in time"
            if busy and hook.last_error:
                why += "; then it did not answer in time"
            lines.append(f"warning: {hook.label}: {missing} of {hook.queued} notification(s) not delivered ({why}). "
                         "The run itself is not affected.")
        return lines
