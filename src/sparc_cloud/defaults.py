"""Every default in one place: URLs, limits, retry and timeout figures, poll pacing.

Settings, the retry policy, the rate limiters, the poll scheduler and the simulator all read their
defaults from here, so a figure is changed once. No imports: this module is cheap to load."""

from __future__ import annotations

# --- Gemini (gemini-cli code_assist/server.ts and setup.ts; googleapis/js-genai) ---
CODE_ASSIST_ENDPOINT = "https://cloudcode-pa.googleapis.com"  # gemini-cli: CODE_ASSIST_ENDPOINT (host only)
CODE_ASSIST_API_VERSION = "v1internal"  # gemini-cli: CODE_ASSIST_API_VERSION (the path)
GEMINI_API_BASE = "https://generativelanguage.googleapis.com"
GOOGLE_TOKEN_URL = "https://oauth2.googleapis.com/token"
ONBOARD_POLL_S = 5.0  # gemini-cli polls the onboardUser operation every 5 s (setup.ts)
ONBOARD_MAX_POLLS = 60
EAGER_REFRESH_S = 300.0  # google-auth-library refreshes 5 minutes before expiry

# --- Codex (openai/codex backend-client, cloud-tasks, cloud-tasks-client and login) ---
CODEX_BASE = "https://chatgpt.com/backend-api"
CODEX_REFRESH_URL = "https://auth.openai.com/oauth/token"
CODEX_CLIENT_ID = "app_EMoamEEZ73f0CkXaXp7hrann"  # the Codex CLI's published OAuth client id
CODEX_ORIGINATOR = "codex_cli_rs"  # the official client's `originator` header and User-Agent prefix
CODEX_CLI_VERSION = "0.104.0"  # the Codex CLI version our Codex-style User-Agent names (any recent one works)
CODEX_DEFAULT_BRANCH = "main"  # upstream's last resort when no git ref can be found
CODEX_LIST_PAGE = 20  # `codex cloud list` asks for at most 20 items a page

# --- Rate limits: the runbook's measured figures (requests per minute, burst) ---
FLASH_LIMIT = (60.0, 10)
PRO_LIMIT = (3.0, 3)
CODEX_CREATE_LIMIT = (10.0, 10)
CODEX_POLLS_PER_MINUTE = 30.0
CODEX_POLL_BURST = 5
OTHER_LIMIT = (60.0, 10)  # any key without its own limit

# --- Retries and timeouts ---
RETRY_MAX_ATTEMPTS = 8
RETRY_DEADLINE_S = 900.0
RETRY_INITIAL_S = 2.0
RETRY_MAX_BACKOFF_S = 30.0
RETRY_MAX_WAIT_S = 300.0
RETRY_JITTER = 0.3
MALFORMED_RETRIES = 1
LOOPBACK_CONNECT_ATTEMPTS = 2  # a refused loopback address is given up after this many tries
HTTP_TIMEOUT_S = 120.0
DOCTOR_TIMEOUT_S = 10.0  # doctor makes one short attempt per check
AGENT_TIMEOUT_S = 3600.0

# --- Codex poll pacing (clients/polling.py) ---
POLL_INITIAL_S = 2.0
POLL_MIN_INTERVAL_S = 2.0
POLL_RELATIVE = 0.05
POLL_EXPECTED_MIN_S = 30.0
POLL_EXPECTED_MAX_S = 90.0

# --- Runs and the simulator ---
CONCURRENCY = 16
SIM_TIME_SCALE = 0.02
SIM_SEED = 1

# --- OpenAI-compatible endpoints (openai-python _client.py / _constants.py) ---
OPENAI_BASE = "https://api.openai.com/v1"  # what OPENAI_BASE_URL defaults to, as in the official SDK
OPENAI_LIMIT = (500.0, 50)  # requests per minute and burst of a fresh OpenAI account's cheapest tier, roughly
LOCAL_LIMIT = (600.0, 60)  # a `[backends.NAME]` endpoint without requests_per_minute (Ollama, vLLM...)
TOKENS_PER_UNIT = 1000  # tokens_per_minute is paced in units of this many tokens


def limit_key(name: str) -> tuple[str, str, str]:
    """The limiter key of a `[limits."NAME"]` table (the one rule; the run and the simulator both use it).

    `codex.OP` -> the Codex operation (create, poll, ...); `BACKEND/MODEL` -> that backend's requests for
    MODEL (`BACKEND/*`: all its models); a bare model name -> Gemini's requests for that model."""
    if name.startswith("codex."):
        return ("codex", name.split(".", 1)[1], "*")
    if "/" in name:
        backend, model = name.split("/", 1)
        return (backend, "generate", model)
    return ("gemini", "generate", name)
