"""CodexClient against `responses` mocks: wire format field by field (shared/api/codex.md)."""

from __future__ import annotations

import base64
import json
import re
import threading
from pathlib import Path
from typing import Any

import pytest
import requests
import responses

from sparc_cloud.clients.auth import CodexAuth
from sparc_cloud.clients.codex import CodexClient, TaskStatus, map_status, parse_details
from sparc_cloud.clients.polling import PollPolicy
from sparc_cloud.errors import AuthError, ConfigError, TaskFailed, TaskTimeout
from sparc_cloud.http.clock import FakeClock
from sparc_cloud.http.ratelimit import RateLimit, RateLimiters
from sparc_cloud.http.retry import RetryPolicy
from sparc_cloud.redact import SecretRegistry
from sparc_cloud.sim import envelopes as env

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
