"""The shared requests Session: cached proxy lookup and the lean preparation of API calls.

The lean path must produce exactly the request requests itself would send (URL, headers, body, cookies),
except that ~/.netrc is never consulted (its Basic credentials would replace the bearer token)."""

from __future__ import annotations

from pathlib import Path

import pytest
import requests
import responses

from sparc_cloud.http.session import Session

GEMINI = "https://cloudcode-pa.googleapis.com/v1internal:generateContent"
CODEX_LIST = "https://chatgpt.com/backend-api/wham/tasks/list"


def _both(**kwargs: object) -> tuple[requests.PreparedRequest, requests.PreparedRequest]:
    ours = Session().prepare_request(requests.Request(**kwargs))  # type: ignore[arg-type]
    theirs = requests.Session().prepare_request(requests.Request(**kwargs))  # type: ignore[arg-type]
    return ours, theirs


@pytest.mark.parametrize("kwargs", [
    {"method": "post", "url": GEMINI, "headers": {"Authorization": "Bearer t", "User-Agent": "ua"},
     "json": {"request": {"contents": [{"parts": [{"text": "caf\u00e9 \u2713"}]}]}, "n": [1, 2.5, None]}},
    {"method": "GET", "url": CODEX_LIST, "headers": {"Authorization": "Bearer t"},
     "params": {"limit": "20", "task_filter": "current", "cursor": "a b/c&d"}},
    {"method": "GET", "url": "https://chatgpt.com/backend-api/wham/tasks/task_e_1?x=1", "params": {"y": "2"}},
    {"method": "POST", "url": "https://chatgpt.com/backend-api/wham/tasks", "headers": {"X": "1"}},
    {"method": "POST", "url": GEMINI, "headers": {"Content-Type": "application/json; charset=utf-8"}, "json": {}},
    {"method": "GET", "url": "https://b\u00fccher.example/p\u00e4th?q=\u00e4"},
])
def test_api_calls_are_prepared_exactly_as_requests_prepares_them(kwargs: dict[str, object]) -> None:
    ours, theirs = _both(**kwargs)
    assert (ours.method, ours.url, ours.body) == (theirs.method, theirs.url, theirs.body)
    assert list(ours.headers.items()) == list(theirs.headers.items())


def test_a_none_header_removes_the_session_default() -> None:
    ours, theirs = _both(method="GET", url=CODEX_LIST, headers={"Accept-Encoding": None})
    assert "Accept-Encoding" not in ours.headers
    assert dict(ours.headers) == dict(theirs.headers)


def test_the_session_cookie_jar_is_sent_to_its_host_only() -> None:
    session = Session()
    session.cookies.set("__cf_bm", "cf-value", domain="chatgpt.com", path="/")
    to_codex = session.prepare_request(requests.Request("GET", CODEX_LIST))
    to_google = session.prepare_request(requests.Request("POST", GEMINI, json={}))
    assert to_codex.headers["Cookie"] == "__cf_bm=cf-value"
    assert "Cookie" not in to_google.headers


@responses.activate
def test_cookies_a_server_sets_come_back_on_the_next_call() -> None:
    responses.get(CODEX_LIST, json={"items": []}, headers={"Set-Cookie": "__cf_bm=abc; Path=/; Domain=chatgpt.com"})
    session = Session()
    session.get(CODEX_LIST, timeout=5)
    session.get(CODEX_LIST, timeout=5)
    assert "Cookie" not in responses.calls[0].request.headers
    assert responses.calls[1].request.headers["Cookie"] == "__cf_bm=abc"


def test_a_header_value_with_a_line_break_is_refused() -> None:
    with pytest.raises(requests.exceptions.InvalidHeader):
        Session().prepare_request(requests.Request("POST", GEMINI, headers={"Authorization": "Bearer a\r\nX: y"},
                                                   json={}))


def test_a_body_that_is_not_json_is_refused_like_requests_does() -> None:
    with pytest.raises(requests.exceptions.InvalidJSONError):
        Session().prepare_request(requests.Request("POST", GEMINI, json={"x": float("nan")}))


def test_netrc_credentials_never_replace_the_bearer_token(isolated_env: Path) -> None:
    netrc = isolated_env / ".netrc"
    netrc.write_text("machine chatgpt.com login someone password hunter2\n")
    netrc.chmod(0o600)
    headers = {"Authorization": "Bearer the-token"}
    ours, theirs = _both(method="GET", url=CODEX_LIST, headers=headers)
    assert ours.headers["Authorization"] == "Bearer the-token"
    assert theirs.headers["Authorization"].startswith("Basic ")  # what plain requests would have sent


def test_form_posts_take_requests_own_path() -> None:
    ours, theirs = _both(method="POST", url="https://oauth2.googleapis.com/token",
                         data={"grant_type": "refresh_token", "refresh_token": "r t"})
    assert ours.body == theirs.body == "grant_type=refresh_token&refresh_token=r+t"
    assert ours.headers["Content-Type"] == "application/x-www-form-urlencoded"


def test_session_reads_proxy_settings_once_per_host_and_honours_no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example.invalid:3128")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    session = Session()
    remote = session.merge_environment_settings("https://chatgpt.com/backend-api/wham/tasks", {}, None, None, None)
    local = session.merge_environment_settings("http://127.0.0.1:8765/v1internal", {}, None, None, None)
    assert remote["proxies"].get("https") == "http://proxy.example.invalid:3128"
    assert "http" not in local["proxies"] and "https" not in local["proxies"]
    monkeypatch.setenv("HTTPS_PROXY", "http://other.example.invalid:1")
    again = session.merge_environment_settings("https://chatgpt.com/backend-api/wham/tasks/x", {}, None, None, None)
    assert again["proxies"]["https"] == "http://proxy.example.invalid:3128"  # cached for the session's life
