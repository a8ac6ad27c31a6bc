"""What every client of a run shares (`ClientContext`: settings, clock, secrets, session, limiters, retry policy).
Each provider's client module builds its client from it (`make_<client>(ctx)`)."""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import IO

import requests

from sparc_cloud import defaults
from sparc_cloud.http.clock import Clock
from sparc_cloud.http.ratelimit import Key, RateLimit, RateLimiters
from sparc_cloud.http.retry import RetryNotice, RetryPolicy
from sparc_cloud.http.session import Session
from sparc_cloud.redact import SecretRegistry, url_secrets
from sparc_cloud.settings import Settings


def notice_printer(stream: IO[str] | None = None, secrets: SecretRegistry | None = None
                   ) -> Callable[[RetryNotice], None]:
    """A retry listener that prints one line per retry (what failed, where, when the next try is)."""

    def emit(notice: RetryNotice) -> None:
        out = stream or sys.stderr
        status = f" (HTTP {notice.status})" if notice.status else ""
        line = f"retry {notice.attempt + 1} in {notice.wait_s:.1f} s: {notice.endpoint}{status}"
        out.write((secrets.redact(line) if secrets else line) + "\n")
        out.flush()

    return emit


@dataclass
class ClientContext:
    """What every client shares in one run.

    `on_retry` hears of the retries of calls made outside an agent (project discovery, the environment
    list, doctor); by default each is a line on stderr, so a run never waits in silence."""

    settings: Settings
    clock: Clock
    secrets: SecretRegistry
    time_scale: float = 1.0
    limits: dict[Key, RateLimit] | None = None
    pool_size: int = defaults.CONCURRENCY
    session: requests.Session | None = None
    limiters: RateLimiters | None = None
    on_retry: Callable[[RetryNotice], None] | None = field(default=None)

    def __post_init__(self) -> None:
        # A password written into any URL setting (`https://user:pw@host`) is a secret like a token: masked in
        # every log, record and error of the run.
        for value in self.settings.model_dump().values():
            if isinstance(value, str) and "@" in value and "://" in value:
                self.secrets.add(*url_secrets(value))
        if self.session is None:
            self.session = Session(self.pool_size)
        if self.limiters is None:
            limits = self.limits
            if limits is None:  # no project (doctor, a kind's own commands, benchmarks): every kind's default limits
                from sparc_cloud.backends.assemble import default_limits  # backends build on clients: import late

                limits = default_limits()
            self.limiters = RateLimiters(self.clock, limits, time_scale=self.time_scale)
        if self.on_retry is None:
            self.on_retry = notice_printer(secrets=self.secrets)

    def policy(self) -> RetryPolicy:
        """The shared retry policy from settings."""
        s = self.settings
        return RetryPolicy(max_attempts=s.retry_max_attempts, deadline_s=s.retry_deadline_s,
                           initial_s=s.retry_initial_s, max_wait_s=s.retry_max_wait_s, time_scale=self.time_scale)
