"""One HTTP exchange, turned into parsed JSON or a typed error. Both clients send through here."""

from __future__ import annotations

import json
from typing import Any

import requests

from sparc_cloud.errors import (
    ApiError,
    MalformedResponse,
    ModelNotFound,
    RateLimited,
    SparcError,
    TerminalQuota,
    TransientError,
    Unauthorized,
    ValidationRequired,
)
from sparc_cloud.http.classify import classify, parse_error_body
from sparc_cloud.redact import SecretRegistry


def error_for(
    status: int, text: str, headers: Any, *, endpoint: str, secrets: SecretRegistry, now_wall: float
) -> SparcError:
    """The typed error for a non-success answer (or a 200 that carries an error envelope)."""
    body = parse_error_body(text)
    decision = classify(status, body, dict(headers or {}), now_wall)
    msg = secrets.redact(f"{endpoint}: HTTP {status}: {decision.message}")
    if decision.kind == "retryable":
        return RateLimited(msg, status=status, endpoint=endpoint, delay=decision.delay)
    if decision.kind == "transient":
        return TransientError(msg, status=status, endpoint=endpoint, delay=decision.delay)
    if decision.kind == "terminal":
        return TerminalQuota(f"{msg} (quota will not come back soon; not retried)", status=status,
                             endpoint=endpoint)
    if decision.kind == "not_found":
        return ModelNotFound(msg, status=status, endpoint=endpoint)
    if decision.kind == "validation":
        url = decision.validation_url
        return ValidationRequired(
            f"{msg}. Verify your account{' at ' + url if url else ''}, then run again.", url=url, endpoint=endpoint
        )
    if decision.kind == "auth":
        return Unauthorized(msg, endpoint=endpoint)
    return ApiError(msg, status=status, endpoint=endpoint)


def _embedded_error(data: Any) -> tuple[int, str] | None:
    """A 200 whose body is an error envelope (object or streaming-style array)."""
    item = data[0] if isinstance(data, list) and len(data) == 1 else data
    if isinstance(item, dict) and set(item) <= {"error", "errors"} and isinstance(item.get("error"), dict):
        code = item["error"].get("code")
        return (code if isinstance(code, int) and code >= 400 else 500), json.dumps(item)
    return None


def exchange(
    session: requests.Session,
    method: str,
    url: str,
    *,
    endpoint: str,
    secrets: SecretRegistry,
    now_wall: float,
    timeout_s: float,
    headers: dict[str, str],
    json_body: Any = None,
    params: dict[str, str] | None = None,
) -> Any:
    """Send one request; return the decoded JSON of a 2xx answer or raise the typed error."""
    try:
        resp = session.request(method, url, headers=headers, json=json_body, params=params, timeout=timeout_s)
        # JSON is UTF-8 (RFC 8259): decode the bytes directly. `resp.text` would run charset detection over
        # the whole body (megabytes for a Codex diff) whenever a server leaves the charset out.
        text = resp.content.decode("utf-8", errors="replace")
    except requests.Timeout:
        raise TransientError(f"{endpoint}: timed out after {timeout_s:.0f} s", endpoint=endpoint) from None
    except (requests.ConnectionError, requests.exceptions.ChunkedEncodingError) as exc:
        reason = type(exc).__name__
        raise TransientError(f"{endpoint}: connection failed ({reason})", endpoint=endpoint) from None
    except requests.RequestException as exc:
        raise TransientError(f"{endpoint}: request failed ({type(exc).__name__})", endpoint=endpoint) from None
    if resp.status_code >= 300:
        raise error_for(resp.status_code, text, resp.headers, endpoint=endpoint, secrets=secrets,
                        now_wall=now_wall)
    if not text.strip():
        raise MalformedResponse(f"{endpoint}: HTTP {resp.status_code} with an empty body", endpoint=endpoint,
                                status=resp.status_code)
    try:
        data = json.loads(text)
    except ValueError:
        raise MalformedResponse(
            f"{endpoint}: HTTP {resp.status_code} with a body that is not valid JSON "
            f"({len(text)} bytes, starting {secrets.redact(text[:60])!r})",
            endpoint=endpoint, status=resp.status_code,
        ) from None
    embedded = _embedded_error(data)
    if embedded:
        raise error_for(embedded[0], embedded[1], resp.headers, endpoint=endpoint, secrets=secrets,
                        now_wall=now_wall)
    return data
