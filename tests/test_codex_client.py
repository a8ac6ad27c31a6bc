"""CodexClient against `responses` mocks: wire format field by field, as openai/codex backend-client speaks it."""

from __future__ import annotations

import base64
import json
import re
import subprocess
import threading
from pathlib import Path
from typing import Any

import pytest
import requests
import responses

from sparc_cloud.clients.codex import CodexClient, TaskStatus, map_status, parse_details
from sparc_cloud.clients.codex_auth import CodexAuth
from sparc_cloud.clients.codex_polling import PollPolicy
from sparc_cloud.errors import (
    ApiError,
    AuthError,
    ConfigError,
    TaskFailed,
    TaskGone,
    TaskPollFailed,
    TaskTimeout,
    TerminalQuota,
)
from sparc_cloud.http.clock import FakeClock
from sparc_cloud.http.ratelimit import RateLimit, RateLimiters
from sparc_cloud.http.retry import RetryPolicy
from sparc_cloud.redact import SecretRegistry
from sparc_cloud.sim import codex_envelopes as env

BASE = "https://chatgpt.com/backend-api"
ACCOUNT = "acct-MARKER-0001"
REFRESH = "rt_MARKER_REFRESH_0001"


def jwt(claims: dict[str, Any]) -> str:
    def b64(d: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(d).encode()).decode().rstrip("=")
    return f"{b64({'alg': 'none'})}.{b64(claims)}.MARKERSIG"


ACCESS = jwt({"exp": 4_000_000_000, "https://api.openai.com/auth": {"chatgpt_account_id": "acct-from-jwt"}})


def write_auth(home: Path, *, account: str | None = ACCOUNT, access: str = ACCESS) -> Path:
    path = home / ".codex" / "auth.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"auth_mode": "chatgpt", "OPENAI_API_KEY": None, "last_refresh": "2025-10-01T12:00:00Z",
                                "tokens": {"id_token": jwt({"email": "x@example.com"}), "access_token": access,
                                           "refresh_token": REFRESH, "account_id": account}}))
    path.chmod(0o600)
    return path


def make_client(home: Path, *, clock: FakeClock | None = None, base: str = BASE, style: str = "auto",
                account: str | None = ACCOUNT, refresh: bool = False, limits: dict | None = None,  # type: ignore[type-arg]
                list_polling: bool = True, max_attempts: int = 4) -> CodexClient:
    clock = clock or FakeClock()
    session = requests.Session()
    secrets = SecretRegistry()
    auth = CodexAuth(write_auth(home, account=account), clock=clock, secrets=secrets, session=session,
                     refresh=refresh, refresh_url="https://auth.openai.com/oauth/token", client_id="app_X")
    return CodexClient(base_url=base, auth=auth, session=session, limiters=RateLimiters(clock, limits),
                       policy=RetryPolicy(max_attempts=max_attempts), clock=clock, secrets=secrets, path_style=style,
                       poll=PollPolicy(), list_polling=list_polling, on_retry=lambda notice: None)


def details(status: str, *, task_id: str = "task_e_1", diff_shape: str = "output_diff", error: Any = None,
            display_only: bool = False) -> dict[str, Any]:
    diff = "diff --git a/x.py b/x.py\nnew file mode 100644\n--- /dev/null\n+++ b/x.py\n@@ -0,0 +1 @@\n+x = 1\n"
    item = {"type": "output_diff", "diff": diff} if diff_shape == "output_diff" else {"type": "pr", "output_diff": {"diff": diff}}
    turn = {"id": f"{task_id}~assttrn_e_1", "turn_status": status, "attempt_placement": 0, "sibling_turn_ids": [],
            "output_items": [{"type": "message", "role": "assistant", "content": [
                {"content_type": "text", "text": "Done."}, "bare part"]}, item] if status == "completed" else [],
            "worklog": {"messages": [
                {"author": {"role": "assistant"}, "content": {"parts": ["Ran tests", {"content_type": "text", "text": "OK"}]}},
                {"author": {"role": "user"}, "content": {"parts": ["ignored"]}}]},
            "error": error}
    body: dict[str, Any] = {"task": {"id": task_id, "title": "T", "archived": False, "external_pull_requests": []},
                            "current_user_turn": None, "current_assistant_turn": None if display_only else turn,
                            "current_diff_task_turn": None}
    if display_only:
        body["task_status_display"] = {"latest_turn_status_display": {"turn_status": status}}
    return body


@responses.activate
def test_create_task_body_and_headers_match_the_spec(isolated_env: Path) -> None:
    responses.post(f"{BASE}/wham/tasks", json={"task": {"id": "task_e_abc"}})
    task_id = make_client(isolated_env).create_task("Build it", environment_id="env_1", branch="main")
    call = responses.calls[0].request
    assert task_id == "task_e_abc"
    assert json.loads(call.body or b"{}") == {
        "new_task": {"environment_id": "env_1", "branch": "main", "run_environment_in_qa_mode": False},
        "input_items": [{"type": "message", "role": "user", "content": [{"content_type": "text", "text": "Build it"}]}],
    }
    assert call.headers["Authorization"] == f"Bearer {ACCESS}"
    assert call.headers["ChatGPT-Account-Id"] == ACCOUNT
    assert call.headers["Content-Type"] == "application/json"
    # The official client's User-Agent shape (codex.md section 2), our surface as the suffix.
    assert re.fullmatch(r"codex_cli_rs/\d+\.\d+\.\d+ \(\S+ \S+; \S+\) \S+ \(sparc_cloud_tasks\)",
                        call.headers["User-Agent"])


@responses.activate
def test_create_task_outside_a_checkout_sends_branch_main_and_best_of_n(isolated_env: Path) -> None:
    """Upstream always sends `new_task.branch`; with no git checkout it is "main" (codex.md section 8)."""
    responses.post(f"{BASE}/wham/tasks", json={"id": "task_e_top"})
    assert make_client(isolated_env).create_task("p", environment_id="e", best_of_n=2) == "task_e_top"
    body = json.loads(responses.calls[0].request.body or b"{}")
    assert body["new_task"]["branch"] == "main" and body["metadata"] == {"best_of_n": 2}


@responses.activate
def test_account_id_falls_back_to_the_access_token_claim(isolated_env: Path) -> None:
    responses.get(f"{BASE}/wham/environments", json=[])
    make_client(isolated_env, account=None).environments()
    assert responses.calls[0].request.headers["ChatGPT-Account-Id"] == "acct-from-jwt"


@pytest.mark.parametrize(
    ("base", "style", "url"),
    [
        ("https://chatgpt.com/backend-api/", "auto", "https://chatgpt.com/backend-api/wham/environments"),
        ("https://chatgpt.com", "auto", "https://chatgpt.com/backend-api/wham/environments"),
        ("https://example.test", "auto", "https://example.test/api/codex/environments"),
        ("https://chatgpt.com/backend-api", "runbook", "https://chatgpt.com/backend-api/codex/environments"),
    ],
)
@responses.activate
def test_path_styles(isolated_env: Path, base: str, style: str, url: str) -> None:
    responses.get(url, json=[])
    make_client(isolated_env, base=base, style=style).environments()
    assert responses.calls[0].request.url == url


def test_unknown_path_style_is_a_config_error(isolated_env: Path) -> None:
    with pytest.raises(ConfigError, match="path style"):
        make_client(isolated_env, style="graphql")


@responses.activate
def test_environment_resolves_by_id_or_case_insensitive_label(isolated_env: Path) -> None:
    responses.get(f"{BASE}/wham/environments", json=[{"id": "env_a", "label": "Memory-Extension", "is_pinned": True},
                                                     {"id": "env_b", "label": "other"}])
    client = make_client(isolated_env)
    assert client.resolve_environment("env_b").id == "env_b"
    assert client.resolve_environment("memory-extension").id == "env_a"
    with pytest.raises(ConfigError, match="No Codex environment .* 'nope'.*Memory-Extension \\(env_a\\)"):
        client.resolve_environment("nope")
    assert len(responses.calls) == 1  # the list is fetched once


@responses.activate
def test_list_tasks_sends_query_in_order(isolated_env: Path) -> None:
    responses.get(f"{BASE}/wham/tasks/list", json={"items": [], "cursor": None})
    make_client(isolated_env).list_tasks(limit=10, cursor="next=page", environment_id="env&one")
    assert responses.calls[0].request.url == (
        f"{BASE}/wham/tasks/list?limit=10&task_filter=current&cursor=next%3Dpage&environment_id=env%26one")


@responses.activate
def test_sibling_turns_and_usage_endpoints(isolated_env: Path) -> None:
    responses.get(f"{BASE}/wham/tasks/task_e_1/turns/t~1/sibling_turns", json={"sibling_turns": [{"id": "s1"}]})
    responses.get(f"{BASE}/wham/usage", json={"plan_type": "pro", "rate_limit": {"allowed": True}})
    client = make_client(isolated_env)
    assert client.sibling_turns("task_e_1", "t~1") == [{"id": "s1"}]
    assert client.usage()["plan_type"] == "pro"
    assert responses.calls[0].request.url.endswith("/turns/t~1/sibling_turns")


def test_details_extract_text_diff_worklog_from_both_item_shapes() -> None:
    for shape in ("output_diff", "pr"):
        parsed = parse_details(details("completed", diff_shape=shape), "task_e_1")
        assert parsed.status == TaskStatus.COMPLETED
        assert parsed.text == "Done.\n\nbare part"
        assert parsed.diff is not None and parsed.diff.startswith("diff --git a/x.py")
        assert parsed.worklog == ["Ran tests", "OK"]


def test_diff_is_taken_from_the_diff_turn_first() -> None:
    body = details("completed")
    body["current_diff_task_turn"] = {"output_items": [{"type": "output_diff", "diff": "diff --git a/first b/first\n"}]}
    assert parse_details(body, "t").diff == "diff --git a/first b/first\n"


def test_error_is_code_colon_message() -> None:
    parsed = parse_details(details("failed", error={"code": "E_BOOM", "message": "container died"}), "t")
    assert parsed.status == TaskStatus.FAILED and parsed.error == "E_BOOM: container died"
    assert parse_details(details("failed", error={"code": "", "message": "only message"}), "t").error == "only message"


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"current_assistant_turn": {"turn_status": "in_progress"}}, TaskStatus.IN_PROGRESS),
        ({"current_assistant_turn": {"turn_status": "cancelled"}}, TaskStatus.CANCELLED),
        ({"current_assistant_turn": {"turn_status": "something-new"}}, TaskStatus.PENDING),
        ({"task_status_display": {"latest_turn_status_display": {"turn_status": "completed"}}}, TaskStatus.COMPLETED),
        ({"task": {"task_status_display": {"state": "error"}}}, TaskStatus.FAILED),
        ({"task_status_display": {"state": "ready"}}, TaskStatus.COMPLETED),
        ({}, TaskStatus.PENDING),
    ],
)
def test_status_mapping(body: dict[str, Any], status: TaskStatus) -> None:
    assert map_status(body) == status


@responses.activate
def test_wait_polls_adaptively_until_completed(isolated_env: Path) -> None:
    url = f"{BASE}/wham/tasks/task_e_1"
    for status in ("pending", "in_progress", "in_progress"):
        responses.get(url, json=details(status))
    responses.get(url, json=details("in_progress", display_only=True))
    responses.get(url, json=details("completed"))
    clock = FakeClock()
    start = clock.now()
    result, polls = make_client(isolated_env, clock=clock, list_polling=False).wait("task_e_1", timeout_s=1000)
    assert polls == 5 and result.status == TaskStatus.COMPLETED and result.diff
    # one early poll at 2 s, none until the earliest expected finish (30 s), then every 2 s
    assert 36.0 <= clock.now() - start <= 37.0


@responses.activate
def test_task_in_error_raises_with_the_server_message(isolated_env: Path) -> None:
    responses.get(f"{BASE}/wham/tasks/task_e_1", json=details("failed", error={"code": "E1", "message": "tests failed"}))
    with pytest.raises(TaskFailed, match="task_e_1 ended failed: Task failed: E1: tests failed") as info:
        make_client(isolated_env, list_polling=False).wait("task_e_1", timeout_s=100)
    assert info.value.task_id == "task_e_1"


@responses.activate
def test_timeout_carries_task_id_and_last_status(isolated_env: Path) -> None:
    responses.get(f"{BASE}/wham/tasks/task_e_1", json=details("in_progress"))
    with pytest.raises(TaskTimeout, match="last status: in_progress") as info:
        make_client(isolated_env, list_polling=False).wait("task_e_1", timeout_s=60)
    assert (info.value.task_id, info.value.last_status) == ("task_e_1", "in_progress")


@responses.activate
def test_poll_budget_is_never_exceeded_with_20_tasks_in_flight(isolated_env: Path) -> None:
    clock = FakeClock()
    polls_at: list[float] = []
    lock = threading.Lock()
    seen: dict[str, int] = {}

    def answer(request: requests.PreparedRequest) -> tuple[int, dict[str, str], str]:
        task_id = str(request.url).rsplit("/", 1)[1]
        with lock:
            polls_at.append(clock.now())
            seen[task_id] = seen.get(task_id, 0) + 1
            status = "completed" if seen[task_id] >= 4 else "in_progress"
        return 200, {}, json.dumps(details(status, task_id=task_id))

    responses.add_callback(responses.GET, __import__("re").compile(f"{BASE}/wham/tasks/task_e_.*"), callback=answer)
    client = make_client(isolated_env, clock=clock, limits={("codex", "poll", "*"): RateLimit(per_minute=30, burst=5)},
                         list_polling=False)
    threads = [threading.Thread(target=client.wait, args=(f"task_e_{i}",), kwargs={"timeout_s": 10_000})
               for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    polls_at.sort()
    assert len(polls_at) == 80
    for i, t in enumerate(polls_at):  # in any 60 s window: at most burst + 30 polls
        in_window = sum(1 for u in polls_at[i:] if u < t + 60)
        assert in_window <= 35


@responses.activate
def test_poll_429_pauses_the_budget_and_is_retried(isolated_env: Path) -> None:
    url = f"{BASE}/wham/tasks/task_e_1"
    responses.get(url, status=429, json=env.codex_usage_limit(4.0), headers={"retry-after-ms": "4000"})
    responses.get(url, json=details("completed"))
    clock = FakeClock()
    result, _ = make_client(isolated_env, clock=clock, list_polling=False).wait("task_e_1", timeout_s=100)
    assert result.status == TaskStatus.COMPLETED and max(clock.sleeps) >= 4.0


@responses.activate
def test_401_rereads_auth_json_then_retries(isolated_env: Path) -> None:
    responses.get(f"{BASE}/wham/environments", status=401, json={"detail": "Unauthorized"})
    responses.get(f"{BASE}/wham/environments", json=[{"id": "env_1"}])
    client = make_client(isolated_env)
    fresh = jwt({"exp": 4_000_000_001})
    write_auth(isolated_env, access=fresh)  # the codex CLI refreshed the file meanwhile
    assert [e.id for e in client.environments()] == ["env_1"]
    assert responses.calls[1].request.headers["Authorization"] == f"Bearer {fresh}"


@responses.activate
def test_401_without_refresh_names_codex_login(isolated_env: Path) -> None:
    responses.get(f"{BASE}/wham/environments", status=401, json={"detail": "Unauthorized"})
    with pytest.raises(AuthError, match="codex login") as info:
        make_client(isolated_env).environments()
    assert ACCESS not in str(info.value) and REFRESH not in str(info.value) and ACCOUNT not in str(info.value)


@responses.activate
def test_401_with_refresh_enabled_refreshes_and_keeps_mode_0600(isolated_env: Path) -> None:
    new_access = jwt({"exp": 4_000_000_002})
    refresh = responses.post("https://auth.openai.com/oauth/token", json={"access_token": new_access})
    responses.get(f"{BASE}/wham/environments", status=401, json={"detail": "Unauthorized"})
    responses.get(f"{BASE}/wham/environments", json=[])
    make_client(isolated_env, refresh=True).environments()
    assert json.loads(refresh.calls[0].request.body or b"{}") == {
        "client_id": "app_X", "grant_type": "refresh_token", "refresh_token": REFRESH}
    saved = json.loads((isolated_env / ".codex" / "auth.json").read_text())
    assert saved["tokens"]["access_token"] == new_access and saved["tokens"]["refresh_token"] == REFRESH
    assert ((isolated_env / ".codex" / "auth.json").stat().st_mode & 0o777) == 0o600


def test_api_key_only_auth_json_is_refused_with_login_hint(isolated_env: Path) -> None:
    path = isolated_env / ".codex" / "auth.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"OPENAI_API_KEY": "sk-MARKER"}))
    with pytest.raises(AuthError, match="codex login") as info:
        CodexAuth(path, clock=FakeClock(), secrets=SecretRegistry(), session=requests.Session())
    assert "sk-MARKER" not in str(info.value)


@responses.activate
def test_utf8_bodies_without_a_charset_are_decoded_as_utf8(isolated_env: Path) -> None:
    body = json.dumps([{"id": "env_ü", "label": "Grüße 🚀"}], ensure_ascii=False).encode("utf-8")
    responses.get(f"{BASE}/wham/environments", body=body, content_type="application/json")
    assert make_client(isolated_env).environments()[0].label == "Grüße 🚀"


# ---------------------------------------------------------------------------------------------------------
# Newest upstream behaviour (codex.md section 8): openai/codex cloud-tasks-client `http.rs`, cloud-tasks
# `lib.rs`, backend-client `client.rs`, and the payloads users captured in issues.

def git(cwd: Path, *args: str) -> None:
    subprocess.run(["git", "-c", "user.email=t@example.invalid", "-c", "user.name=t", *args], cwd=cwd, check=True,
                   capture_output=True)


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    """A git checkout with a commit on `main` and a clone whose origin/HEAD points at main."""
    origin = tmp_path / "origin"
    origin.mkdir()
    git(origin, "init", "-q", "-b", "main")
    (origin / "README").write_text("x")
    git(origin, "add", "README")
    git(origin, "commit", "-q", "-m", "init")
    clone = tmp_path / "clone"
    git(tmp_path, "clone", "-q", str(origin), str(clone))
    return clone


def test_branch_is_the_flag_then_the_project_then_the_checkout_then_main(checkout: Path, tmp_path: Path) -> None:
    """cloud-tasks lib.rs `resolve_git_ref_with_git_info`: override, current branch, default branch, "main"."""
    from sparc_cloud.clients.codex_gitref import resolve_branch

    git(checkout, "checkout", "-q", "-b", "feature/login")
    assert resolve_branch("release", "develop", checkout).branch == "release"
    assert resolve_branch(None, "develop", checkout).branch == "develop"
    assert resolve_branch(None, None, checkout).branch == "feature/login"
    git(checkout, "checkout", "-q", "--detach")  # no current branch: the checkout's default (origin/HEAD)
    choice = resolve_branch(None, None, checkout)
    assert choice.branch == "main" and "default branch" in choice.source
    plain = tmp_path / "not-a-checkout"
    plain.mkdir()
    assert resolve_branch("  ", None, plain).branch == "main"


@responses.activate
def test_create_task_sends_the_checkouts_branch_when_none_is_given(isolated_env: Path, checkout: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    git(checkout, "checkout", "-q", "-b", "wip")
    monkeypatch.chdir(checkout)
    responses.post(f"{BASE}/wham/tasks", json={"task": {"id": "task_e_b"}})
    make_client(isolated_env).create_task("p", environment_id="e")
    assert json.loads(responses.calls[0].request.body or b"{}")["new_task"]["branch"] == "wip"


def test_text_only_in_the_worklog_is_the_agents_text() -> None:
    """http.rs `messages()` / `task_text()`: output message items, else assistant worklog messages."""
    body = details("completed")
    body["current_assistant_turn"]["output_items"] = [i for i in body["current_assistant_turn"]["output_items"]
                                                      if i["type"] != "message"]
    parsed = parse_details(body, "task_e_1")
    assert parsed.text == "Ran tests\n\nOK" and parsed.diff


# task_details_with_error.json (openai/codex fixtures): an `error` and no `turn_status`.
ERROR_NO_STATUS = {"task": {"id": "task_e_err", "title": "Fix", "archived": False, "external_pull_requests": []},
                   "current_user_turn": {"id": "task_e_err~usr", "input_items": []},
                   "current_assistant_turn": {"id": "task_e_err~assttrn_e_1", "attempt_placement": 0,
                                              "output_items": [], "worklog": {"messages": []},
                                              "error": {"code": "APPLY_FAILED", "message": "Patch could not be applied"}}}


@responses.activate
def test_an_error_without_turn_status_is_a_failed_task_not_pending(isolated_env: Path) -> None:
    assert map_status(ERROR_NO_STATUS) == TaskStatus.FAILED
    responses.get(f"{BASE}/wham/tasks/task_e_err", json=ERROR_NO_STATUS)
    with pytest.raises(TaskFailed, match="Task failed: APPLY_FAILED: Patch could not be applied") as info:
        make_client(isolated_env, list_polling=False).wait("task_e_err", timeout_s=3600)
    assert info.value.task_id == "task_e_err" and len(responses.calls) == 1  # at the first poll, not the timeout


# The 429 users captured (codex.md section 8; badlogic/pi-mono issue 4172): no Retry-After.
def usage_limit(resets_in: int) -> dict[str, Any]:
    return {"error": {"type": "usage_limit_reached", "message": "The usage limit has been reached", "plan_type": "plus",
                      "resets_at": 1_700_000_000 + resets_in, "eligible_promo": None, "resets_in_seconds": resets_in}}


@responses.activate
def test_a_short_usage_limit_waits_as_long_as_the_reset_header_says(isolated_env: Path) -> None:
    url = f"{BASE}/wham/tasks/task_e_1"
    responses.get(url, status=429, json=usage_limit(11),
                  headers={"X-Codex-Primary-Reset-After-Seconds": "12", "X-Codex-Primary-Used-Percent": "100"})
    responses.get(url, json=details("completed"))
    clock = FakeClock()
    make_client(isolated_env, clock=clock, list_polling=False).wait("task_e_1", timeout_s=1000)
    assert max(clock.sleeps) >= 12.0


@responses.activate
def test_a_usage_limit_for_hours_fails_at_once_saying_when_it_resets(isolated_env: Path) -> None:
    responses.post(f"{BASE}/wham/tasks", status=429, json=usage_limit(13872),
                   headers={"X-Codex-Primary-Reset-After-Seconds": "13873", "X-Codex-Primary-Used-Percent": "100"})
    with pytest.raises(TerminalQuota, match="usage limit has been reached; it resets in 3 h 51 min"):
        make_client(isolated_env).create_task("p", environment_id="e", branch="main")
    assert len(responses.calls) == 1


@responses.activate
def test_refresh_sends_the_codex_user_agent_and_originator(isolated_env: Path) -> None:
    """The official client refreshes with its own identity; generic clients get a Cloudflare challenge."""
    token = responses.post("https://auth.openai.com/oauth/token", json={"access_token": jwt({"exp": 4_000_000_003})})
    responses.get(f"{BASE}/wham/environments", status=401, json={"detail": "Unauthorized"})
    responses.get(f"{BASE}/wham/environments", json=[])
    make_client(isolated_env, refresh=True).environments()
    sent = token.calls[0].request.headers
    assert sent["originator"] == "codex_cli_rs" and re.match(r"codex_cli_rs/\d+\.\d+\.\d+ \(", sent["User-Agent"])


@responses.activate
def test_a_cloudflare_challenge_on_refresh_is_one_clear_line(isolated_env: Path) -> None:
    """openai/codex issues 16052, 18456, 21735: 403, `cf-mitigated: challenge`, "Just a moment..." HTML."""
    html = "<!DOCTYPE html><html lang=\"en-US\"><head><title>Just a moment...</title></head><body>cf</body></html>"
    responses.post("https://auth.openai.com/oauth/token", status=403, body=html, content_type="text/html",
                   headers={"cf-mitigated": "challenge"})
    responses.get(f"{BASE}/wham/environments", status=401, json={"detail": "Unauthorized"})
    with pytest.raises(AuthError) as info:
        make_client(isolated_env, refresh=True).environments()
    text = str(info.value)
    assert "Cloudflare challenge" in text and "codex login" in text
    assert "<" not in text and "\n" not in text and REFRESH not in text


@responses.activate
def test_a_rotated_refresh_token_says_sign_in_again(isolated_env: Path) -> None:
    body = {"error": {"message": "Your refresh token has already been used to generate a new access token. Please "
                                 "try signing in again.", "type": "invalid_request_error", "param": None,
                      "code": "refresh_token_reused"}}
    responses.post("https://auth.openai.com/oauth/token", status=401, json=body)
    responses.get(f"{BASE}/wham/environments", status=401, json={"detail": "Unauthorized"})
    with pytest.raises(AuthError, match="refresh_token_reused.*codex login"):
        make_client(isolated_env, refresh=True).environments()


# ----------------------------------------------------------------------------- creates that are never paid twice

MARKER = "run-7f3a:p4-component-2"


def list_item(task_id: str, created_at: float, status: str = "pending") -> dict[str, Any]:
    """A TaskListItem (codex.md section 3.3)."""
    return {"id": task_id, "title": "Implement it", "archived": False, "has_unread_turn": False,
            "created_at": created_at, "updated_at": created_at,
            "task_status_display": {"latest_turn_status_display": {"turn_status": status}}}


def user_turn_details(task_id: str, text: str) -> dict[str, Any]:
    body = details("pending", task_id=task_id)
    body["current_user_turn"] = {"id": f"{task_id}~usr", "input_items": [
        {"type": "message", "role": "user", "content": [{"content_type": "text", "text": text}]}]}
    return body


@pytest.mark.parametrize("lost", [requests.ReadTimeout("read timed out"),
                                  requests.ConnectionError("Connection aborted: RemoteDisconnected"), 502])
@responses.activate
def test_a_create_whose_answer_is_lost_is_found_in_the_list_not_sent_again(isolated_env: Path, lost: object) -> None:
    if isinstance(lost, int):
        responses.post(f"{BASE}/wham/tasks", status=lost, body="<html>502 Bad Gateway</html>")
    else:
        responses.post(f"{BASE}/wham/tasks", body=lost)  # type: ignore[arg-type]
    clock = FakeClock()
    listing = responses.get(f"{BASE}/wham/tasks/list", json={"items": [
        list_item("task_e_other", clock.wall()), list_item("task_e_mine", clock.wall()),
        list_item("task_e_old", clock.wall() - 86_400)], "cursor": None})
    responses.get(f"{BASE}/wham/tasks/task_e_other", json=user_turn_details("task_e_other", "someone else's"))
    responses.get(f"{BASE}/wham/tasks/task_e_mine", json=user_turn_details("task_e_mine", f"[sparc-cloud {MARKER}]\nBuild"))
    client = make_client(isolated_env, clock=clock)
    assert client.create_task("Build", environment_id="env_1", branch="main", marker=MARKER) == "task_e_mine"
    posts = [c for c in responses.calls if c.request.method == "POST"]
    assert len(posts) == 1
    sent = json.loads(posts[0].request.body or b"{}")["input_items"][0]["content"][0]["text"]
    assert sent == f"[sparc-cloud {MARKER}]\nBuild"  # the marker is the prompt's first line (no title field upstream)
    assert "environment_id=env_1" in str(listing.calls[0].request.url) and listing.call_count == 1
    assert not any("task_e_old" in str(c.request.url) for c in responses.calls)  # created before: not a candidate


@responses.activate
def test_a_lost_create_that_made_nothing_is_sent_again(isolated_env: Path) -> None:
    responses.post(f"{BASE}/wham/tasks", status=502, body="<html>502</html>")
    responses.post(f"{BASE}/wham/tasks", json={"task": {"id": "task_e_new"}})
    responses.get(f"{BASE}/wham/tasks/list", json={"items": [], "cursor": None})
    assert make_client(isolated_env).create_task("Build", environment_id="env_1", branch="main",
                                                 marker=MARKER) == "task_e_new"
    assert [c.request.method for c in responses.calls] == ["POST", "GET", "POST"]


@responses.activate
def test_without_a_marker_the_exact_prompt_finds_the_lost_task(isolated_env: Path) -> None:
    responses.post(f"{BASE}/wham/tasks", status=500, json={"detail": "Internal Server Error"})
    clock = FakeClock()
    responses.get(f"{BASE}/wham/tasks/list", json={"items": [list_item("task_e_x", clock.wall())], "cursor": None})
    responses.get(f"{BASE}/wham/tasks/task_e_x", json=user_turn_details("task_e_x", "Build it"))
    assert make_client(isolated_env, clock=clock).create_task("Build it", environment_id="e", branch="m") == "task_e_x"


@pytest.mark.parametrize(("status", "body"), [(429, usage_limit(3)), (400, {"detail": "bad"})])
@responses.activate
def test_a_refused_create_is_known_to_have_made_nothing(isolated_env: Path, status: int, body: dict[str, Any]) -> None:
    responses.post(f"{BASE}/wham/tasks", status=status, json=body, headers={"X-Codex-Primary-Reset-After-Seconds": "3"})
    responses.post(f"{BASE}/wham/tasks", json={"task": {"id": "task_e_2"}})
    client = make_client(isolated_env)
    if status == 429:
        assert client.create_task("p", environment_id="e", branch="main", marker=MARKER) == "task_e_2"
    else:
        with pytest.raises(ApiError):
            client.create_task("p", environment_id="e", branch="main", marker=MARKER)
    assert all(c.request.method == "POST" for c in responses.calls)  # no lookup: nothing was created


# ------------------------------------------------------------------------------ polling through the list

@responses.activate
def test_one_list_request_per_sweep_filtered_by_environment_then_one_details(isolated_env: Path) -> None:
    clock = FakeClock()
    responses.post(f"{BASE}/wham/tasks", json={"task": {"id": "task_e_1"}})
    started = clock.wall()

    def page(request: requests.PreparedRequest) -> tuple[int, dict[str, str], str]:
        done = clock.wall() - started >= 40
        item = list_item("task_e_1", started, "completed" if done else "in_progress")
        return 200, {}, json.dumps({"items": [item], "cursor": None})

    responses.add_callback(responses.GET, f"{BASE}/wham/tasks/list", callback=page)
    responses.get(f"{BASE}/wham/tasks/task_e_1", json=details("completed"))
    client = make_client(isolated_env, clock=clock)
    task_id = client.create_task("p", environment_id="env_1", branch="main")
    result, polls = client.wait(task_id, timeout_s=1000)
    assert result.status == TaskStatus.COMPLETED and result.diff
    lists = [c for c in responses.calls if "/tasks/list" in str(c.request.url)]
    assert str(lists[0].request.url).endswith("/wham/tasks/list?limit=20&task_filter=current&environment_id=env_1")
    assert sum("/tasks/task_e_1" in str(c.request.url) for c in responses.calls) == 1
    assert polls == len(lists) + 1


@responses.activate
def test_polling_goes_on_through_502_truncated_bodies_and_resets(isolated_env: Path) -> None:
    url = f"{BASE}/wham/tasks/task_e_1"
    for answer in ({"status": 502, "body": "<html>502</html>"}, {"body": '{"task": {"id": "task_e_1", "ti'},
                   {"body": requests.ConnectionError("reset by peer")}, {"status": 502, "body": "x"},
                   {"body": '{"trunc'}, {"status": 504, "body": "x"}):
        responses.get(url, **answer)  # type: ignore[arg-type]
    responses.get(url, json=details("completed"))
    result, _ = make_client(isolated_env, list_polling=False, max_attempts=2).wait("task_e_1", timeout_s=10_000)
    assert result.status == TaskStatus.COMPLETED


@responses.activate
def test_polling_that_fails_until_the_timeout_raises_task_poll_failed_with_the_id(isolated_env: Path) -> None:
    responses.get(f"{BASE}/wham/tasks/task_e_1", status=502, body="<html>502</html>")
    with pytest.raises(TaskPollFailed, match="kept failing until the agent timeout") as info:
        make_client(isolated_env, list_polling=False, max_attempts=2).wait("task_e_1", timeout_s=300)
    assert info.value.task_id == "task_e_1"


@pytest.mark.parametrize("list_polling", [True, False])
@responses.activate
def test_a_task_the_server_does_not_know_is_task_gone(isolated_env: Path, list_polling: bool) -> None:
    responses.get(f"{BASE}/wham/tasks/list", json={"items": [], "cursor": None})
    responses.get(f"{BASE}/wham/tasks/task_e_gone", status=404, json={"detail": "Not found."})
    with pytest.raises(TaskGone) as info:
        make_client(isolated_env, list_polling=list_polling).wait("task_e_gone", timeout_s=1000)
    assert info.value.task_id == "task_e_gone" and info.value.status == 404


@pytest.mark.parametrize(("status", "outcome"), [("completed", "ok"), ("failed", "failed"), ("cancelled", "failed"),
                                                 ("in_progress", "ok")])
@responses.activate
def test_waiting_again_on_a_task_from_an_earlier_run(isolated_env: Path, status: str, outcome: str) -> None:
    """Re-attach: a task id from a journal, whatever state it is in now."""
    clock = FakeClock()
    seen = {"n": 0}

    def page(request: requests.PreparedRequest) -> tuple[int, dict[str, str], str]:
        seen["n"] += 1
        now_status = "completed" if status == "in_progress" and seen["n"] > 3 else status
        return 200, {}, json.dumps({"items": [list_item("task_e_old", clock.wall() - 900, now_status)], "cursor": None})

    def one(request: requests.PreparedRequest) -> tuple[int, dict[str, str], str]:
        now_status = "completed" if status == "in_progress" and seen["n"] > 3 else status
        return 200, {}, json.dumps(details(now_status, task_id="task_e_old", error={"code": "E", "message": "boom"}))

    responses.add_callback(responses.GET, f"{BASE}/wham/tasks/list", callback=page)
    responses.add_callback(responses.GET, f"{BASE}/wham/tasks/task_e_old", callback=one)
    client = make_client(isolated_env, clock=clock)
    if outcome == "ok":
        result, _ = client.wait("task_e_old", timeout_s=1000, environment_id="env_1")
        assert result.status == TaskStatus.COMPLETED
    else:
        with pytest.raises(TaskFailed, match=f"ended {status}: Task failed: E: boom"):
            client.wait("task_e_old", timeout_s=1000, environment_id="env_1")
    assert "environment_id=env_1" in str(next(c for c in responses.calls if "list" in str(c.request.url)).request.url)
