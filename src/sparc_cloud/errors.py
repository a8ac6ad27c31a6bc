"""Typed errors. Each carries a message a user can act on and the exit code the CLI maps it to.

Every client raises from this one tree; each maps a status and body to a class itself (its provider's rules
live with its client, never in `http/`), and `http/retry.py` retries exactly the `RetryableError` branch.
Every answer of a server is an `HttpError`, which carries the status, the endpoint and the server's retry hint::

    SparcError (exit 1)
    +-- ConfigError (exit 2)               bad input: a project file, a flag, a setting, a missing key
    |   +-- BundleError                    a run folder's bundle that cannot be read
    +-- AuthError (exit 2)                 credentials missing, refused, or not refreshable
    +-- HttpError (status, endpoint, delay: the server's retry hint, in seconds)
    |   +-- ApiError                       the server said no, for good
    |   |   +-- ModelNotFound, ValidationRequired, PromptBlocked, TaskGone
    |   +-- RetryableError
    |   |   +-- RateLimited                429 and friends
    |   |   |   +-- CapacityExhausted
    |   |   +-- TransientError             5xx, timeouts, resets
    |   |   |   +-- Unreachable            nothing was sent (refused, DNS)
    |   |   +-- MalformedResponse          a body that is not what the API sends
    |   +-- Unauthorized                   a 401 a client refreshes once for
    |   +-- TerminalQuota                  quota that will not come back soon
    +-- RetriesExhausted                   the retry policy gave up (attempts, last status)
    +-- TaskFailed, TaskTimeout, TaskPollFailed   a cloud task's end
    +-- DiffRejected                       a chat model's diff refused before and after a repair turn
    +-- RunFolderWriteError, Cancelled
"""

from __future__ import annotations


class SparcError(Exception):
    """Base of every error sparc-cloud raises on purpose."""

    exit_code = 1

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class ConfigError(SparcError):
    """Bad project file, flag, setting or run folder: nothing was called."""

    exit_code = 2


class AuthError(SparcError):
    """Credentials missing, unreadable, expired beyond refresh, or rejected."""

    exit_code = 2


class HttpError(SparcError):
    """What a server answered (or failed to): the HTTP status (None when no answer came), the endpoint (a
    short name such as `local generate`), and the server's retry hint in seconds (None when it gave none)."""

    def __init__(self, message: str, *, status: int | None = None, endpoint: str = "",
                 delay: float | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.endpoint = endpoint
        self.delay = delay


class ApiError(HttpError):
    """An HTTP error the server meant (400/403/404...), never retried."""

    def __init__(self, message: str, *, status: int | None = None, endpoint: str = "") -> None:
        super().__init__(message, status=status, endpoint=endpoint)


class ModelNotFound(ApiError):
    """The server does not know the model (404)."""


class ValidationRequired(ApiError):
    """The service wants the user to verify the account at a URL first."""

    def __init__(self, message: str, *, url: str | None, endpoint: str = "") -> None:
        super().__init__(message, status=403, endpoint=endpoint)
        self.url = url


class RetryableError(HttpError):
    """Base of errors the shared retry policy retries."""


class RateLimited(RetryableError):
    """429/499/503 the server says will pass; `delay` is its hint in seconds, if any."""


class TransientError(RetryableError):
    """5xx, timeouts and connection resets."""


class MalformedResponse(RetryableError):
    """A body that is not the JSON the spec describes (truncated, empty, wrong shape)."""


class Unauthorized(HttpError):
    """HTTP 401: the token was rejected. Clients refresh once, then raise AuthError."""

    def __init__(self, message: str, *, endpoint: str = "") -> None:
        super().__init__(message, status=401, endpoint=endpoint)


class TerminalQuota(HttpError):
    """Quota that will not come back soon (daily, capacity, limit 0, delay > 300 s)."""


class TaskFailed(SparcError):
    """A cloud task ended in failed/cancelled status."""

    def __init__(self, message: str, *, task_id: str, status: str) -> None:
        super().__init__(message)
        self.task_id = task_id
        self.status = status


class TaskTimeout(SparcError):
    """A cloud task did not finish in time."""

    def __init__(self, message: str, *, task_id: str, last_status: str) -> None:
        super().__init__(message)
        self.task_id = task_id
        self.last_status = last_status


class Cancelled(SparcError):
    """The run was interrupted (Ctrl-C, deadline); sleeps and waits end early with this."""

    exit_code = 130


class BundleError(ConfigError):
    """A run folder's bundle or journal cannot be used."""


class RetriesExhausted(SparcError):
    """A retryable error outlasted the retry budget (attempts or deadline)."""

    def __init__(self, message: str, *, attempts: int, status: int | None) -> None:
        super().__init__(message)
        self.attempts = attempts
        self.status = status


class RunFolderWriteError(SparcError):
    """The run folder stopped accepting writes mid-run (disk full, permissions changed)."""


class Unreachable(TransientError):
    """The server could not be reached at all (connection refused, DNS failure, no route): nothing was sent.

    `url` is where we tried, `setting` the setting that address comes from, `loopback` whether it is this
    machine (then a refusal will not pass by waiting: the retry policy gives up after two tries)."""

    def __init__(self, message: str, *, endpoint: str = "", url: str = "", setting: str = "",
                 loopback: bool = False) -> None:
        super().__init__(message, endpoint=endpoint)
        self.url = url
        self.setting = setting
        self.loopback = loopback


class CapacityExhausted(RateLimited):
    """The model has no capacity on the server right now (503 MODEL_CAPACITY_EXHAUSTED): not the user's
    quota; retried under the shared policy, then the fallback model when enabled."""


class PromptBlocked(ApiError):
    """The model answered with no candidates (an empty answer), e.g. `promptFeedback.blockReason`; re-sending
    the same prompt changes nothing."""

    def __init__(self, message: str, *, reason: str | None, endpoint: str = "") -> None:
        super().__init__(message, status=200, endpoint=endpoint)
        self.reason = reason


class TaskPollFailed(SparcError):
    """Polling a cloud task failed for good (or until the agent timeout); the task itself may still be live
    on the server: `task_id` lets a later run attach to it again."""

    def __init__(self, message: str, *, task_id: str) -> None:
        super().__init__(message)
        self.task_id = task_id


class TaskGone(ApiError):
    """The server does not know the cloud task (404)."""

    def __init__(self, message: str, *, task_id: str, endpoint: str = "") -> None:
        super().__init__(message, status=404, endpoint=endpoint)
        self.task_id = task_id


class DiffRejected(SparcError):
    """A chat model's refinement answer whose diff `git apply --check` refused, before and after a repair turn."""
