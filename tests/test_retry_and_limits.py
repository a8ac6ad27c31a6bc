"""The shared retry policy and the rate limiters, on a fake clock (nothing really sleeps)."""

from __future__ import annotations

import threading

import pytest

from sparc_cloud.errors import (
    ApiError,
    MalformedResponse,
    RateLimited,
    RetriesExhausted,
    TerminalQuota,
    TransientError,
)
from sparc_cloud.http.clock import FakeClock
from sparc_cloud.http.ratelimit import RateLimit, RateLimiters
from sparc_cloud.http.retry import RetryNotice, RetryPolicy, call_with_retry

POLICY = RetryPolicy(max_attempts=5, deadline_s=600, initial_s=2.0, max_backoff_s=30.0)


def _flaky(errors: list[Exception], result: str = "ok"):  # type: ignore[no-untyped-def]
    calls = {"n": 0}

    def fn() -> str:
        calls["n"] += 1
        if errors:
            raise errors.pop(0)
        return result

    return fn, calls


def test_transient_errors_are_retried_with_growing_backoff() -> None:
    clock = FakeClock()
    fn, calls = _flaky([TransientError("502"), TransientError("503"), TransientError("reset")])
    result, attempts = call_with_retry(fn, policy=POLICY, clock=clock, endpoint="x")
    assert (result, attempts, calls["n"]) == ("ok", 4, 4)
    assert len(clock.sleeps) == 3
    assert 1.4 <= clock.sleeps[0] <= 2.6 and 2.8 <= clock.sleeps[1] <= 5.2 and 5.6 <= clock.sleeps[2] <= 10.4


def test_server_hint_wins_over_a_shorter_backoff() -> None:
    clock = FakeClock()
    fn, _ = _flaky([RateLimited("429", status=429, delay=20.0)])
    notices: list[RetryNotice] = []
    paused: list[float] = []
    call_with_retry(fn, policy=POLICY, clock=clock, endpoint="gemini", on_retry=notices.append,
                    on_rate_limited=paused.append)
    assert clock.sleeps[0] >= 20.0
    assert paused == [20.0]
    assert notices[0].status == 429 and notices[0].rate_limited and notices[0].endpoint == "gemini"


def test_terminal_quota_and_client_errors_are_never_retried() -> None:
    for error in (TerminalQuota("daily"), ApiError("400 bad", status=400)):
        clock = FakeClock()
        fn, calls = _flaky([error])
        with pytest.raises(type(error)):
            call_with_retry(fn, policy=POLICY, clock=clock, endpoint="x")
        assert calls["n"] == 1 and clock.sleeps == []


def test_malformed_body_is_retried_once_then_fails() -> None:
    clock = FakeClock()
    fn, calls = _flaky([MalformedResponse("cut"), MalformedResponse("cut again"), MalformedResponse("x")])
    with pytest.raises(RetriesExhausted, match="after 2 attempt.*cut again"):
        call_with_retry(fn, policy=POLICY, clock=clock, endpoint="x")
    assert calls["n"] == 2


def test_attempts_are_bounded_and_the_error_says_so() -> None:
    clock = FakeClock()
    fn, calls = _flaky([RateLimited("429", status=429, delay=1.0) for _ in range(10)])
    with pytest.raises(RetriesExhausted, match="still rate limited after 5 attempt") as info:
        call_with_retry(fn, policy=POLICY, clock=clock, endpoint="gemini generateContent")
    assert calls["n"] == 5 and info.value.attempts == 5 and info.value.status == 429


def test_total_deadline_stops_retries_before_it_is_crossed() -> None:
    clock = FakeClock()
    policy = RetryPolicy(max_attempts=100, deadline_s=60, initial_s=10.0, max_backoff_s=30.0, jitter=0.0)
    fn, calls = _flaky([TransientError("503") for _ in range(100)])
    with pytest.raises(RetriesExhausted):
        call_with_retry(fn, policy=policy, clock=clock, endpoint="x")
    assert sum(clock.sleeps) <= 60
    assert calls["n"] == 4  # waits 10 + 20 + 30 = 60 fit the deadline; a further 30 s would not


def test_limiter_allows_the_burst_then_spaces_requests() -> None:
    clock = FakeClock()
    limiters = RateLimiters(clock, {("gemini", "generate", "m"): RateLimit(per_minute=60, burst=10)}, safety_s=0.0, headroom=0)
    waits = [limiters.reserve(("gemini", "generate", "m")) for _ in range(13)]
    assert waits[:10] == [0.0] * 10
    assert waits[10:] == pytest.approx([1.0, 2.0, 3.0])


def test_limiter_time_scale_shrinks_intervals() -> None:
    clock = FakeClock()
    limiters = RateLimiters(clock, {("gemini", "generate", "pro"): RateLimit(per_minute=3, burst=1)}, time_scale=0.01,
                            safety_s=0.0, headroom=0)
    assert [limiters.reserve(("gemini", "generate", "pro")) for _ in range(3)] == pytest.approx([0.0, 0.2, 0.4])


def test_pause_holds_every_caller_of_the_key_but_not_other_keys() -> None:
    clock = FakeClock()
    limiters = RateLimiters(clock, {("gemini", "generate", "flash"): RateLimit(per_minute=60, burst=10)}, safety_s=0.0, headroom=0)
    limiters.pause(("gemini", "generate", "flash"), 5.0)
    assert limiters.paused_for(("gemini", "generate", "flash")) == 5.0
    assert limiters.reserve(("gemini", "generate", "flash")) == pytest.approx(5.0)
    assert limiters.reserve(("gemini", "generate", "other")) == 0.0


def test_acquire_requeues_when_a_pause_arrives_during_the_wait() -> None:
    clock = FakeClock()
    limiters = RateLimiters(clock, {("k", "e", "m"): RateLimit(per_minute=60, burst=1)})
    key = ("k", "e", "m")
    limiters.acquire(key)
    original_sleep = clock.sleep

    def sleep_and_pause(seconds: float) -> None:
        original_sleep(seconds)
        if len(clock.sleeps) == 1:
            limiters.pause(key, 10.0)

    clock.sleep = sleep_and_pause  # type: ignore[method-assign]
    waited = limiters.acquire(key)
    assert waited >= 11.0


def test_limiter_is_thread_safe_no_slot_is_given_twice() -> None:
    clock = FakeClock()
    limiters = RateLimiters(clock, {("k", "e", "m"): RateLimit(per_minute=60, burst=1)}, safety_s=0.0, headroom=0)
    waits: list[float] = []
    lock = threading.Lock()

    def take() -> None:
        for _ in range(50):
            w = limiters.reserve(("k", "e", "m"))
            with lock:
                waits.append(w)

    threads = [threading.Thread(target=take) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(waits) == pytest.approx([float(i) for i in range(400)])


def test_try_acquire_refuses_without_reserving() -> None:
    clock = FakeClock()
    limiters = RateLimiters(clock, {("k", "e", "m"): RateLimit(per_minute=60, burst=2)})
    key = ("k", "e", "m")
    assert limiters.try_acquire(key) == 0.0
    assert limiters.try_acquire(key) == 0.0
    assert limiters.try_acquire(key) == pytest.approx(1.0)
    assert limiters.try_acquire(key) == pytest.approx(1.0)
    clock.advance(1.0)
    assert limiters.try_acquire(key) == 0.0


def test_throttled_requests_keep_a_small_safety_margin_without_losing_throughput() -> None:
    clock = FakeClock()
    limiters = RateLimiters(clock, {("k", "e", "m"): RateLimit(per_minute=60, burst=2)}, safety_s=0.005, headroom=0)
    waits = [limiters.reserve(("k", "e", "m")) for _ in range(5)]
    assert waits == pytest.approx([0.0, 0.0, 1.005, 2.005, 3.005])


def test_the_client_keeps_one_request_of_the_burst_in_reserve() -> None:
    clock = FakeClock()
    limiters = RateLimiters(clock, {("k", "e", "m"): RateLimit(per_minute=60, burst=10)}, safety_s=0.0)
    waits = [limiters.reserve(("k", "e", "m")) for _ in range(11)]
    assert waits == pytest.approx([0.0] * 9 + [1.0, 2.0])

