"""One poller per Codex account: spends the shared poll budget on the task most likely to have finished.

Every task in flight registers here. Each task is "due" for a poll at a time that depends on how long it
has run (one early poll to catch fast failures, then none until the earliest expected finish, then every
`max(min_interval, relative * elapsed)`); among due tasks, the one with the highest probability of having
finished since its last poll (a uniform prior over the expected duration range) is polled first. Polls go
through the account's rate limiter, so the budget is never exceeded however many tasks are in flight."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from sparc_cloud.errors import Cancelled, SparcError
from sparc_cloud.http.clock import Clock
from sparc_cloud.http.ratelimit import Key, RateLimiters


@dataclass(frozen=True)
class PollPolicy:
    """When to poll; every duration is multiplied by `time_scale`."""

    initial_s: float = 2.0
    min_interval_s: float = 2.0
    relative: float = 0.05
    expected_min_s: float = 30.0
    expected_max_s: float = 90.0
    time_scale: float = 1.0


@dataclass
class _Watch:
    task_id: str
    started: float
    last_poll: float
    polls: int = 0
    result: object = None
    error: BaseException | None = None
    done: threading.Event = field(default_factory=threading.Event)
    on_poll: Callable[[object], None] | None = None


class PollScheduler:
    """Polls every registered task through one budget; `wait()` blocks until its task is done."""

    def __init__(
        self,
        fetch: Callable[[str], object],
        finished: Callable[[object], bool],
        *,
        limiters: RateLimiters,
        key: Key,
        clock: Clock,
        policy: PollPolicy,
    ) -> None:
        self.fetch = fetch
        self.finished = finished
        self.limiters = limiters
        self.key = key
        self.clock = clock
        self.policy = policy
        self._watches: dict[str, _Watch] = {}
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None

    def _scaled(self, seconds: float) -> float:
        return seconds * self.policy.time_scale

    def _cdf(self, elapsed: float) -> float:
        lo, hi = self._scaled(self.policy.expected_min_s), self._scaled(self.policy.expected_max_s)
        if hi <= lo:
            return 1.0 if elapsed >= lo else 0.0
        return min(1.0, max(0.0, (elapsed - lo) / (hi - lo)))

    def _due_at(self, w: _Watch) -> float:
        if w.polls == 0:
            return w.started + self._scaled(self.policy.initial_s)
        earliest = w.started + self._scaled(self.policy.expected_min_s)
        elapsed = w.last_poll - w.started
        gap = max(self._scaled(self.policy.min_interval_s), self.policy.relative * elapsed)
        return max(earliest, w.last_poll + gap)

    def _score(self, w: _Watch, now: float) -> float:
        before, after = self._cdf(w.last_poll - w.started), self._cdf(now - w.started)
        return 1.0 if before >= 1.0 else (after - before) / (1.0 - before)

    def _pick(self) -> tuple[_Watch | None, float]:
        """The due task most likely to have finished, or None and how long until one is due."""
        now = self.clock.now()
        due = [w for w in self._watches.values() if self._due_at(w) <= now]
        if not due:
            nxt = min((self._due_at(w) for w in self._watches.values()), default=now + 1.0)
            return None, max(0.0, nxt - now)
        return max(due, key=lambda w: (self._score(w, now), now - w.last_poll)), 0.0

    def _loop(self) -> None:
        try:
            while True:
                with self._cond:
                    while not self._watches:
                        self._cond.wait()
                    watch, wait_s = self._pick()
                if watch is None:
                    self.clock.sleep(min(wait_s, self._scaled(self.policy.min_interval_s)))
                    continue
                self.limiters.acquire(self.key)
                with self._cond:
                    watch, _ = self._pick()
                    if watch is None:
                        continue
                    watch.last_poll = self.clock.now()
                    watch.polls += 1
                self._poll(watch)
        except Cancelled as exc:
            with self._cond:
                for w in self._watches.values():
                    w.error = exc
                    w.done.set()
                self._watches.clear()
                self._thread = None

    def _poll(self, watch: _Watch) -> None:
        try:
            details = self.fetch(watch.task_id)
        except Cancelled:
            raise
        except SparcError as exc:
            watch.error = exc
            self._forget(watch)
            return
        if watch.on_poll:
            watch.on_poll(details)
        if self.finished(details):
            watch.result = details
            self._forget(watch)

    def _forget(self, watch: _Watch) -> None:
        with self._cond:
            self._watches.pop(watch.task_id, None)
        watch.done.set()

    def wait(self, task_id: str, *, timeout_s: float, on_poll: Callable[[object], None] | None = None
             ) -> tuple[object | None, int, BaseException | None]:
        """Block until the task is finished (result), failed to poll (error) or timed out (None, None)."""
        now = self.clock.now()
        watch = _Watch(task_id=task_id, started=now, last_poll=now, on_poll=on_poll)
        with self._cond:
            self._watches[task_id] = watch
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._loop, name="sparc-codex-poller", daemon=True)
                self._thread.start()
            self._cond.notify_all()
        deadline = now + timeout_s
        while not watch.done.is_set():
            remaining = deadline - self.clock.now()
            if remaining <= 0:
                with self._cond:
                    self._watches.pop(task_id, None)
                return None, watch.polls, None
            # Wake regularly to notice the deadline and a cancelled run.
            self.clock.sleep(0)
            watch.done.wait(timeout=min(remaining, 0.05))
        return watch.result, watch.polls, watch.error
