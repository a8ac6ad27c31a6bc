"""The requests Session both clients share."""

from __future__ import annotations

import threading
from typing import Any
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter


class Session(requests.Session):
    """A requests Session that reads proxy / CA-bundle settings from the environment once per host.

    requests scans the whole environment twice on every request to find proxies (`trust_env`); at
    thousands of requests that was the largest CPU cost of a run. The result only depends on the
    host, so it is cached per (scheme, host) for the life of the session."""

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
