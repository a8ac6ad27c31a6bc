"""Thread-safe rate limiters keyed by (backend, endpoint, model).

Each key is a token bucket (burst `burst`, refilled at `per_minute / 60` per second) implemented as
GCRA with reservations: a caller that cannot go now reserves the next free slot and sleeps until it,
so waiters leave in FIFO order, one per slot, with no thundering herd and no polling. `pause(key, s)`
(a server's 429 hint) empties the bucket until `now + s` for every thread at once."""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from sparc_cloud import defaults
from sparc_cloud.http.clock import Clock

Key = tuple[str, str, str]


@dataclass(frozen=True)
class RateLimit:
    """A requests-per-minute limit with a burst allowance."""

    per_minute: float
    burst: int = 1

    def interval(self, time_scale: float = 1.0) -> float:
        """Seconds between two requests at the sustained rate."""
        return 60.0 / self.per_minute * time_scale


# Each backend kind declares its own default limits (`BackendKind.limits`); a key none names gets this one.
FALLBACK_LIMIT = RateLimit(*defaults.OTHER_LIMIT)


@dataclass
class _Bucket:
    limit: RateLimit
    tat: float  # theoretical arrival time of the next request (GCRA)
    paused_until: float = 0.0
    waited_s: float = 0.0
    acquired: int = 0


class RateLimiters:
    """All limiters of one run (`limits`: the run's, from its backends' kinds). Keys not configured fall back to
    `fallback`."""

    def __init__(
        self,
        clock: Clock,
        limits: Mapping[Key, RateLimit] | None = None,
        *,
        time_scale: float = 1.0,
        fallback: RateLimit = FALLBACK_LIMIT,
        safety_s: float = 0.010,
        headroom: int = 1,
    ) -> None:
        self.clock = clock
        self.limits = dict(limits or {})
        self.time_scale = time_scale
        self.fallback = fallback
        # A throttled request waits this much longer than its slot: the server counts arrivals, and a
        # request that travels faster than an earlier one must not arrive ahead of its slot.
        self.safety_s = safety_s
        # The client keeps `headroom` requests of the burst unused: requests sent in the opening burst can
        # reach the server out of order (new connections), and one spare slot absorbs a whole interval of it.
        self.headroom = headroom
        self._buckets: dict[Key, _Bucket] = {}
        self._lock = threading.Lock()

    def limit_for(self, key: Key) -> RateLimit:
        """The configured limit for a key (exact, then model wildcard, then the fallback)."""
        return self.limits.get(key) or self.limits.get((key[0], key[1], "*")) or self.fallback

    def _bucket(self, key: Key) -> _Bucket:
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = _Bucket(limit=self.limit_for(key), tat=self.clock.now())
            self._buckets[key] = bucket
        return bucket

    def _tolerance(self, bucket: _Bucket, headroom: int) -> float:
        """GCRA burst tolerance: how far ahead of the sustained rate a request may go."""
        return max(0, bucket.limit.burst - 1 - headroom) * bucket.limit.interval(self.time_scale)

    def reserve(self, key: Key) -> float:
        """Take the next slot for `key`; return how many seconds to wait before using it."""
        with self._lock:
            bucket = self._bucket(key)
            now = self.clock.now()
            interval = bucket.limit.interval(self.time_scale)
            tat = max(bucket.tat, now)  # pause() has already moved tat past a pause
            allow_at = tat - self._tolerance(bucket, self.headroom)
            bucket.tat = tat + interval
            bucket.acquired += 1
            delay = allow_at - now + self.safety_s if allow_at > now else 0.0
            bucket.waited_s += delay
            return delay

    def ready_in(self, key: Key, count: int = 1) -> float:
        """Seconds until `count` requests for `key` could all go at once without waiting (0: now); nothing is
        reserved. How a scheduler keeps a slot in hand for what must not wait."""
        with self._lock:
            bucket = self._bucket(key)
            now = self.clock.now()
            interval = bucket.limit.interval(self.time_scale)
            tat = max(bucket.tat, now)
            allow_at = tat + (count - 1) * interval - self._tolerance(bucket, self.headroom)
            return max(0.0, allow_at - now, bucket.paused_until - now)

    def spare_slots(self, key: Key) -> int:
        """How many requests the client's share of the burst holds beyond the next one (0 for burst <= 2)."""
        limit = self.limit_for(key)
        return max(0, limit.burst - 1 - self.headroom)

    def try_acquire(self, key: Key, *, leeway_s: float = 0.0) -> float:
        """Admit one request now if `key` conforms (returns 0), else return the seconds until it would.

        Nothing is reserved when refused: this is how a server (the simulator) polices a limit."""
        with self._lock:
            bucket = self._bucket(key)
            now = self.clock.now()
            interval = bucket.limit.interval(self.time_scale)
            tat = max(bucket.tat, now)
            allow_at = tat - self._tolerance(bucket, 0)  # a server allows the whole burst
            if allow_at > now + leeway_s:
                return allow_at - now
            bucket.tat = tat + interval
            bucket.acquired += 1
            return 0.0

    def acquire(self, key: Key, on_wait: Callable[[float, str], None] | None = None) -> float:
        """Block until `key` has a slot (honouring pauses set meanwhile); return seconds waited.

        `on_wait(seconds, why)` hears of each wait before it starts (for the progress view)."""
        waited = 0.0
        while True:
            delay = self.reserve(key)
            if delay > 0:
                if on_wait and delay >= 0.05 * self.time_scale:
                    limit = self.limit_for(key)
                    on_wait(delay, f"{key[2] if key[2] != '*' else key[0]} {key[1]} limit "
                                   f"({limit.per_minute:g}/min, burst {limit.burst})")
                self.clock.sleep(delay)
                waited += delay
            with self._lock:
                paused = self._bucket(key).paused_until - self.clock.now()
            if paused <= 0:
                return waited
            # A 429 hint arrived while we slept: our slot is void; sleep out the pause and queue again.
            if on_wait:
                on_wait(paused, f"{key[2]} paused by the server's retry hint")
            self.clock.sleep(paused)
            waited += paused

    def pause(self, key: Key, seconds: float) -> None:
        """Stop every thread from using `key` for `seconds` (a server's retry hint)."""
        with self._lock:
            bucket = self._bucket(key)
            until = self.clock.now() + seconds
            if until > bucket.paused_until:
                bucket.paused_until = until
                bucket.tat = max(bucket.tat, until + self._tolerance(bucket, 0))

    def paused_for(self, key: Key) -> float:
        """Seconds `key` stays paused (0 when not paused)."""
        with self._lock:
            bucket = self._buckets.get(key)
            return max(0.0, bucket.paused_until - self.clock.now()) if bucket else 0.0

    def stats(self) -> dict[str, dict[str, float]]:
        """Per key: requests admitted and seconds spent waiting for a slot."""
        with self._lock:
            return {
                "/".join(k): {"acquired": b.acquired, "waited_s": round(b.waited_s, 3)}
                for k, b in self._buckets.items()
            }
