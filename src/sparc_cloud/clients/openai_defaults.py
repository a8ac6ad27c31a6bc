"""The OpenAI-compatible kind's defaults (openai-python `_client.py` / `_constants.py`). Import-free: the
simulator's configuration reads them too."""

from __future__ import annotations

BASE = "https://api.openai.com/v1"  # what OPENAI_BASE_URL defaults to, as in the official SDK
KEY_ENV = "OPENAI_API_KEY"
BASE_ENV = "OPENAI_BASE_URL"
LIMIT = (500.0, 50)  # requests per minute and burst of a fresh OpenAI account's cheapest tier, roughly
LOCAL_LIMIT = (600.0, 60)  # a `[backends.NAME]` endpoint without requests_per_minute (Ollama, vLLM...)
