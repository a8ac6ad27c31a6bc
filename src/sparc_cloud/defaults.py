"""Every shared default in one place: limits, retry and timeout figures, run and simulator figures.

Settings, the retry policy, the rate limiters and the simulator all read their defaults from here, so a figure
is changed once. A provider's own figures (URLs, client ids, its limits, prices, task poll pacing) live with it
in `clients/<provider>_settings.py` (or `_defaults.py`); the rule that names a limiter key is
`backends.registry.limit_key`. No imports: this module is cheap to load."""

from __future__ import annotations

# --- Rate limits (requests per minute, burst) ---
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
EAGER_REFRESH_S = 300.0  # OAuth tokens are refreshed 5 minutes before expiry (as google-auth-library does)
DOCTOR_TIMEOUT_S = 10.0  # doctor makes one short attempt per check
AGENT_TIMEOUT_S = 3600.0

# --- Runs and the simulator ---
CONCURRENCY = 16
SIM_TIME_SCALE = 0.02
SIM_SEED = 1

# --- Endpoints ---
TOKENS_PER_UNIT = 1000  # tokens_per_minute is paced in units of this many tokens

