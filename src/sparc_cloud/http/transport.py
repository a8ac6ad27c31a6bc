"""One HTTP exchange, turned into parsed JSON or a typed error. Every client sends through here, with its own
error rules (a `Rules` function, or a `classify_error` that builds the error itself)."""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlsplit

import requests
import urllib3.exceptions
from urllib3.exceptions import ConnectTimeoutError, NewConnectionError

from sparc_cloud.errors import (
    ApiError,
    CapacityExhausted,
    ConfigError,
    MalformedResponse,
    ModelNotFound,
    RateLimited,
    SparcError,
    TerminalQuota,
    TransientError,
    Unauthorized,
    Unreachable,
    ValidationRequired,
)
from sparc_cloud.http.classify import Classification, ErrorBody, classify_generic, parse_error_body
from sparc_cloud.redact import SecretRegistry

Rules = Callable[[int, ErrorBody, Mapping[str, str], float | None], Classification]


def error_for(
    status: int, text: str, headers: Any, *, endpoint: str, secrets: SecretRegistry, now_wall: float,
    rules: Rules = classify_generic,
) -> SparcError:
    """The typed error for a non-success answer (or a 200 that carries an error envelope), as `rules` decide."""
    body = parse_error_body(text)
    decision = rules(status, body, dict(headers or {}), now_wall)
    msg = secrets.redact(f"{endpoint}: HTTP {status}: {decision.message}")
    if decision.kind == "capacity":
        return CapacityExhausted(f"{msg} (the model has no capacity on the server right now; this is not your quota)",
                                 status=status, endpoint=endpoint, delay=decision.delay)
    if decision.kind == "retryable":
        return RateLimited(msg, status=status, endpoint=endpoint, delay=decision.delay)
    if decision.kind == "challenge":
        return ApiError(f"{endpoint}: HTTP {status}: {decision.message}. The service blocked this client; try again "
                        "later, or from another network.", status=status, endpoint=endpoint)
    if decision.kind == "transient":
        return TransientError(msg, status=status, endpoint=endpoint, delay=decision.delay)
    if decision.kind == "terminal":
        return TerminalQuota(f"{msg} (quota will not come back soon; not retried)", status=status, delay=decision.delay,
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


# urllib3 2 has NameResolutionError; with urllib3 1.26 a DNS failure is a NewConnectionError with the resolver's text.
_DNS_ERRORS = tuple(getattr(urllib3.exceptions, n) for n in ("NameResolutionError",) if hasattr(urllib3.exceptions, n))
_DNS_WORDS = ("name or service not known", "getaddrinfo", "nodename nor servname", "temporary failure in name",
              "failed to resolve")


def is_loopback(url: str) -> bool:
    """Whether a URL points at this machine (127.0.0.0/8, ::1, localhost)."""
    host = (urlsplit(url).hostname or "").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _site(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def _never_sent(exc: requests.RequestException) -> str | None:
    """Why no byte reached the server (refused, DNS, connect timeout), or None if the request may have."""
    reason = exc.args[0] if exc.args else None
    inner = getattr(reason, "reason", reason)
    text = str(inner).lower()
    if (_DNS_ERRORS and isinstance(inner, _DNS_ERRORS)) or (isinstance(inner, NewConnectionError) and any(
            w in text for w in _DNS_WORDS)):
        return "DNS lookup failed"
    if isinstance(inner, NewConnectionError):  # (a subclass of ConnectTimeoutError in urllib3 2)
        return "connection refused" if "refused" in text else "cannot connect"
    if isinstance(exc, requests.exceptions.ConnectTimeout) or isinstance(inner, ConnectTimeoutError):
        return "connect timeout"
    return None


def _unreachable(exc: requests.RequestException, why: str, *, url: str, endpoint: str, origin: str) -> Unreachable:
    where = _site(url)
    source = f"; the address comes from {origin}" if origin else ""
    return Unreachable(f"{endpoint}: cannot reach {where} ({why}){source}", endpoint=endpoint, url=where,
                       setting=origin, loopback=is_loopback(url))


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
    origin: str = "",
    rules: Rules = classify_generic,
    classify_error: Callable[[int, str, Mapping[str, str]], SparcError] | None = None,
    on_headers: Callable[[Mapping[str, str]], None] | None = None,
) -> Any:
    """Send one request; return the decoded JSON of a 2xx answer or raise the typed error.

    `origin` names the setting the URL comes from; a connection that cannot be made at all raises
    `Unreachable` naming the address and that setting (nothing was sent). A timeout or a reset after the
    request went out is a `TransientError`: the server may have acted on it.

    `rules` decide what an error answer means (the client's provider rules; the generic ones by default).
    A client that builds its errors itself passes `classify_error(status, body text, headers)`, which maps a
    non-2xx answer (or a 2xx error envelope) to the error to raise; `on_headers` sees every answer's headers
    (rate-limit headers steer a limiter)."""
    try:
        resp = session.request(method, url, headers=headers, json=json_body, params=params, timeout=timeout_s)
        # JSON is UTF-8 (RFC 8259): decode the bytes directly. `resp.text` would run charset detection over
        # the whole body (megabytes for a diff) whenever a server leaves the charset out.
        text = resp.content.decode("utf-8", errors="replace")
    except (requests.exceptions.InvalidHeader, UnicodeEncodeError):
        # A header value with a newline or a non-Latin-1 character: a damaged credential, never worth a retry.
        # The exception text would quote the header (a token): it is left out.
        raise ConfigError(f"{endpoint}: a request header cannot be sent (a token or id with a line break or a "
                          "character outside Latin-1). Check the credentials file, then log in again.") from None
    except (requests.exceptions.InvalidURL, requests.exceptions.MissingSchema, requests.exceptions.InvalidSchema):
        raise ConfigError(f"{endpoint}: {_site(url)} is not a usable URL"
                          f"{'; fix ' + origin if origin else ''}.") from None
    except requests.Timeout as exc:
        never = _never_sent(exc)
        if never:
            raise _unreachable(exc, never, url=url, endpoint=endpoint, origin=origin) from None
        raise TransientError(f"{endpoint}: timed out after {timeout_s:.0f} s", endpoint=endpoint) from None
    except (requests.ConnectionError, requests.exceptions.ChunkedEncodingError) as exc:
        never = _never_sent(exc)
        if never:
            raise _unreachable(exc, never, url=url, endpoint=endpoint, origin=origin) from None
        reason = type(exc).__name__
        raise TransientError(f"{endpoint}: connection failed ({reason})", endpoint=endpoint) from None
    except requests.RequestException as exc:
        raise TransientError(f"{endpoint}: request failed ({type(exc).__name__})", endpoint=endpoint) from None
    if on_headers is not None:
        on_headers(resp.headers)
    if resp.status_code >= 300:
        if classify_error is not None:
            raise classify_error(resp.status_code, text, resp.headers)
        raise error_for(resp.status_code, text, resp.headers, endpoint=endpoint, secrets=secrets,
                        now_wall=now_wall, rules=rules)
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
    if embedded and classify_error is not None:
        raise classify_error(embedded[0], embedded[1], resp.headers)
    if embedded:
        raise error_for(embedded[0], embedded[1], resp.headers, endpoint=endpoint, secrets=secrets,
                        now_wall=now_wall, rules=rules)
    return data
