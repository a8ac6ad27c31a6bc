"""Structured answers: what an agent with a contract is asked for, and how its answer is read and repaired.

Every backend gets the same `ContractAsk` (the schema to send natively, and the instruction that carries the
schema in the prompt where a backend cannot, or a server refuses it). Whatever came back is read the same way
(`read_answer`: code fences stripped, the JSON object found, validated with the model, then the cross-phase
checks); a bad answer gets one repair turn (`repair_prompt`: the answer and its errors by field path)."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError

from sparc_cloud.contracts import CONTRACTS, json_schema
from sparc_cloud.errors import SparcError
from sparc_cloud.terminal import ECHO_LIMIT, clip

MAX_ERRORS = 12  # errors sent back in a repair turn (and kept in the record)
MAX_ECHO = 24_000  # characters of a bad answer quoted back in the repair turn
_FENCE = re.compile(r"```[A-Za-z0-9_-]*[ \t]*\n(.*?)```", re.DOTALL)


class ContractFailed(SparcError):
    """An agent's answer broke its contract before and after the repair turn (both answers are kept)."""


@dataclass(frozen=True)
class ContractAsk:
    """What an agent with a contract asks its backend for."""

    name: str  # the contract (specification, pseudocode, architecture, completion)
    schema: dict[str, Any]  # the JSON Schema to send natively (shallow, $defs inlined)

    @property
    def instruction(self) -> str:
        """The schema in words and JSON, appended to the prompt where it is not sent natively."""
        return (f"\n\n## How to answer\n\nAnswer with one JSON object only (no prose around it), matching this JSON "
                f"Schema of the {self.name}:\n\n```json\n{json.dumps(self.schema, separators=(',', ':'))}\n```")


def ask_for(name: str | None) -> ContractAsk | None:
    """The ask of a contract name (None: the agent answers free text)."""
    if name is None:
        return None
    return ContractAsk(name=name, schema=json_schema(CONTRACTS[name]))


def strip_fences(text: str) -> str:
    """The JSON inside an answer: a fenced block if there is one, else the text from its first `{` to its last `}`."""
    for block in _FENCE.findall(text):
        if block.strip().startswith("{"):
            return str(block).strip()
    stripped = text.strip()
    start, end = stripped.find("{"), stripped.rfind("}")
    if start >= 0 and end > start:
        return stripped[start:end + 1]
    return stripped


def _path(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(the whole object)"


def read_answer(name: str, text: str, extra_checks: Callable[[BaseModel], list[str]] | None = None
                ) -> tuple[BaseModel | None, list[str]]:
    """(the validated contract, []) or (None, errors with field paths) for one answer."""
    try:  # a native JSON answer as it is (its strings may hold fenced blocks of their own)
        data = json.loads(text)
    except ValueError:
        try:
            data = json.loads(strip_fences(text))
        except ValueError as exc:
            return None, [f"the answer is not valid JSON ({exc})"]
    if not isinstance(data, dict):
        return None, [f"the answer is a JSON {type(data).__name__}, not an object"]
    try:
        model = CONTRACTS[name].model_validate(data)
    except ValidationError as exc:
        errors = []
        for err in exc.errors(include_url=False):
            errors.append(f"{clip(_path(tuple(err['loc'])))}: {clip(str(err['msg']), 2 * ECHO_LIMIT)}")
        return None, errors[:MAX_ERRORS]
    problems = extra_checks(model) if extra_checks is not None else []
    if problems:
        return None, problems[:MAX_ERRORS]
    return model, []


def repair_prompt(prompt: str, ask: ContractAsk, answer: str, errors: list[str]) -> str:
    """The repair turn: the original request, the answer that broke the contract, its errors; JSON only back."""
    quoted = answer if len(answer) <= MAX_ECHO else answer[:MAX_ECHO] + "\n... (cut)"
    listed = "\n".join(f"- {e}" for e in errors)
    return (f"{prompt}\n\n## Your previous answer\n\n```\n{quoted}\n```\n\n## What is wrong with it\n\n{listed}\n\n"
            f"Send the corrected {ask.name} as one JSON object only, with every error above fixed.")
