"""The Codex poll scheduler: which task it polls first, and when."""

from __future__ import annotations

from sparc_cloud.clients.polling import PollPolicy, PollScheduler, _Watch
from sparc_cloud.http.clock import FakeClock
from sparc_cloud.http.ratelimit import RateLimiters


def scheduler(clock: FakeClock) -> PollScheduler:
    return PollScheduler(lambda task_id: None, lambda d: True, limiters=RateLimiters(clock),
                         key=("codex", "poll", "*"), clock=clock, policy=PollPolicy())


def test_the_task_most_likely_finished_is_polled_first() -> None:
    clock = FakeClock()
    poller = scheduler(clock)
    now = clock.now()
    older = _Watch("old", started=now - 80, last_poll=now - 10, polls=3)   # 80 s in: very likely done
    younger = _Watch("young", started=now - 40, last_poll=now - 10, polls=3)  # 40 s in: probably not
    poller._watches = {"young": younger, "old": older}
    picked, _ = poller._pick()
    assert picked is older


def test_overdue_tasks_are_polled_round_robin_by_age_of_last_poll() -> None:
    clock = FakeClock()
    poller = scheduler(clock)
    now = clock.now()
    a = _Watch("a", started=now - 200, last_poll=now - 12, polls=9)
    b = _Watch("b", started=now - 200, last_poll=now - 30, polls=9)
    poller._watches = {"a": a, "b": b}
    assert poller._pick()[0] is b


def test_no_poll_between_the_early_check_and_the_earliest_expected_finish() -> None:
    clock = FakeClock()
    poller = scheduler(clock)
    now = clock.now()
    fresh = _Watch("t", started=now, last_poll=now)
    poller._watches = {"t": fresh}
    assert poller._pick() == (None, 2.0)  # the first, early poll is due 2 s in
    clock.advance(2.0)
    assert poller._pick()[0] is fresh
    fresh.polls, fresh.last_poll = 1, clock.now()
    picked, wait = poller._pick()
    assert picked is None and wait == 28.0  # nothing until 30 s, the earliest expected finish
