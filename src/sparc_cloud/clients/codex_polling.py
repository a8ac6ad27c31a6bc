"""One poller per Codex account: reads every task in flight from one list request, under the shared poll budget.

`codex cloud list` reads each task's status from one `GET /tasks/list` (cloud-tasks-client http.rs); so does this
poller. A *sweep* is one list request and tells the status of every task in flight at once: the list is newest
`updated_at` first, so a page whose last item is older than what the sweep before had seen proves that the
tasks below it have not changed (more pages only when it does not; see `_read_list`). A task the list shows
final is then *confirmed* with its own details request (list and details can disagree for a moment, and only
the details carry text, diff and error). Tasks the list cannot speak for (an item without a status, a list
endpoint that does not answer) are polled one by one, each when it is most likely to have finished (a uniform
prior over the expected duration range: one early poll to catch fast failures, then none until the earliest
expected finish, then every `max(min_interval, relative * elapsed)`); a task only missing from the pages read
is polled on its own once, then read from the list again.

Every request (list page or details) takes a slot of the account's rate limiter, so the budget is never
exceeded however many tasks are in flight. How the slots are shared between sweeps and confirms:

- a confirm goes first: tasks shown final wait for nothing but a slot, in the order the sweeps showed
  them and, among those of one sweep, the one that finished first (the list's `updated_at`) first; a
  sweep shows several finished tasks, they are confirmed at once from the client's share of the burst;
- a sweep goes `min_sweep_gap_slots` (1 slot) after the last one while the burst is full (a slot left
  unused then is lost), else `sweep_gap_slots` (1.75 slots) after it, and only when a slot is left for a
  confirm right after it; one `max_sweep_gap_slots` (2.5 slots) late goes before waiting confirms;
- no sweep before the earliest expected finish of some task (`expected_min_s`), except one early look.

What the budget allows (bench/RESULTS.md): every task costs one confirm, and every other request is a sweep. With
tasks as long as Codex Cloud's (minutes), finishes are rare next to 30 requests a minute: sweeps go one slot (2 s)
apart and p95 detection is about 2 s with 20 tasks in flight (2.0 s measured in real time), 2.8 s with 100.
When finishes bunch up faster than that (20 tasks of 30-90 s submitted at once, the simulator's default),
confirms take over half the budget, sweeps fall 4-5 s apart at the peak, and p95 detection is 3.5-4 s.

A request that fails (5xx, reset, truncated body) is retried
under the shared retry policy by the fetch functions; if it still fails, the task is *not* abandoned:
it is polled again at its next turn until its waiter's timeout. Only answers that will not change (the
task is gone, the credentials are refused) end a wait early."""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from sparc_cloud.clients import codex_settings
from sparc_cloud.errors import AuthError, Cancelled, RetriesExhausted, RetryableError, SparcError, TaskGone
from sparc_cloud.http.clock import Clock
from sparc_cloud.http.ratelimit import Key, RateLimiters

log = logging.getLogger(__name__)

Mode = Literal["list", "confirm", "direct"]


@dataclass(frozen=True)
class PollPolicy:
    """When to poll; every duration is multiplied by `time_scale`."""

    initial_s: float = codex_settings.POLL_INITIAL_S
    min_interval_s: float = codex_settings.POLL_MIN_INTERVAL_S
    relative: float = codex_settings.POLL_RELATIVE
    expected_min_s: float = codex_settings.POLL_EXPECTED_MIN_S
    expected_max_s: float = codex_settings.POLL_EXPECTED_MAX_S
    time_scale: float = 1.0
    # Sweeps are paced in poll slots (60 / polls-per-minute s; 2 s at 30/min). While the client's share of the
    # burst is full, a slot not used is lost: sweep every `min_sweep_gap_slots`. Otherwise every
    # `sweep_gap_slots`, so that tokens are there to confirm at once the tasks a sweep shows finished; a sweep
    # `max_sweep_gap_slots` late goes before waiting confirms. Measured in bench/polling.py (bench/RESULTS.md).
    sweep_gap_slots: float = 1.75
    min_sweep_gap_slots: float = 1.0
    confirm_gap_s: float = codex_settings.POLL_MIN_INTERVAL_S  # after list and details disagreed, before asking again
    max_sweep_gap_slots: float = 2.5


@dataclass(frozen=True)
class Sighting:
    """What one list item says about a task: finished (`final`), still running, or nothing (`None`)."""

    task_id: str
    final: bool | None
    updated_at: float | None = None
    status: str | None = None


@dataclass(frozen=True)
class ListPage:
    """One page of the task list."""

    items: list[Sighting]
    cursor: str | None = None


@dataclass
class _Watch:
    task_id: str
    started: float
    last_poll: float
    polls: int = 0
    observed: int = 0
    mode: Mode = "list"
    confirm_after: float = 0.0
    result: object = None
    error: BaseException | None = None
    last_error: BaseException | None = None
    last_status: str | None = None
    final_at: float = math.inf  # when the list says it finished (`updated_at`), for confirming oldest first
    seen_mark: float | None = None  # newest `updated_at` of the list page that last showed this task
    relist: bool = False  # polled on its own once because the pages read did not reach it, then back to the list
    done: threading.Event = field(default_factory=threading.Event)
    on_poll: Callable[[object], None] | None = None


@dataclass(frozen=True)
class WaitOutcome:
    """How a wait ended: a final result, an error that ends it, or the timeout (with the last poll error)."""

    result: object | None
    polls: int
    error: BaseException | None
    last_error: BaseException | None
    last_status: str | None = None


def _newest_first(stamps: list[float], *, after: float | None) -> bool:
    """Whether a page's `updated_at`s are newest first and none is newer than `after` (the page before's last)."""
    chain = stamps if after is None else [after, *stamps]
    return all(x >= y for x, y in zip(chain, chain[1:], strict=False))


class PollScheduler:
    """Polls every registered task through one budget; `wait()` blocks until its task is done.

    `fetch(task_id)` returns a task's details (and raises typed errors); `finished(details)` says whether
    they are final; `list_page(cursor, task_ids)` (optional) returns one page of the task list, which should
    show the tasks `task_ids` (the client filters by their environment). A waiter's `on_poll` hears of every
    details answer, and of every change of status a sweep shows (with the `Sighting`)."""

    def __init__(
        self,
        fetch: Callable[[str], object],
        finished: Callable[[object], bool],
        *,
        limiters: RateLimiters,
        key: Key,
        clock: Clock,
        policy: PollPolicy,
        list_page: Callable[[str | None, frozenset[str]], ListPage] | None = None,
        page_size: int = codex_settings.LIST_PAGE,
        status_of: Callable[[object], str] | None = None,
    ) -> None:
        self.fetch = fetch
        self.status_of = status_of
        self.finished = finished
        self.list_page = list_page
        self.page_size = page_size
        self.limiters = limiters
        self.key = key
        self.clock = clock
        self.policy = policy
        self._watches: dict[str, _Watch] = {}
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._last_sweep = -math.inf
        self._sweep_failures = 0
        self._newest: float | None = None  # newest `updated_at` the latest sweep read
        self._full_every = 10  # sweeps between two that read every page they may need, early stop or not
        self._list_in_order = True  # until a page shows the list is not newest `updated_at` first
        self._next_full = 0
        self.sweeps = 0

    # ------------------------------------------------------------- scheduling

    def _scaled(self, seconds: float) -> float:
        return seconds * self.policy.time_scale

    def _cdf(self, elapsed: float) -> float:
        lo, hi = self._scaled(self.policy.expected_min_s), self._scaled(self.policy.expected_max_s)
        if hi <= lo:
            return 1.0 if elapsed >= lo else 0.0
        return min(1.0, max(0.0, (elapsed - lo) / (hi - lo)))

    def _due_at(self, w: _Watch) -> float:
        if w.observed == 0:
            return w.started + self._scaled(self.policy.initial_s)
        earliest = w.started + self._scaled(self.policy.expected_min_s)
        elapsed = w.last_poll - w.started
        gap = max(self._scaled(self.policy.min_interval_s), self.policy.relative * elapsed)
        return max(earliest, w.last_poll + gap)

    def _list_due_at(self, w: _Watch) -> float:
        """When a task watched through the list wants a sweep: the early check, then from the earliest
        expected finish on (a sweep costs the same for one task or twenty: no relative back-off)."""
        if w.observed == 0:
            return w.started + self._scaled(self.policy.initial_s)
        return w.started + self._scaled(self.policy.expected_min_s)

    def _score(self, w: _Watch, now: float) -> float:
        before, after = self._cdf(w.last_poll - w.started), self._cdf(now - w.started)
        return 1.0 if before >= 1.0 else (after - before) / (1.0 - before)

    def _listing(self) -> bool:
        """Whether list sweeps speak for the `list` watches now (else they are polled one by one): not after two
        failed sweeps in a row, until `expected_min_s` has passed since the last one (then a sweep is tried)."""
        if self.list_page is None:
            return False
        rest = self._scaled(self.policy.expected_min_s)
        return self._sweep_failures < 2 or self.clock.now() - self._last_sweep >= rest

    def _tokens(self) -> float:
        """Requests the client's share of the burst could send at once now (fractional; at most spare + 1)."""
        most = self.limiters.spare_slots(self.key) + 1
        slot = self.limiters.limit_for(self.key).interval(self.limiters.time_scale)
        return most - min(most, self.limiters.ready_in(self.key, most) / slot) if slot > 0 else float(most)

    def _plan(self, *, slot_in_hand: bool = False) -> tuple[str, _Watch | None, float]:
        """The next request: ("confirm" | "direct", watch) or ("sweep", None); ("idle", None, seconds) if none.

        A sweep waits until the limiter could also serve a confirm right after it, unless the slot for the
        sweep has already been taken (`slot_in_hand`)."""
        now = self.clock.now()
        pol = self.policy
        watches = list(self._watches.values())
        listing = self._listing()
        listed = [w for w in watches if w.mode == "list"] if listing else []
        slot = self.limiters.limit_for(self.key).interval(self.limiters.time_scale)
        overdue = self._last_sweep + pol.max_sweep_gap_slots * slot
        if listed and now >= overdue and min(self._list_due_at(w) for w in listed) <= now:
            return "sweep", None, 0.0  # confirms must not starve the sweep that speaks for every other task
        confirms = [w for w in watches if w.mode == "confirm" and w.confirm_after <= now]
        if confirms:
            # In the order the sweeps showed them; among those one sweep showed, the one that finished first.
            return "confirm", min(confirms, key=lambda w: (w.confirm_after, w.final_at)), 0.0
        direct = [w for w in watches if w.mode == "direct" or (w.mode == "list" and not listing)]
        due = [w for w in direct if self._due_at(w) <= now]
        if due:
            return "direct", max(due, key=lambda w: (self._score(w, now), now - w.last_poll)), 0.0
        waits = [self._due_at(w) for w in direct]
        waits += [w.confirm_after for w in watches if w.mode == "confirm"]
        if listed:
            # A sweep `sweep_gap_slots` after the last, or `min_sweep_gap_slots` after it once the burst is full
            # again (a slot not used then is lost).
            full = self.limiters.spare_slots(self.key) + 1
            filled_at = now if slot_in_hand and self._tokens() + 1.0 >= full else (
                now + self.limiters.ready_in(self.key, full))
            sweep_at = min(self._last_sweep + pol.sweep_gap_slots * slot,
                           max(self._last_sweep + pol.min_sweep_gap_slots * slot, filled_at))
            sweep_at = max(min(self._list_due_at(w) for w in listed), sweep_at)
            if sweep_at <= now and not slot_in_hand and self.limiters.spare_slots(self.key):
                # Keep one slot in hand: a task the sweep shows finished is confirmed at once, not a slot later.
                sweep_at = now + self.limiters.ready_in(self.key, 2)
            if sweep_at <= now:
                return "sweep", None, 0.0
            waits.append(sweep_at)
        return "idle", None, max(0.0, min(waits, default=now + 1.0) - now)

    # -------------------------------------------------------------------- loop

    def _loop(self) -> None:
        try:
            while True:
                with self._cond:
                    while not self._watches:
                        self._cond.wait()
                    action, _, wait_s = self._plan()
                if action == "idle":
                    self.clock.sleep(min(wait_s, self._scaled(self.policy.min_interval_s)))
                    continue
                self.limiters.acquire(self.key)
                with self._cond:
                    action, watch, _ = self._plan(slot_in_hand=True)
                    if watch is not None:
                        watch.last_poll = self.clock.now()
                        watch.polls += 1
                        watch.observed += 1
                if action == "sweep":
                    self._sweep()
                elif watch is not None:
                    self._poll(watch)
        except Cancelled as exc:
            with self._cond:
                for w in self._watches.values():
                    w.error = exc
                    w.done.set()
                self._watches.clear()
                self._thread = None

    def _read_list(self, wanted: dict[str, float | None]) -> tuple[dict[str, Sighting], set[str], float | None]:
        """Read list pages for the `wanted` tasks (id -> the `updated_at` mark of the sweep that last saw them).

        Reads until every wanted task is seen, the pages run out, or there have been enough pages for all of
        them plus one; or it stops early once the pages read prove that the tasks still missing have not
        changed: the list is newest `updated_at` first (every page read in order, across pages too) and its
        last item read is older than the mark of each of them (a task's `updated_at` only moves forward, so a
        changed one would be above it). The proof also speaks for the tasks the pages did not reach, whatever
        stopped the reading. Returns the sightings, the tasks known unchanged, and the newest `updated_at` of the
        first page (the mark of this sweep).

        A page out of order means the server sorts by something else: no proof from then on. Until then, some
        sweeps read on regardless of the proof, to check the order further down: the first, then the 10th,
        and each such *full* read that finds the order kept puts the next twice as far (at most 80 sweeps)."""
        assert self.list_page is not None
        seen: dict[str, Sighting] = {}
        newest: float | None = None
        oldest: float | None = None  # the last `updated_at` read, while every page read is newest first
        full = self.sweeps >= self._next_full
        max_pages = math.ceil(len(wanted) / max(1, self.page_size)) + 1
        cursor: str | None = None
        pages = 0
        provable = self._list_in_order
        missing = set(wanted)
        proven = False
        while True:
            if pages:
                self.limiters.acquire(self.key)  # every page is a request under the budget
            page = self.list_page(cursor, frozenset(wanted))
            pages += 1
            seen.update({s.task_id: s for s in page.items if s.task_id in wanted})
            stamps = [s.updated_at for s in page.items]
            known = [t for t in stamps if t is not None]
            if len(known) < len(stamps):
                provable = False  # an item without a time: this sweep proves nothing
            elif known:
                if pages == 1:
                    newest = known[0] if _newest_first(known, after=None) else max(known)
                if not _newest_first(known, after=oldest):
                    self._list_in_order = provable = False
                oldest = known[-1]
            missing = set(wanted) - set(seen)
            proven = bool(missing) and provable and oldest is not None and all(
                (mark := wanted[t]) is not None and oldest < mark for t in missing)
            if not missing or not page.cursor or pages >= max_pages or (proven and not full):
                break
            cursor = page.cursor
        if full and self._list_in_order:
            self._full_every = min(80, 2 * self._full_every) if pages > 1 else self._full_every
            self._next_full = self.sweeps + self._full_every
        return seen, missing if proven else set(), newest

    def _sweep(self) -> None:
        with self._cond:
            wanted = {w.task_id: w.seen_mark for w in self._watches.values() if w.mode == "list"}
            self._last_sweep = self.clock.now()
        if not wanted:
            return
        try:
            seen, unchanged, newest = self._read_list(wanted)
            self._newest = newest if newest is not None else self._newest
        except Cancelled:
            raise
        except (RetryableError, RetriesExhausted) as exc:
            self._sweep_failures += 1
            log.warning("listing Codex tasks failed (%s); polling goes on", exc)
            with self._cond:
                for listed in self._watches.values():
                    if listed.mode == "list":
                        listed.last_error = exc
            return
        except SparcError as exc:
            if isinstance(exc, AuthError):
                self._fail_all(exc, set(wanted))
                return
            # The list endpoint is not there (404, 400 ...): poll each task on its own from now on.
            log.warning("the Codex task list is not usable (%s); polling each task on its own", exc)
            self.list_page = None
            return
        finally:
            self.sweeps += 1
            self._last_sweep = self.clock.now()
        self._sweep_failures = 0
        self._note_sightings(wanted, seen, unchanged, newest)

    def _note_sightings(self, wanted: dict[str, float | None], seen: dict[str, Sighting], unchanged: set[str],
                        newest: float | None) -> None:
        now, wall = self.clock.now(), self.clock.wall()
        changed: list[tuple[Callable[[object], None], Sighting]] = []
        with self._cond:
            for task_id in wanted:
                w = self._watches.get(task_id)
                if w is None or w.mode != "list":
                    continue
                if task_id in unchanged:
                    # Not on the pages read, and known not to have changed: as of this sweep, as if seen.
                    w.last_poll, w.last_error = now, None
                    w.seen_mark = newest if newest is not None else w.seen_mark
                    continue
                sighting = seen.get(task_id)
                if sighting is None or sighting.final is None:
                    # The list cannot tell: poll this one on its own; once only, if the pages read just did not
                    # reach it (a long list of tasks updated since), for good if its item has no status.
                    w.mode, w.relist = "direct", sighting is None
                    continue
                w.last_poll, w.observed, w.last_error = now, w.observed + 1, None
                if w.on_poll is not None and sighting.status != w.last_status:
                    changed.append((w.on_poll, sighting))  # waiters hear of each change of status
                w.last_status = sighting.status or w.last_status
                w.seen_mark = newest if newest is not None else w.seen_mark
                w.polls += 1
                if sighting.final and w.confirm_after <= now:
                    w.mode, w.confirm_after = "confirm", now
                    ago = 0.0 if sighting.updated_at is None else max(0.0, wall - sighting.updated_at)
                    w.final_at = now - ago
        for on_poll, sighting in changed:
            on_poll(sighting)

    def _fail_all(self, exc: SparcError, ids: set[str]) -> None:
        with self._cond:
            for task_id in ids:
                gone = self._watches.pop(task_id, None)
                if gone is not None:
                    gone.error = exc
                    gone.done.set()

    def _poll(self, watch: _Watch) -> None:
        try:
            details = self.fetch(watch.task_id)
        except Cancelled:
            raise
        except (RetryableError, RetriesExhausted) as exc:
            watch.last_error = exc  # keep the task: it is polled again at its next turn
            if watch.mode == "confirm":
                watch.confirm_after = self.clock.now() + self._scaled(self.policy.confirm_gap_s)
            return
        except TaskGone as exc:
            watch.error = exc
            self._forget(watch)
            return
        except SparcError as exc:
            watch.error = exc
            self._forget(watch)
            return
        watch.last_error = None
        if self.status_of is not None:
            watch.last_status = self.status_of(details)
        if watch.on_poll:
            watch.on_poll(details)
        if self.finished(details):
            watch.result = details
            self._forget(watch)
        elif watch.relist and self.list_page is not None:
            # Seen running now: the sweeps speak for it again, from what the latest one had seen.
            watch.mode, watch.relist, watch.seen_mark = "list", False, self._newest
        elif watch.mode == "confirm":
            # The list said final, the details do not (yet): back to the list, and not asked again too soon.
            watch.mode = "list" if self.list_page is not None else "direct"
            watch.confirm_after = self.clock.now() + self._scaled(self.policy.confirm_gap_s)

    def _forget(self, watch: _Watch) -> None:
        with self._cond:
            self._watches.pop(watch.task_id, None)
        watch.done.set()

    # ------------------------------------------------------------------ public

    def wait(self, task_id: str, *, timeout_s: float, on_poll: Callable[[object], None] | None = None) -> WaitOutcome:
        """Block until the task is finished (result), failed for good (error) or timed out."""
        now = self.clock.now()
        mode: Mode = "list" if self.list_page is not None else "direct"
        watch = _Watch(task_id=task_id, started=now, last_poll=now, on_poll=on_poll, mode=mode)
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
                return WaitOutcome(None, watch.polls, None, watch.last_error, watch.last_status)
            # Wake regularly to notice the deadline and a cancelled run.
            self.clock.sleep(0)
            watch.done.wait(timeout=min(remaining, 0.05))
        return WaitOutcome(watch.result, watch.polls, watch.error, watch.last_error, watch.last_status)
