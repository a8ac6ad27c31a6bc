"""The Codex poll scheduler: one list sweep for every task in flight, details only to confirm, per-task polls
where the list cannot speak, and no task abandoned on a failed poll (all on a fake clock).

The list's shape is `codex cloud list`'s (openai/codex cloud-tasks-client `http.rs`
`map_task_list_item_to_summary`; codex.md section 8): items carry
`task_status_display.latest_turn_status_display.turn_status`, pages carry a `cursor`."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

import pytest

from sparc_cloud.clients.codex_polling import ListPage, PollPolicy, PollScheduler, Sighting, WaitOutcome, _Watch
from sparc_cloud.errors import ApiError, MalformedResponse, TaskGone, TransientError
from sparc_cloud.http.clock import FakeClock
from sparc_cloud.http.ratelimit import RateLimit, RateLimiters

KEY = ("codex", "poll", "*")


@dataclass
class FakeCodex:
    """Tasks with scripted status; list pages of `page_size`, newest `updated_at` first; every request logged."""

    clock: FakeClock
    finish_at: dict[str, float] = field(default_factory=dict)  # task id -> fake time it finishes
    page_size: int = 20
    requests: list[tuple[str, float]] = field(default_factory=list)
    details_script: dict[str, list[str]] = field(default_factory=dict)  # what details say first, then the truth
    no_status: set[str] = field(default_factory=set)
    list_errors: list[Exception] = field(default_factory=list)
    details_errors: dict[str, list[Exception]] = field(default_factory=dict)
    started_at: dict[str, float] = field(default_factory=dict)  # when a running task last changed (default 0)
    server: RateLimiters | None = None  # polices every request like the service (list and details alike)
    refused: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def police(self) -> None:
        if self.server is not None and self.server.try_acquire(KEY, leeway_s=0.002) > 0:
            self.refused += 1

    def status(self, task_id: str) -> str:
        return "completed" if self.clock.now() >= self.finish_at[task_id] else "in_progress"

    def updated_at(self, task_id: str) -> float:
        done = self.clock.now() >= self.finish_at[task_id]
        return self.finish_at[task_id] if done else self.started_at.get(task_id, 0.0)

    def list_page(self, cursor: str | None, task_ids: frozenset[str]) -> ListPage:
        with self.lock:
            self.requests.append(("list", self.clock.now()))
            self.police()
            if self.list_errors:
                raise self.list_errors.pop(0)
        rows = sorted(self.finish_at, key=lambda t: -self.updated_at(t))
        offset = int(cursor or 0)
        page = rows[offset: offset + self.page_size]
        items = [Sighting(t, None if t in self.no_status else self.status(t) == "completed",
                          self.updated_at(t), None if t in self.no_status else self.status(t)) for t in page]
        more = offset + self.page_size < len(rows)
        return ListPage(items, str(offset + self.page_size) if more else None)

    def fetch(self, task_id: str) -> str:
        with self.lock:
            self.requests.append((f"details {task_id}", self.clock.now()))
            self.police()
            errors = self.details_errors.get(task_id)
            if errors:
                raise errors.pop(0)
            script = self.details_script.get(task_id)
            if script:
                return script.pop(0)
        return self.status(task_id)

    def count(self, kind: str) -> int:
        return sum(1 for r, _ in self.requests if r.startswith(kind))


def poller(fake: FakeCodex, *, listing: bool = True, limits: RateLimit | None = None) -> PollScheduler:
    limiters = RateLimiters(fake.clock, {KEY: limits or RateLimit(per_minute=30, burst=5)})
    return PollScheduler(fake.fetch, lambda d: d in ("completed", "failed", "cancelled"), limiters=limiters,
                         key=KEY, clock=fake.clock, policy=PollPolicy(),
                         list_page=fake.list_page if listing else None, status_of=str)


class GatedClock(FakeClock):
    """A fake clock whose time cannot move until `gate` is set: every waiter registers at the same instant."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()

    def sleep(self, seconds: float) -> None:
        self.gate.wait()
        super().sleep(seconds)


def wait_all(sched: PollScheduler, ids: list[str], timeout_s: float = 10_000) -> dict[str, WaitOutcome]:
    """Wait for every task at once (registered at the same fake instant); their outcomes by id."""
    clock = sched.clock
    assert isinstance(clock, GatedClock)
    outcomes: dict[str, WaitOutcome] = {}

    def one(task_id: str) -> None:
        outcomes[task_id] = sched.wait(task_id, timeout_s=timeout_s)

    threads = [threading.Thread(target=one, args=(t,)) for t in ids]
    for t in threads:
        t.start()
    while len(sched._watches) < len(ids):
        threading.Event().wait(0.001)
    clock.gate.set()
    for t in threads:
        t.join()
    return outcomes


# ------------------------------------------------------------- per-task scheduling (the fallback)

def scheduler(clock: FakeClock) -> PollScheduler:
    return PollScheduler(lambda task_id: None, lambda d: True, limiters=RateLimiters(clock),
                         key=KEY, clock=clock, policy=PollPolicy())


def test_the_task_most_likely_finished_is_polled_first() -> None:
    clock = FakeClock()
    sched = scheduler(clock)
    now = clock.now()
    older = _Watch("old", started=now - 80, last_poll=now - 10, observed=3, mode="direct")   # 80 s in: likely done
    younger = _Watch("young", started=now - 40, last_poll=now - 10, observed=3, mode="direct")
    sched._watches = {"young": younger, "old": older}
    assert sched._plan()[:2] == ("direct", older)


def test_overdue_tasks_are_polled_round_robin_by_age_of_last_poll() -> None:
    clock = FakeClock()
    sched = scheduler(clock)
    now = clock.now()
    a = _Watch("a", started=now - 200, last_poll=now - 12, observed=9, mode="direct")
    b = _Watch("b", started=now - 200, last_poll=now - 30, observed=9, mode="direct")
    sched._watches = {"a": a, "b": b}
    assert sched._plan()[1] is b


def test_no_poll_between_the_early_check_and_the_earliest_expected_finish() -> None:
    clock = FakeClock()
    sched = scheduler(clock)
    fresh = _Watch("t", started=clock.now(), last_poll=clock.now(), mode="direct")
    sched._watches = {"t": fresh}
    assert sched._plan() == ("idle", None, 2.0)  # the first, early poll is due 2 s in
    clock.advance(2.0)
    assert sched._plan()[1] is fresh
    fresh.observed, fresh.last_poll = 1, clock.now()
    assert sched._plan() == ("idle", None, 28.0)  # nothing until 30 s, the earliest expected finish


# ------------------------------------------------------------------------- list sweeps

def test_one_list_request_speaks_for_twenty_tasks_and_details_only_confirm_finished_ones() -> None:
    clock = GatedClock()
    fake = FakeCodex(clock, finish_at={f"t{i}": clock.now() + 40 + 3 * i for i in range(20)})
    outcomes = wait_all(poller(fake), list(fake.finish_at))
    assert all(o.result == "completed" for o in outcomes.values())
    assert fake.count("details") == 20  # exactly one confirmation per task, nothing else
    sweeps = fake.count("list")
    # per-task polling would need about 3 polls per task here; one sweep covers all of them
    assert sweeps < 3 * 20
    times = sorted(t for _, t in fake.requests)
    for i, t in enumerate(times):  # the budget holds: in any 60 s, burst 5 + 30
        assert sum(1 for u in times[i:] if u < t + 60) <= 35


def test_a_finished_task_is_confirmed_right_after_the_sweep_that_shows_it() -> None:
    clock = GatedClock()
    fake = FakeCodex(clock, finish_at={"a": clock.now() + 45, "b": clock.now() + 500})
    outcomes = wait_all(poller(fake), ["a", "b"])
    assert outcomes["a"].result == "completed"
    seen = next(t for r, t in fake.requests if r == "list" and t >= fake.finish_at["a"])
    confirmed = next(t for r, t in fake.requests if r == "details a")
    assert confirmed - seen <= 0.1  # one slot is kept in hand for it: no wait for the next slot
    assert seen - fake.finish_at["a"] <= 2.0 + 0.1  # the burst is full: a sweep every poll slot (2 s at 30/min)


def test_tasks_one_sweep_shows_finished_are_confirmed_at_once_oldest_finish_first() -> None:
    """Confirms spend the burst: three finished tasks are confirmed right after the sweep that shows them,
    without waiting a poll slot each, in the order they finished (the list's `updated_at`)."""
    clock = GatedClock()
    start = clock.now()
    fake = FakeCodex(clock, finish_at={"late": start + 41.002, "mid": start + 41.001, "early": start + 41.0,
                                       "other": start + 500})
    outcomes = wait_all(poller(fake), ["late", "mid", "early", "other"])
    assert all(outcomes[t].result == "completed" for t in ("late", "mid", "early"))
    seen = next(t for r, t in fake.requests if r == "list" and t >= start + 41.002)
    confirms = [(r, t) for r, t in fake.requests if r.startswith("details")][:3]
    assert [r for r, _ in confirms] == ["details early", "details mid", "details late"]
    assert all(t - seen <= 0.1 for _, t in confirms)


def test_a_full_burst_is_spent_on_sweeps_and_a_drained_one_spaces_them_out() -> None:
    """While the client's share of the burst is full a slot not used is lost, so a sweep goes one slot (2 s
    at 30/min) after the last; with the burst spent on confirms, sweeps are 1.75 slots (3.5 s) apart."""
    clock = FakeClock()
    fake = FakeCodex(clock, finish_at={"a": clock.now() + 1000})
    sched = poller(fake)
    sched._watches = {"a": _Watch("a", started=clock.now() - 60, last_poll=clock.now(), observed=1)}
    sched._last_sweep = clock.now() - 2.0
    assert sched._plan() == ("sweep", None, 0.0)
    for _ in range(3):  # three confirms took the burst
        sched.limiters.acquire(KEY)
    assert sched._plan() == ("idle", None, pytest.approx(1.5))  # 3.5 s after the last sweep, not 2 s


def test_a_burst_of_finishes_is_polled_without_a_single_429() -> None:
    """Twenty tasks, eight of them finishing within 16 s: sweeps and confirms share 30 requests a minute and
    the service's limiter (burst 5) never refuses one; each task costs exactly one details request."""
    clock = GatedClock()
    finishes = [31.2, 33.0, 40.8, 42.2, 51.2, 53.9, 58.2, 72.4, 76.9, 81.4, 81.4, 83.6, 83.7, 86.0, 88.5,
                104.5, 109.8, 129.9, 131.9, 140.7]  # bench/polling.py's 20 tasks
    fake = FakeCodex(clock, finish_at={f"t{i}": clock.now() + f for i, f in enumerate(finishes)},
                     server=RateLimiters(clock, {KEY: RateLimit(per_minute=30, burst=5)}))
    outcomes = wait_all(poller(fake), list(fake.finish_at))
    assert all(o.result == "completed" for o in outcomes.values())
    assert fake.refused == 0 and fake.count("details") == 20


def test_list_and_details_disagree_so_the_task_is_not_final_until_details_say_so() -> None:
    """openai/codex issue 46174 (codex.md section 8): list and details can disagree for a moment."""
    clock = FakeClock()
    fake = FakeCodex(clock, finish_at={"a": clock.now() + 40}, details_script={"a": ["in_progress"]})
    outcome = poller(fake).wait("a", timeout_s=10_000)
    assert outcome.result == "completed" and fake.count("details a") == 2
    first, second = (i for i, (r, _) in enumerate(fake.requests) if r == "details a")
    assert fake.requests[second][1] - fake.requests[first][1] >= 2.0  # not asked again at once ...
    assert any(r == "list" for r, _ in fake.requests[first + 1: second])  # ... but after a sweep shows it final


def test_items_without_a_status_are_polled_one_by_one() -> None:
    clock = GatedClock()
    fake = FakeCodex(clock, finish_at={"a": clock.now() + 40, "b": clock.now() + 40}, no_status={"b"})
    outcomes = wait_all(poller(fake), ["a", "b"])
    assert {k: o.result for k, o in outcomes.items()} == {"a": "completed", "b": "completed"}
    assert fake.count("details b") >= 2  # b was polled on its own (at least once before it finished)


def test_a_task_not_on_the_first_page_is_found_on_the_second() -> None:
    clock = GatedClock()
    fake = FakeCodex(clock, finish_at={f"t{i}": clock.now() + 40 + i for i in range(30)}, page_size=20)
    outcomes = wait_all(poller(fake), list(fake.finish_at))
    assert all(o.result == "completed" for o in outcomes.values())
    assert fake.count("details") == 30


def test_unchanged_tasks_further_down_the_list_cost_no_extra_page() -> None:
    """The list is newest-`updated_at` first; a task below a page older than what we last saw of it has not
    changed (a task's `updated_at` only moves forward), so the sweep stops at the first page."""
    clock = FakeClock()
    ids = [f"t{i}" for i in range(25)]
    fake = FakeCodex(clock, finish_at={t: clock.now() + 10_000 for t in ids}, page_size=20)
    fake.started_at = {t: clock.now() - 100 + i for i, t in enumerate(ids)}
    sched = poller(fake)
    sched._watches = {t: _Watch(t, started=clock.now(), last_poll=clock.now()) for t in ids}
    sched._sweep()  # the first sweep reads both pages: it has seen nothing yet
    assert fake.count("list") == 2 and all(w.observed == 1 for w in sched._watches.values())
    for _ in range(8):
        clock.advance(3)
        sched._sweep()  # nothing changed below the first page: one page each
    assert fake.count("list") == 2 + 8
    fake.started_at["t0"] = clock.now()  # the oldest task changes: it moves to the top of the list
    clock.advance(3)
    sched._sweep()
    assert fake.count("list") == 11 and sched._watches["t0"].last_poll == clock.now()
    for _ in range(10):
        clock.advance(3)
        sched._sweep()  # sweeps 10 to 19: one page each
    assert fake.count("list") == 21
    clock.advance(3)
    sched._sweep()  # some sweeps read on regardless, in case a server orders its pages otherwise: the 20th here
    assert fake.count("list") == 23


def test_running_tasks_below_more_finished_ones_than_a_sweep_reads_are_known_unchanged() -> None:
    """25 running tasks, and 60 others (the run's own, the user's) finishing one every 1.5 s above them in a list
    that is newest `updated_at` first: soon more than the three pages a sweep for 25 tasks may read. The last
    item read is older than what the sweep before had seen, so the 25 have not changed: none is polled on its
    own, and each sweep is one page (the full reads aside)."""
    clock = FakeClock()
    ids = [f"t{i}" for i in range(25)]
    fake = FakeCodex(clock, finish_at={t: clock.now() + 100_000 for t in ids}, page_size=20)
    fake.started_at = {t: clock.now() - 100 + i for i, t in enumerate(ids)}
    fake.finish_at.update({f"o{i}": clock.now() + 1.5 * (i + 1) for i in range(60)})
    sched = poller(fake)
    sched._watches = {t: _Watch(t, started=clock.now() - 100, last_poll=clock.now(), observed=1) for t in ids}
    for _ in range(100):
        sched._sweep()
        clock.advance(3)
    assert fake.count("details") == 0
    assert all(w.mode == "list" and w.last_poll >= clock.now() - 3 for w in sched._watches.values())
    assert fake.count("list") <= 100 + 3 * 4  # one page a sweep, and up to 4 more for each full read
    fake.finish_at["t7"] = clock.now()  # one of them finishes: it is on the first page now
    clock.advance(1)
    sched._sweep()
    assert sched._watches["t7"].mode == "confirm"


def test_a_task_the_pages_did_not_reach_is_polled_once_then_read_from_the_list_again() -> None:
    """Nothing proves a task unchanged that no sweep has seen yet: not on the pages read (45 newer tasks above
    it), it is polled on its own once, and the sweeps speak for it again from then on."""
    clock = FakeClock()
    fake = FakeCodex(clock, finish_at={"a": clock.now() + 100_000}, page_size=20)
    fake.started_at = {"a": clock.now() - 100}
    fake.finish_at.update({f"o{i}": clock.now() - 50 + i for i in range(45)})
    sched = poller(fake)
    watch = sched._watches["a"] = _Watch("a", started=clock.now() - 100, last_poll=clock.now(), observed=1)
    sched._sweep()  # two pages (one task, plus one): "a" is on neither
    assert fake.count("list") == 2 and watch.mode == "direct"
    clock.advance(10)
    assert sched._plan()[:2] == ("direct", watch)
    sched._poll(watch)
    assert watch.mode == "list" and watch.seen_mark == fake.finish_at["o44"]  # the newest the sweep had read
    for _ in range(5):
        clock.advance(3)
        sched._sweep()
    assert fake.count("details a") == 1 and fake.count("list") == 2 + 5  # one page each: known unchanged below
    fake.finish_at["a"] = clock.now()
    clock.advance(3)
    sched._sweep()
    assert watch.mode == "confirm" and fake.count("list") == 2 + 6


@dataclass
class PagedByGroup(FakeCodex):
    """A server that sorts its list by something other than `updated_at`: each page is newest first, but the
    tasks t20..t39 (page 2) changed after those on page 1."""

    def list_page(self, cursor: str | None, task_ids: frozenset[str]) -> ListPage:
        with self.lock:
            self.requests.append(("list", self.clock.now()))
        rows = sorted(self.finish_at, key=lambda t: (int(t[1:]) // self.page_size, -self.updated_at(t)))
        offset = int(cursor or 0)
        items = [Sighting(t, self.status(t) == "completed", self.updated_at(t), self.status(t))
                 for t in rows[offset: offset + self.page_size]]
        return ListPage(items, str(offset + self.page_size) if offset + self.page_size < len(rows) else None)


def test_a_list_out_of_order_across_pages_is_read_in_full_and_proves_nothing() -> None:
    clock = FakeClock()
    ids = [f"t{i}" for i in range(40)]
    fake = PagedByGroup(clock, finish_at={t: clock.now() + 100_000 for t in ids}, page_size=20)
    fake.started_at = {t: clock.now() - 100 + (i % 20) + (50 if i >= 20 else 0) for i, t in enumerate(ids)}
    sched = poller(fake)
    sched._watches = {t: _Watch(t, started=clock.now() - 100, last_poll=clock.now(), observed=1) for t in ids}
    sched._sweep()
    assert not sched._list_in_order
    fake.finish_at["t25"] = clock.now()  # on page 2 whatever changes
    for _ in range(3):
        clock.advance(3)
        sched._sweep()
    assert fake.count("list") == 2 * 4  # every sweep reads both pages: no early stop on this server
    assert sched._watches["t25"].mode == "confirm"


def test_the_list_endpoint_missing_means_per_task_polls() -> None:
    clock = FakeClock()
    fake = FakeCodex(clock, finish_at={"a": clock.now() + 40},
                     list_errors=[ApiError("codex list tasks: HTTP 404: Not Found", status=404)])
    sched = poller(fake)
    outcome = sched.wait("a", timeout_s=10_000)
    assert outcome.result == "completed" and sched.list_page is None and fake.count("details a") >= 2


def test_failed_sweeps_and_failed_polls_never_abandon_a_task() -> None:
    clock = FakeClock()
    fake = FakeCodex(clock, finish_at={"a": clock.now() + 40},
                     list_errors=[TransientError("502"), MalformedResponse("truncated")],
                     details_errors={"a": [TransientError("reset"), TransientError("502")]})
    outcome = poller(fake).wait("a", timeout_s=10_000)
    assert outcome.result == "completed" and outcome.error is None


def test_polls_that_keep_failing_end_at_the_timeout_with_the_last_error() -> None:
    clock = FakeClock()
    fake = FakeCodex(clock, finish_at={"a": clock.now() + 40}, list_errors=[TransientError("502")] * 1000,
                     details_errors={"a": [TransientError("502")] * 1000})
    outcome = poller(fake).wait("a", timeout_s=120)
    assert outcome.result is None and outcome.error is None and isinstance(outcome.last_error, TransientError)


def test_a_task_the_server_does_not_know_ends_the_wait() -> None:
    clock = FakeClock()
    fake = FakeCodex(clock, finish_at={"a": clock.now() + 40}, no_status={"a"},
                     details_errors={"a": [TaskGone("HTTP 404", task_id="a")]})
    outcome = poller(fake).wait("a", timeout_s=10_000)
    assert isinstance(outcome.error, TaskGone)


@pytest.mark.parametrize("listing", [True, False])
def test_a_task_that_already_finished_is_returned_at_the_first_look(listing: bool) -> None:
    clock = FakeClock()
    fake = FakeCodex(clock, finish_at={"old": clock.now() - 600})
    start = clock.now()
    outcome = poller(fake, listing=listing).wait("old", timeout_s=10_000)
    assert outcome.result == "completed" and clock.now() - start <= 2.0 + 0.1


def test_after_two_failed_sweeps_tasks_are_polled_on_their_own_and_the_list_is_tried_again_later() -> None:
    clock = FakeClock()
    fake = FakeCodex(clock, finish_at={"a": clock.now() + 1000}, list_errors=[TransientError("502")] * 2)
    sched = poller(fake)
    sched._watches = {"a": _Watch("a", started=clock.now(), last_poll=clock.now())}
    sched._sweep()
    sched._sweep()
    assert not sched._listing()
    clock.advance(2.0)
    assert sched._plan()[:2] == ("direct", sched._watches["a"])  # meanwhile: polled on its own
    clock.advance(28.0)
    assert sched._listing()  # the earliest expected finish later: the list is tried again
    sched._sweep()
    assert sched._sweep_failures == 0 and sched._watches["a"].observed == 1
