"""Running an agent that has a contract: ask, read the answer, and give a bad answer one repair turn.

Like instructor and pydantic-ai: the answer is validated with the contract's model (and the checks that need
another phase's contract); on errors the bad answer goes back with the errors by field path, and the corrected
JSON is read again. A second failure fails the agent with both raw answers kept in the record's `outputs`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from pydantic import BaseModel

from sparc_cloud.backends.base import AgentCall, Backend, RunHooks
from sparc_cloud.bundle import AgentRecord, Usage
from sparc_cloud.contracts import render_markdown
from sparc_cloud.structured import ContractFailed, read_answer, repair_prompt

Checks = Callable[[BaseModel], list[str]]


def run_with_contract(backend: Backend, call: AgentCall, hooks: RunHooks, checks: Checks | None,
                      on_repair: Callable[[list[str]], None]) -> None:
    """Fill `call.record` with the validated contract (`output_json`) and its Markdown (`output_text`), or raise
    ContractFailed after the repair turn also broke it."""
    ask, record = call.contract, call.record
    assert ask is not None
    record.contract = ask.name
    backend.run(call, hooks)
    first = record.output_text
    model, errors = read_answer(ask.name, first, checks)
    if model is None:
        record.contract_errors = errors
        record.outputs = [first]
        on_repair(errors)
        turn = record.model_copy(update={"usage": Usage(), "usage_details": None})  # keeps schema_fallback
        backend.run(replace(call, prompt=repair_prompt(call.prompt, ask, first, errors), record=turn),
                    replace(hooks, attach={}))
        _add_turn(record, turn)
        second = turn.output_text
        record.outputs = [first, second]
        model, again = read_answer(ask.name, second, checks)
        if model is None:
            record.output_text = second
            raise ContractFailed(
                f"the {ask.name} broke its contract before and after the repair turn (first: {errors[0]}; then: "
                f"{again[0]}{f' and {len(again) - 1} more' if len(again) > 1 else ''}). Both answers are kept in "
                "the record's `outputs`. Try a stronger model for this phase, or run it again.")
        record.contract_repaired = True
    record.output_json = model.model_dump(mode="json")
    record.output_text = render_markdown(model)


def _add_turn(record: AgentRecord, turn: AgentRecord) -> None:
    """The repair turn's usage and attempts added to the first turn's."""
    record.usage = Usage(prompt_tokens=record.usage.prompt_tokens + turn.usage.prompt_tokens,
                         output_tokens=record.usage.output_tokens + turn.usage.output_tokens,
                         total_tokens=record.usage.total_tokens + turn.usage.total_tokens)
    if turn.usage_details:
        details = dict(record.usage_details or {})
        for key, value in turn.usage_details.items():
            details[key] = details.get(key, 0) + value
        record.usage_details = details
    record.attempts += turn.attempts
    record.request_id = turn.request_id or record.request_id
    record.schema_fallback = turn.schema_fallback
    record.usage_estimated = record.usage_estimated or turn.usage_estimated
