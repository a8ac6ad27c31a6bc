"""The requests Session every client shares."""

from __future__ import annotations

import json
import threading
from functools import lru_cache
from typing import Any, cast
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter
from requests.structures import CaseInsensitiveDict
from requests.utils import check_header_validity


@lru_cache(maxsize=1024)
def _prepared_url(url: str, params: tuple[tuple[str, str], ...]) -> str:
    """requests' own URL preparation (IDNA, quoting, query encoding), done once per distinct URL."""
    prep = requests.PreparedRequest()
    prep.prepare_url(url, list(params))
    return str(prep.url)


class Session(requests.Session):
    """A requests Session tuned for thousands of small JSON API calls.

    Two things requests does on every request dominate a long run's CPU, and neither is needed here:
    - `merge_environment_settings` scans the whole environment twice to find proxies; the result only
      depends on the host, so it is cached per (scheme, host) for the life of the session;
    - `prepare_request` merges cookie jars, looks up `~/.netrc`, re-parses the URL and runs generic
      body detection. API calls (JSON or no body, headers we set, no request-level auth) take a lean
      path instead that produces the same prepared request: same URL preparation (cached per URL), same
      headers and Content-Length, the session's cookies (a client may keep Cloudflare's) when it has any.
      `~/.netrc` is deliberately not consulted: its Basic credentials would replace our bearer token.
    Anything else (form bodies, files, auth objects, hooks) goes through requests' own code."""

    def __init__(self, pool_size: int = 16) -> None:
        super().__init__()
        adapter = HTTPAdapter(pool_connections=4, pool_maxsize=max(10, pool_size))
        self.mount("http://", adapter)
        self.mount("https://", adapter)
        self._env_cache: dict[tuple[Any, ...], dict[str, Any]] = {}
        self._env_lock = threading.Lock()

    def merge_environment_settings(self, url: Any, proxies: Any, stream: Any, verify: Any, cert: Any) -> Any:
        parts = urlsplit(str(url))
        key = (parts.scheme, parts.netloc, tuple(sorted(dict(proxies or {}).items())), stream, verify, cert)
        with self._env_lock:
            found = self._env_cache.get(key)
        if found is None:
            merged: dict[str, Any] = dict(super().merge_environment_settings(url, proxies, stream, verify, cert))
            with self._env_lock:
                self._env_cache[key] = merged
            found = merged
        return {k: (dict(v) if isinstance(v, dict) else v) for k, v in found.items()}

    def prepare_request(self, request: requests.Request) -> requests.PreparedRequest:
        params = request.params
        simple = (
            isinstance(request.url, str) and isinstance(request.method, str)
            and not (request.files or request.data or request.auth or request.cookies or self.auth or self.params)
            and not any(request.hooks.values()) and not any(self.hooks.values())
            and isinstance(params, dict | type(None)) and isinstance(request.headers, dict | CaseInsensitiveDict)
        )
        if not simple:
            return super().prepare_request(request)
        prep = requests.PreparedRequest()
        prep.method = str(request.method).upper()
        prep.url = _prepared_url(str(request.url), tuple((params or {}).items()))
        headers: CaseInsensitiveDict[str | bytes] = CaseInsensitiveDict()
        for name, value in [*self.headers.items(), *request.headers.items()]:
            if value is None:  # requests' convention: a None value removes a session default
                headers.pop(name, None)
            else:
                check_header_validity((name, value))
                headers[name] = value
        prep.headers = cast("CaseInsensitiveDict[str]", headers)  # requests keeps bytes values as given too
        if request.json is not None:
            try:
                body = json.dumps(request.json, allow_nan=False).encode("utf-8")
            except ValueError as exc:
                raise requests.exceptions.InvalidJSONError(exc, request=prep) from None
            headers["Content-Length"] = str(len(body))
            if "content-type" not in headers:
                headers["Content-Type"] = "application/json"
            prep.body = body
        elif prep.method not in ("GET", "HEAD"):
            headers["Content-Length"] = "0"
        if len(self.cookies):
            prep.prepare_cookies(self.cookies.copy())
        return prep
