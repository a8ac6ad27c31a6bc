"""The one retry policy both clients share (tenacity underneath).

What is retried is decided by the error type (see `classify.py`): `RateLimited`, `TransientError` and
`MalformedResponse` (the last only `malformed_retries` times); a refused connection to this machine
(`Unreachable` on a loopback address) is given up after `loopback_attempts` tries. The wait is
`min(max_wait, max(server hint, backoff))`, where backoff doubles from `initial_s` up to `max_backoff_s`
with +-30 % jitter; attempts and the total deadline are bounded. Each retry is reported to `on_retry`
(the UI event) and a rate-limit hint to `on_rate_limited` (which pauses the limiter key for every
thread)."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from tenacity import RetryCallState, Retrying, retry_if_exception

from sparc_cloud import defaults
from sparc_cloud.errors import MalformedResponse, RateLimited, RetriesExhausted, RetryableError, Unreachable
from sparc_cloud.http.clock import Clock

T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    """Bounds and pacing of retries. `time_scale` shrinks every duration (the simulator uses it)."""

    max_attempts: int = defaults.RETRY_MAX_ATTEMPTS
    deadline_s: float = defaults.RETRY_DEADLINE_S
    initial_s: float = defaults.RETRY_INITIAL_S
    max_backoff_s: float = defaults.RETRY_MAX_BACKOFF_S
    max_wait_s: float = defaults.RETRY_MAX_WAIT_S
    jitter: float = defaults.RETRY_JITTER
    malformed_retries: int = defaults.MALFORMED_RETRIES
    time_scale: float = 1.0
    loopback_attempts: int = defaults.LOOPBACK_CONNECT_ATTEMPTS


@dataclass(frozen=True)
class RetryNotice:
    """One retry about to happen: what failed, how, and how long we wait."""

    endpoint: str
    attempt: int
    status: int | None
    wait_s: float
    reason: str
    rate_limited: bool


def call_with_retry(
    fn: Callable[[], T],
    *,
    policy: RetryPolicy,
    clock: Clock,
    endpoint: str,
    on_retry: Callable[[RetryNotice], None] | None = None,
    on_rate_limited: Callable[[float], None] | None = None,
    rng: random.Random | None = None,
) -> tuple[T, int]:
    """Run `fn` under the policy; return its result and the number of attempts it took."""
    rand = rng or random.Random()  # noqa: S311 - jitter, not crypto (clients pass their own: seeding costs a syscall)
    start = clock.now()
    malformed_seen = [0]
    scale = policy.time_scale

    def should_retry(exc: BaseException) -> bool:
        if isinstance(exc, MalformedResponse):
            malformed_seen[0] += 1
            return malformed_seen[0] <= policy.malformed_retries
        return isinstance(exc, RetryableError)

    def wait(state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        exponent = float(state.attempt_number - 1)
        backoff = min(policy.max_backoff_s, policy.initial_s * 2.0**exponent) * scale
        backoff *= 1 + rand.uniform(-policy.jitter, policy.jitter)
        hint = float(exc.delay) if isinstance(exc, RetryableError) and exc.delay is not None else 0.0
        hint *= 1 + rand.uniform(0, 0.1)
        cap = max(policy.max_wait_s * scale, hint)  # never wait less than the server asked
        return float(min(cap, max(hint, backoff)))

    def stop(state: RetryCallState) -> bool:
        if state.attempt_number >= policy.max_attempts:
            return True
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, Unreachable) and exc.loopback and state.attempt_number >= policy.loopback_attempts:
            return True
        return clock.now() - start + (state.upcoming_sleep or 0.0) > policy.deadline_s * scale

    def before_sleep(state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        status = getattr(exc, "status", None)
        if isinstance(exc, RateLimited) and exc.delay and on_rate_limited:
            on_rate_limited(exc.delay)
        if on_retry:
            where = endpoint
            if isinstance(exc, Unreachable):  # say where we tried and which setting says so, on every retry
                where = str(exc)
            on_retry(
                RetryNotice(
                    endpoint=where,
                    attempt=state.attempt_number,
                    status=status,
                    wait_s=state.upcoming_sleep or 0.0,
                    reason=str(exc)[:300] if exc else "",
                    rate_limited=isinstance(exc, RateLimited),
                )
            )

    retrying = Retrying(
        sleep=clock.sleep,
        stop=stop,
        wait=wait,
        retry=retry_if_exception(should_retry),
        before_sleep=before_sleep,
        reraise=True,
    )
    attempts = 0
    try:
        for attempt in retrying:
            attempts = attempt.retry_state.attempt_number
            with attempt:
                result = fn()
    except RetryableError as exc:
        elapsed = clock.now() - start
        what = "rate limited" if isinstance(exc, RateLimited) else "failing"
        if isinstance(exc, Unreachable):
            check = f"Check {exc.setting}" if exc.setting else "Check the address"
            running = " (is the server running?)" if exc.loopback else " and the network"
            raise RetriesExhausted(f"{exc}; gave up after {attempts} attempt(s) over {elapsed:.1f} s. "
                                   f"{check}{running}.", attempts=attempts, status=None) from exc
        raise RetriesExhausted(
            f"{endpoint}: still {what} after {attempts} attempt(s) over {elapsed:.1f} s; "
            f"last error: {exc}. Try again later, or raise SPARC_RETRY_MAX_ATTEMPTS / "
            f"SPARC_RETRY_DEADLINE_S.",
            attempts=attempts,
            status=exc.status,
        ) from exc
    return result, attempts
