"""Webhook notifications (`--notify URL`): phase done, agent failed, rate-limited for long, run finished.

Slack and Discord incoming webhooks get their own body shapes ({"text"} / {"content"}); any other URL gets
the event as generic JSON. Posts happen on a background thread so a slow webhook never slows the run. A
post that meets a connection error, a 429 or a 5xx is retried under the shared retry policy (3 attempts,
backoff from 1 s, a Retry-After hint honoured up to 30 s); one that still fails is logged (with its URL
masked) and never fails the run."""

from __future__ import annotations

import logging
import queue
import threading
from dataclasses import asdict
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
NOTIFIED = {"phase_done", "agent_failed", "run_done"}


def mask_url(url: str) -> str:
    """`https://hooks.slack.com/***`: scheme and host only (webhook paths are credentials)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname or '?'}/***"


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


class Notifier:
    """An event sink posting the notified events to every URL."""

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
        self.failures = 0
        for url in urls:  # the whole URL is a secret: mask it wherever it could be printed
            secrets.add(url, urlsplit(url).path)
        self._queue: queue.Queue[Event | None] = queue.Queue()
        self._thread = threading.Thread(target=self._work, name="sparc-notify", daemon=True)
        self._thread.start()

    def __call__(self, event: Event) -> None:
        waited = float(event.data.get("wait_s") or 0.0) if isinstance(event.data, dict) else 0.0
        if event.kind in NOTIFIED or (event.kind in ("agent_rate_limited", "agent_waiting")
                                      and waited >= self.long_wait_s):
            self._queue.put(event)

    def _work(self) -> None:
        while True:
            event = self._queue.get()
            if event is None:
                return
            for url in self.urls:
                endpoint = f"webhook {mask_url(url)}"
                try:
                    call_with_retry(partial(self._post, url, endpoint, event), policy=self.policy, clock=self.clock,
                                    endpoint=endpoint)
                except SparcError as exc:
                    self.failures += 1
                    log.warning("notification to %s failed (%s); the run goes on", mask_url(url),
                                self.secrets.redact(str(exc)))

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

    def close(self, timeout_s: float = 10.0) -> None:
        """Send what is queued (waiting at most `timeout_s`) and stop."""
        self._queue.put(None)
        self._thread.join(timeout_s)
