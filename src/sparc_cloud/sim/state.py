"""The simulator's world: issued tokens, cloud tasks, rate limits, fault scripts and counters.

Shared by every provider's routes; what is a provider's own (its token formats, how its tasks are made, what it adds
to the counters) is in `sim/<provider>.py`, which passes its name, prefixes and figures in."""

from __future__ import annotations

import base64
import hashlib
import json
import random
import secrets as pysecrets
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sparc_cloud.backends.registry import limit_key
from sparc_cloud.http.clock import RealClock
from sparc_cloud.http.ratelimit import Key, RateLimit, RateLimiters
from sparc_cloud.sim.config import Fault, SimConfig, TaskScript

SIM_OAUTH_CLIENT_ID = "sim-oauth-client.apps.example"
SIM_OAUTH_CLIENT_SECRET = "sim-oauth-client-secret"  # noqa: S105 - a fake for the simulator


def prompt_digest(prompt: str) -> str:
    """The key benchmarks use to match a served request to an agent."""
    return hashlib.sha256(prompt.encode("utf-8")).hexdigest()


def b64(data: dict[str, Any]) -> str:
    """Unpadded URL-safe base64 of a JSON object (a JWT part)."""
    return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")


@dataclass
class SimTask:
    """One simulated cloud task."""

    id: str
    index: int
    environment_id: str
    prompt: str
    created_mono: float
    created_wall: float
    duration_s: float
    summary: str
    diff: str
    worklog: list[str]
    script: TaskScript | None = None
    polls: int = 0
    detected_mono: float | None = None  # first details answer that showed it finished
    seen_mono: float | None = None  # first answer of any kind (list or details) that showed it finished

    @property
    def done_mono(self) -> float:
        """When the task finishes (monotonic)."""
        return self.created_mono + self.duration_s

    def changed_at(self, status: str) -> float:
        """Seconds after creation of the last change of status (what moves `updated_at`)."""
        if status == "pending":
            return 0.0
        if status == "in_progress":
            return self.duration_s * 0.1
        return self.duration_s

    def updated_wall(self, status: str) -> float:
        """`updated_at`: epoch seconds of the last change."""
        return self.created_wall + self.changed_at(status)


@dataclass
class Counters:
    """What tests and benchmarks read from `/_sim/counters`."""

    requests: Counter[str] = field(default_factory=Counter)
    status_sent: Counter[str] = field(default_factory=Counter)
    rate_limited: Counter[str] = field(default_factory=Counter)
    faults: Counter[str] = field(default_factory=Counter)
    unauthorized: int = 0
    tokens_issued: Counter[str] = field(default_factory=Counter)
    in_flight: int = 0
    peak_in_flight: int = 0
    tasks_in_flight_peak: int = 0


class SimState:
    """Shared by every handler thread; every mutation holds `lock`."""

    def __init__(self, config: SimConfig, counters: Sequence[Callable[[SimState], dict[str, Any]]] = ()) -> None:
        self.config = config
        self.extra_counters = tuple(counters)  # each provider's own figures, first in `snapshot()`
        self.lock = threading.Lock()
        self.clock = RealClock()
        self.rng = random.Random(config.seed)  # noqa: S311 - simulation
        self.counters = Counters()
        self.tokens: dict[str, tuple[str, float]] = {}  # access token -> (kind, issued monotonic)
        self.refresh_tokens: dict[str, str] = {}  # refresh token -> kind
        self.tasks: dict[str, SimTask] = {}
        self.chat_windows: dict[str, list[float]] = {}  # model -> monotonic times of its last minute's requests
        self.calls: Counter[tuple[str, str]] = Counter()
        self.fault_hits: Counter[int] = Counter()
        self.limiters = self._limiters(config)
        # (kind, model, sha256 of the prompt, service seconds): what benchmarks need for their lower bounds
        self.served: list[tuple[str, str, str, float]] = []
        self.started = self.clock.now()
        self.rate_limited_log: list[tuple[float, str, float]] = []  # (seconds since start, key, wait)
        self.onboarded = config.onboarded
        self.operations: dict[str, int] = {}  # onboardUser operation name -> polls before it is done

    def _limiters(self, config: SimConfig) -> RateLimiters:
        limits: dict[Key, RateLimit] = {}
        for name, spec in config.limits.items():
            limit = RateLimit(per_minute=spec.per_minute, burst=spec.burst)
            limits[limit_key(name)] = limit
        return RateLimiters(self.clock, limits, time_scale=config.time_scale,
                            fallback=RateLimit(per_minute=600, burst=60))

    def add_environment(self, name: str) -> dict[str, object]:
        """Make the simulator know a cloud environment by this id or name (case-insensitive), adding it if new."""
        with self.lock:
            for env in self.config.environments:
                if env.get("id") == name or str(env.get("label") or "").lower() == name.lower():
                    return env
            slug = "".join(c if c.isalnum() else "_" for c in name.lower()).strip("_") or "env"
            env = {"id": f"env_sim_{slug}", "label": name, "is_pinned": False, "task_count": 0}
            self.config = self.config.model_copy(update={"environments": [*self.config.environments, env]})
            return env

    def set_scenario(self, faults: list[Fault], tasks: list[TaskScript]) -> None:
        """Replace the fault scripts (counts restart)."""
        with self.lock:
            self.config = self.config.model_copy(update={"faults": faults, "tasks": tasks})
            self.calls.clear()
            self.fault_hits.clear()

    # ------------------------------------------------------------------ tokens

    def remember_token(self, kind: str, token: str) -> None:
        """Accept `token` as a bearer token of `kind` (a provider's name) from now on, and count it issued."""
        with self.lock:
            self.tokens[token] = (kind, self.clock.now())
            self.counters.tokens_issued[kind] += 1

    def new_refresh_token(self, kind: str, prefix: str) -> str:
        """A refresh token of `kind`, starting with `prefix`, that the token endpoints will accept."""
        token = prefix + pysecrets.token_hex(16)
        with self.lock:
            self.refresh_tokens[token] = kind
        return token

    def check_token(self, kind: str, header: str | None, life_s: float) -> str | None:
        """None when the bearer token is a valid one of `kind`, issued less than `life_s` (unscaled) ago; else why
        not."""
        if not header or not header.startswith("Bearer "):
            return "missing bearer token"
        token = header[len("Bearer "):]
        with self.lock:
            known = self.tokens.get(token)
        if known is None or known[0] != kind:
            return "unknown token"
        if self.clock.now() - known[1] > life_s * self.config.time_scale:
            return "expired token"
        return None

    def revoke(self, header: str | None) -> None:
        """Forget a bearer token (the '401' fault)."""
        if header and header.startswith("Bearer "):
            with self.lock:
                self.tokens.pop(header[len("Bearer "):], None)

    # ------------------------------------------------------------------ faults

    def next_fault(self, endpoint: str, model: str) -> str | None:
        """Count a call and return the fault to answer it with, if a script says so."""
        with self.lock:
            self.calls[(endpoint, model)] += 1
            n = self.calls[(endpoint, model)]
            for i, rule in enumerate(self.config.faults):
                if rule.endpoint != endpoint or (rule.model and rule.model != model):
                    continue
                if rule.at_call is not None:
                    offset = n - rule.at_call
                    if 0 <= offset < len(rule.responses):
                        return self._hit(i, rule.responses[offset], endpoint)
                elif rule.probability is not None:
                    if rule.max_count is not None and self.fault_hits[i] >= rule.max_count:
                        continue
                    if self.rng.random() < rule.probability:
                        return self._hit(i, rule.responses[self.fault_hits[i] % len(rule.responses)], endpoint)
            return None

    def _hit(self, index: int, response: str, endpoint: str) -> str:
        self.fault_hits[index] += 1
        self.counters.faults[f"{endpoint}:{response}"] += 1
        return response

    # ------------------------------------------------------------------- tasks

    def serve(self, provider: str, model: str, prompt: str) -> None:
        """Spend the seeded latency of one answer, counted in flight and recorded in `served`."""
        latency = self.latency(model, prompt)
        with self.lock:
            c = self.counters
            c.in_flight += 1
            c.peak_in_flight = max(c.peak_in_flight, c.in_flight)
            self.served.append((provider, model, prompt_digest(prompt), latency))
        try:
            time.sleep(latency)
        finally:
            with self.lock:
                self.counters.in_flight -= 1

    def latency(self, model: str, prompt: str) -> float:
        """A seeded latency (scaled seconds) for a model and prompt."""
        lo, hi = self.config.latency_for(model)
        digest = hashlib.sha256(f"{self.config.seed}\0{model}\0{prompt}".encode()).digest()
        fraction = int.from_bytes(digest[:8], "big") / 2**64
        return (lo + (hi - lo) * fraction) * self.config.time_scale

    def add_task(self, kind: str, environment_id: str, prompt: str, *, task_id: str, latency_model: str,
                 result: tuple[str, str, list[str]]) -> SimTask:
        """Register a new task of `kind` (a provider's name; `result`: summary, diff, worklog) lasting
        `latency_model`'s seeded latency; its lifecycle is a function of time from now on."""
        summary, diff, worklog = result
        with self.lock:
            index = len(self.tasks) + 1
            script = next((t for t in self.config.tasks if t.index == index), None)
            task = SimTask(
                id=task_id, index=index, environment_id=environment_id, prompt=prompt,
                created_mono=self.clock.now(), created_wall=time.time(),
                duration_s=self.latency(latency_model, prompt), summary=summary, diff=diff, worklog=worklog,
                script=script,
            )
            self.tasks[task_id] = task
            self.served.append((kind, kind, prompt_digest(prompt), task.duration_s))
            now = self.clock.now()
            running = sum(1 for t in self.tasks.values() if t.done_mono > now)
            self.counters.tasks_in_flight_peak = max(self.counters.tasks_in_flight_peak, running)
            return task

    def task_status(self, task: SimTask) -> str:
        """pending -> in_progress -> completed (or the scripted end)."""
        elapsed = self.clock.now() - task.created_mono
        if task.script and task.script.outcome == "stuck":
            return "pending" if elapsed < task.duration_s * 0.1 else "in_progress"
        if elapsed < task.duration_s * 0.1:
            return "pending"
        if elapsed < task.duration_s:
            return "in_progress"
        if task.script:
            return task.script.outcome
        return "completed"

    def record_poll(self, task: SimTask, status: str) -> None:
        """Count a poll and when completion was first seen."""
        with self.lock:
            task.polls += 1
            if status in ("completed", "failed", "cancelled"):
                now = self.clock.now()
                if task.detected_mono is None:
                    task.detected_mono = now
                if task.seen_mono is None:
                    task.seen_mono = now

    def record_listing(self, shown: list[tuple[SimTask, str]]) -> None:
        """A list page showed these tasks with these statuses: note when each was first seen finished."""
        now = self.clock.now()
        with self.lock:
            for task, status in shown:
                if status in ("completed", "failed", "cancelled") and task.seen_mono is None:
                    task.seen_mono = now

    # ---------------------------------------------------------------- counters

    def snapshot(self) -> dict[str, Any]:
        """Counters as JSON (durations in real seconds, detection delays included); each provider's own figures
        first (its `counters(state)`, called under `lock`)."""
        with self.lock:
            c = self.counters
            tasks = {
                t.id: {
                    "index": t.index,
                    "polls": t.polls,
                    "detection_delay_s": (round(t.detected_mono - t.done_mono, 4)
                                          if t.detected_mono is not None else None),
                    "seen_delay_s": round(t.seen_mono - t.done_mono, 4) if t.seen_mono is not None else None,
                }
                for t in self.tasks.values()
            }
            return {
                **{k: v for counters in self.extra_counters for k, v in counters(self).items()},
                "requests": dict(c.requests),
                "status_sent": dict(c.status_sent),
                "rate_limited": dict(c.rate_limited),
                "rate_limited_total": sum(c.rate_limited.values()),
                "rate_limited_log": [[round(t, 4), k, round(w, 4)] for t, k, w in self.rate_limited_log[:100]],
                "served_total": len(self.served),
                "faults": dict(c.faults),
                "unauthorized": c.unauthorized,
                "tokens_issued": dict(c.tokens_issued),
                "peak_concurrency": c.peak_in_flight,
                "peak_tasks_in_flight": c.tasks_in_flight_peak,
                "tasks": tasks,
                "time_scale": self.config.time_scale,
            }
