"""Cost estimates from the price table, and the budget guard that stops dispatching before a limit."""

from __future__ import annotations

import threading
from collections.abc import Mapping

from sparc_cloud.bundle import AgentRecord

# Typical output/prompt token ratios before any result of the model has arrived.
DEFAULT_OUTPUT_RATIO = 1.0


def price_of(prices: Mapping[str, tuple[float, float]], model: str) -> tuple[float, float]:
    """(input, output) USD per million tokens; unknown models cost like the closest family, else 0.

    `model` may be `BACKEND/MODEL`: a price for exactly that comes first, then the bare model's."""
    if model in prices:
        return prices[model]
    if "/" in model:
        model = model.split("/", 1)[1]
        if model in prices:
            return prices[model]
    for name, price in prices.items():
        if model.startswith(name.rsplit("-", 1)[0]) and name.split("-")[-1] in model:
            return price
    return (0.0, 0.0)


def cost_usd(prices: Mapping[str, tuple[float, float]], model: str, prompt_tokens: int, output_tokens: int) -> float:
    """Estimated USD for one call."""
    pin, pout = price_of(prices, model)
    return (prompt_tokens * pin + output_tokens * pout) / 1_000_000


def priced(prices: Mapping[str, tuple[float, float]], record: AgentRecord) -> float:
    """An agent's usage at these prices (0 for skipped ones), whatever it recorded when it ran."""
    if record.status == "skipped":
        return 0.0
    return cost_usd(prices, f"{record.backend}/{record.model}", record.usage.prompt_tokens,
                    record.usage.output_tokens)


def record_cost(prices: Mapping[str, tuple[float, float]], record: AgentRecord) -> float:
    """Estimated USD of what an agent's run cost: the cost it recorded when it ran, else its usage at `prices`.

    A reused record keeps the cost of the run that produced it: it was paid once, in an earlier session of
    the same run. What a session spent counts only records it produced (`reused` false)."""
    if record.status != "skipped" and record.cost_usd is not None:
        return record.cost_usd
    return priced(prices, record)


class BudgetExceeded(Exception):
    """The next agent would cross the budget."""


class Budget:
    """Admits an agent only if what is spent, plus what is in flight, plus its estimate stays within the limit.

    The estimate is prompt tokens (known) plus output tokens from the model's output/prompt ratio, which
    starts at DEFAULT_OUTPUT_RATIO and is refined from every result of that model."""

    def __init__(self, limit_usd: float, prices: Mapping[str, tuple[float, float]], *, spent: float = 0.0) -> None:
        self.limit = limit_usd
        self.prices = prices
        self.spent = spent  # what earlier sessions of the run spent: the budget covers the whole run
        self.reserved: dict[str, float] = {}
        self._ratio: dict[str, tuple[int, int]] = {}
        self._lock = threading.Lock()
        self.exhausted: str | None = None  # once one agent is refused, nothing more is dispatched

    def estimate(self, model: str, prompt_tokens: int) -> float:
        """What an agent with this prompt is expected to cost."""
        seen_in, seen_out = self._ratio.get(model, (0, 0))
        ratio = seen_out / seen_in if seen_in else DEFAULT_OUTPUT_RATIO
        return cost_usd(self.prices, model, prompt_tokens, int(prompt_tokens * ratio))

    def admit(self, agent_id: str, model: str, prompt_tokens: int) -> float:
        """Reserve the estimate or raise BudgetExceeded."""
        with self._lock:
            if self.exhausted:
                raise BudgetExceeded(f"not started: {self.exhausted}")
            if self.spent >= self.limit:
                self.exhausted = (f"budget: ${self.spent:.4f} already spent on this run (every session counts), "
                                  f"--budget-usd {self.limit:g}")
                raise BudgetExceeded(self.exhausted)
            estimate = self.estimate(model, prompt_tokens)
            committed = self.spent + sum(self.reserved.values())
            if committed + estimate > self.limit:
                self.exhausted = (f"budget: {agent_id} would cost about ${estimate:.4f} on top of ${committed:.4f} "
                                  f"spent or in flight, over --budget-usd {self.limit:g}")
                raise BudgetExceeded(self.exhausted)
            self.reserved[agent_id] = estimate
            return estimate

    def settle(self, record: AgentRecord) -> None:
        """Replace an agent's reservation with what it really cost, and learn its model's ratio."""
        with self._lock:
            self.reserved.pop(record.id, None)
            if not record.reused:
                self.spent += record_cost(self.prices, record)
            if record.status == "completed" and not record.reused and record.usage.prompt_tokens:
                key = f"{record.backend}/{record.model}"
                seen_in, seen_out = self._ratio.get(key, (0, 0))
                self._ratio[key] = (seen_in + record.usage.prompt_tokens,
                                             seen_out + record.usage.output_tokens)
