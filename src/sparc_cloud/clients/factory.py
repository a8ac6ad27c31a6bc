"""Build the Gemini and Codex clients from settings: the one place that knows how settings map to them."""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import IO

import requests

from sparc_cloud import defaults
from sparc_cloud.clients.auth import CodexAuth, GeminiOAuth
from sparc_cloud.clients.codex import CodexClient
from sparc_cloud.clients.gemini import DEFAULT_FALLBACK, GeminiClient, GeminiConfig
from sparc_cloud.clients.polling import PollPolicy
from sparc_cloud.http.clock import Clock
from sparc_cloud.http.ratelimit import Key, RateLimit, RateLimiters
from sparc_cloud.http.retry import RetryNotice, RetryPolicy
from sparc_cloud.http.session import Session
from sparc_cloud.redact import SecretRegistry
from sparc_cloud.settings import Settings, setting_name

CODEX_POLL_KEY: Key = ("codex", "poll", "*")


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
    """What both clients share in one run.

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
        if self.session is None:
            self.session = Session(self.pool_size)
        if self.limiters is None:
            self.limiters = RateLimiters(self.clock, self.limits, time_scale=self.time_scale)
        if self.on_retry is None:
            self.on_retry = notice_printer(secrets=self.secrets)

    def policy(self) -> RetryPolicy:
        """The shared retry policy from settings."""
        s = self.settings
        return RetryPolicy(max_attempts=s.retry_max_attempts, deadline_s=s.retry_deadline_s,
                           initial_s=s.retry_initial_s, max_wait_s=s.retry_max_wait_s, time_scale=self.time_scale)


def make_gemini(ctx: ClientContext, *, fallback: dict[str, str] | None = None) -> GeminiClient:
    """A Gemini client: API-key mode when a key is configured, else Code Assist with the OAuth file."""
    s = ctx.settings
    assert ctx.limiters is not None and ctx.session is not None
    api_key = s.gemini_api_key.get_secret_value() if s.gemini_api_key else None
    use_fallback = fallback if fallback is not None else (DEFAULT_FALLBACK if s.gemini_fallback else None)
    config = GeminiConfig(
        mode="api-key" if api_key else "code-assist",
        base_url=s.code_assist_base(),
        api_base_url=s.gemini_api_base_url,
        project=s.google_cloud_project,
        timeout_s=s.http_timeout_s,
        fallback=use_fallback,
        base_setting=s.code_assist_source(),
        api_setting=setting_name("gemini_api_base_url"),
    )
    oauth = None
    if not api_key:
        secret = s.gemini_oauth_client_secret.get_secret_value() if s.gemini_oauth_client_secret else None
        ctx.secrets.add(secret)
        oauth = GeminiOAuth(
            s.gemini_creds_path(), clock=ctx.clock, secrets=ctx.secrets, session=ctx.session,
            client_id=s.gemini_oauth_client_id, client_secret=secret, token_url=s.gemini_oauth_token_url,
            refresh_command=s.gemini_refresh_command or None, time_scale=ctx.time_scale,
            timeout_s=s.http_timeout_s,
        )
    return GeminiClient(config, session=ctx.session, limiters=ctx.limiters, policy=ctx.policy(), clock=ctx.clock,
                        secrets=ctx.secrets, oauth=oauth, api_key=api_key, on_retry=ctx.on_retry)


def make_codex(ctx: ClientContext) -> CodexClient:
    """A Codex client with the auth.json credentials.

    SPARC_CODEX_POLLS_PER_MINUTE, when set, is the poll budget (over the default and the project's
    `[limits."codex.poll"]`); unset, the limiter keeps what it has (the default, or the project's)."""
    s = ctx.settings
    assert ctx.limiters is not None and ctx.session is not None
    auth = CodexAuth(
        s.codex_auth_path(), clock=ctx.clock, secrets=ctx.secrets, session=ctx.session, refresh=s.codex_refresh,
        refresh_url=s.codex_refresh_url, client_id=s.codex_oauth_client_id, timeout_s=s.http_timeout_s,
    )
    if s.codex_polls_per_minute is not None:
        burst = ctx.limiters.limit_for(CODEX_POLL_KEY).burst
        ctx.limiters.limits[CODEX_POLL_KEY] = RateLimit(per_minute=s.codex_polls_per_minute, burst=burst)
    return CodexClient(
        base_url=s.codex_base_url, auth=auth, session=ctx.session, limiters=ctx.limiters, policy=ctx.policy(),
        clock=ctx.clock, secrets=ctx.secrets, path_style=s.codex_path_style,
        poll=PollPolicy(time_scale=ctx.time_scale), timeout_s=s.http_timeout_s, base_setting="SPARC_CODEX_BASE_URL",
        on_retry=ctx.on_retry,
    )
