"""GeminiClient against `responses` mocks: wire format field by field (shared/api/gemini.md)."""

from __future__ import annotations

import json
import logging
import os
import stat
from pathlib import Path

import pytest
import requests
import responses

from sparc_cloud.clients.auth import GeminiOAuth
from sparc_cloud.clients.gemini import GeminiClient, GeminiConfig
from sparc_cloud.errors import AuthError, ConfigError, ModelNotFound, RetriesExhausted, TerminalQuota
from sparc_cloud.http.clock import FakeClock
from sparc_cloud.http.ratelimit import RateLimiters
from sparc_cloud.http.retry import RetryPolicy
from sparc_cloud.redact import SecretRegistry
from sparc_cloud.sim import envelopes as env

BASE = "https://cloudcode-pa.googleapis.com/v1internal"
API_BASE = "https://generativelanguage.googleapis.com"
TOKEN_URL = "https://oauth2.googleapis.com/token"
ACCESS = "ya29.MARKER-ACCESS-0001"
REFRESH = "1//MARKER-REFRESH-0001-abcdefghijklmnop"
CLIENT_SECRET = "MARKER-CLIENT-SECRET"
SECRETS = (ACCESS, REFRESH, CLIENT_SECRET, "MARKER-NEW-ACCESS")

OK_BODY = {
    "response": {
        "candidates": [{"content": {"role": "model", "parts": [
            {"text": "thinking...", "thought": True}, {"text": "Hello "}, {"text": "world"}]},
            "finishReason": "STOP", "index": 0}],
        "usageMetadata": {"promptTokenCount": 7, "candidatesTokenCount": 5, "thoughtsTokenCount": 2,
                          "totalTokenCount": 14},
        "modelVersion": "gemini-2.5-pro",
    },
    "traceId": "trace-123",
}


def write_creds(home: Path, *, expiry_in_s: float = 3600, clock: FakeClock | None = None) -> Path:
    wall = clock.wall() if clock else 1_700_000_000.0
    path = home / ".gemini" / "oauth_creds.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"access_token": ACCESS, "refresh_token": REFRESH, "token_type": "Bearer",
                                "scope": "email profile", "expiry_date": int((wall + expiry_in_s) * 1000)}))
    path.chmod(0o600)
    return path


LOADED = {"currentTier": {"id": "standard-tier"}, "cloudaicompanionProject": "proj-1"}


def make_client(home: Path, *, clock: FakeClock | None = None, project: str | None = "proj-1",
                client_secret: str | None = CLIENT_SECRET, fallback: dict[str, str] | None = None,
                expiry_in_s: float = 3600, secrets: SecretRegistry | None = None, load: bool = True) -> GeminiClient:
    """A Code Assist client; with `load`, loadCodeAssist (always called first, gemini.md section 6) answers
    with a current tier and the project `proj-1` (call it inside a `responses.activate` test)."""
    if load and project is not None:
        responses.post(f"{BASE}:loadCodeAssist", json=LOADED)
    clock = clock or FakeClock()
    secrets = secrets or SecretRegistry()
    session = requests.Session()
    oauth = GeminiOAuth(write_creds(home, expiry_in_s=expiry_in_s, clock=clock), clock=clock, secrets=secrets,
                        session=session, client_id="client-id", client_secret=client_secret, token_url=TOKEN_URL,
                        refresh_command=None)
    return GeminiClient(GeminiConfig(project=project, fallback=fallback), session=session,
                        limiters=RateLimiters(clock), policy=RetryPolicy(max_attempts=4), clock=clock,
                        secrets=secrets, oauth=oauth)


@responses.activate
def test_code_assist_request_body_and_headers_match_the_spec(isolated_env: Path) -> None:
    responses.post(f"{BASE}:generateContent", json=OK_BODY)
    client = make_client(isolated_env)
    result = client.generate("Hello", model="gemini-2.5-pro", system="Be brief.",
                             generation_config={"maxOutputTokens": 100})
    call = responses.calls[1].request  # [0] is loadCodeAssist
    body = json.loads(call.body or b"{}")
    assert set(body) == {"model", "project", "user_prompt_id", "request"}
    assert body["model"] == "gemini-2.5-pro" and body["project"] == "proj-1"
    assert isinstance(body["user_prompt_id"], str) and body["user_prompt_id"]
    req = body["request"]
    assert set(req) == {"contents", "systemInstruction", "generationConfig", "session_id"}
    assert req["contents"] == [{"role": "user", "parts": [{"text": "Hello"}]}]
    assert req["systemInstruction"] == {"role": "user", "parts": [{"text": "Be brief."}]}
    assert req["generationConfig"] == {"temperature": 0.4, "maxOutputTokens": 100}
    assert req["session_id"] == client.session_id
    assert call.headers["Authorization"] == f"Bearer {ACCESS}"
    assert call.headers["Content-Type"] == "application/json"
    assert call.headers["User-Agent"].startswith("SparcCloud/") and "/gemini-2.5-pro (" in call.headers["User-Agent"]
    assert "x-goog-api-key" not in call.headers
    assert result.text == "Hello world"
    assert (result.usage.prompt_tokens, result.usage.output_tokens, result.usage.total_tokens) == (7, 7, 14)
    assert result.request_id == "trace-123" and result.attempts == 1 and result.model == "gemini-2.5-pro"


@responses.activate
def test_code_assist_maps_gemini_3_5_flash_model_name(isolated_env: Path) -> None:
    responses.post(f"{BASE}:generateContent", json=OK_BODY)
    make_client(isolated_env).generate("x", model="gemini-3.5-flash")
    assert json.loads(responses.calls[-1].request.body or b"{}")["model"] == "gemini-3-flash"


@responses.activate
def test_api_key_mode_uses_public_endpoint_without_wrapper(isolated_env: Path) -> None:
    inner = dict(OK_BODY["response"], responseId="resp-9")  # type: ignore[arg-type]
    responses.post(f"{API_BASE}/v1beta/models/gemini-2.5-flash:generateContent", json=inner)
    clock = FakeClock()
    client = GeminiClient(GeminiConfig(mode="api-key"), session=requests.Session(), limiters=RateLimiters(clock),
                          policy=RetryPolicy(), clock=clock, secrets=SecretRegistry(), api_key="AIzaMARKERKEY-000000000000")
    result = client.generate("Hi", model="gemini-2.5-flash")
    call = responses.calls[0].request
    assert call.headers["x-goog-api-key"] == "AIzaMARKERKEY-000000000000"
    assert "Authorization" not in call.headers
    body = json.loads(call.body or b"{}")
    assert set(body) == {"contents", "generationConfig"}
    assert result.text == "Hello world" and result.request_id == "resp-9"


@responses.activate
def test_project_is_discovered_once_with_load_code_assist(isolated_env: Path) -> None:
    load = responses.post(f"{BASE}:loadCodeAssist", json={"currentTier": {"id": "standard-tier"},
                                                          "cloudaicompanionProject": "found-proj"})
    responses.post(f"{BASE}:generateContent", json=OK_BODY)
    client = make_client(isolated_env, project=None)
    client.generate("a", model="gemini-2.5-pro")
    client.generate("b", model="gemini-2.5-pro")
    assert load.call_count == 1
    sent = json.loads(responses.calls[0].request.body or b"{}")
    assert sent == {"metadata": {"ideType": "IDE_UNSPECIFIED", "platform": "PLATFORM_UNSPECIFIED",
                                 "pluginType": "GEMINI"}}
    assert json.loads(responses.calls[1].request.body or b"{}")["project"] == "found-proj"


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        ({"ineligibleTiers": [{"reasonCode": "VALIDATION_REQUIRED", "validationUrl": "https://verify.example/a",
                               "reasonMessage": "verify"}]}, "https://verify.example/a"),
        ({"currentTier": {"id": "free-tier"}, "ineligibleTiers": [{"reasonMessage": "Not available in your region"}]},
         "Not available in your region"),
        ({"currentTier": {"id": "standard-tier"}}, "GOOGLE_CLOUD_PROJECT"),
    ],
)
@responses.activate
def test_project_discovery_errors_are_clear(isolated_env: Path, answer: dict[str, object], message: str) -> None:
    responses.post(f"{BASE}:loadCodeAssist", json=answer)
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        make_client(isolated_env, project=None).project_id()


def test_project_number_is_rejected(isolated_env: Path) -> None:
    with pytest.raises(ConfigError, match="project number"):
        make_client(isolated_env, project="123456", load=False).project_id()


@responses.activate
def test_rate_limit_is_retried_after_the_server_delay(isolated_env: Path) -> None:
    responses.post(f"{BASE}:generateContent", status=429, json=env.code_assist_rate_limit("gemini-2.5-pro", 7.5))
    responses.post(f"{BASE}:generateContent", json=OK_BODY)
    clock = FakeClock()
    client = make_client(isolated_env, clock=clock)
    result = client.generate("x", model="gemini-2.5-pro")
    assert result.attempts == 2
    assert clock.sleeps and clock.sleeps[-1] >= 7.5


@responses.activate
def test_terminal_quota_fails_at_once_with_the_server_words(isolated_env: Path) -> None:
    responses.post(f"{BASE}:generateContent", status=429, json=env.daily_quota("gemini-2.5-pro", code_assist=True))
    with pytest.raises(TerminalQuota, match="Individual quota reached"):
        make_client(isolated_env).generate("x", model="gemini-2.5-pro")
    assert len(responses.calls) == 2  # loadCodeAssist, then one generateContent


@responses.activate
def test_fallback_to_flash_on_terminal_quota_is_recorded(isolated_env: Path) -> None:
    responses.post(f"{BASE}:generateContent", status=429, json=env.daily_quota("gemini-2.5-pro", code_assist=True))
    flash = dict(OK_BODY, response=dict(OK_BODY["response"], modelVersion="gemini-2.5-flash"))  # type: ignore[arg-type]
    responses.post(f"{BASE}:generateContent", json=flash)
    client = make_client(isolated_env, fallback={"gemini-2.5-pro": "gemini-2.5-flash"})
    result = client.generate("x", model="gemini-2.5-pro")
    assert result.fallback_from == "gemini-2.5-pro" and result.model == "gemini-2.5-flash"
    assert json.loads(responses.calls[2].request.body or b"{}")["model"] == "gemini-2.5-flash"


@responses.activate
def test_fallback_is_off_unless_enabled(isolated_env: Path) -> None:
    responses.post(f"{BASE}:generateContent", status=429, json=env.daily_quota("gemini-2.5-pro", code_assist=True))
    with pytest.raises(TerminalQuota):
        make_client(isolated_env).generate("x", model="gemini-2.5-pro")


@responses.activate
def test_client_errors_are_not_retried_and_their_message_surfaces(isolated_env: Path) -> None:
    responses.post(f"{BASE}:generateContent", status=404, json=env.model_not_found("gemini-9"))
    with pytest.raises(ModelNotFound, match="models/gemini-9 is not found"):
        make_client(isolated_env).generate("x", model="gemini-9")
    assert len(responses.calls) == 2  # loadCodeAssist, then one generateContent


@responses.activate
def test_truncated_body_is_retried_once_then_fails_clearly(isolated_env: Path) -> None:
    responses.post(f"{BASE}:generateContent", body='{"response": {"candidates": [{"con')
    with pytest.raises(RetriesExhausted, match="not valid JSON"):
        make_client(isolated_env).generate("x", model="gemini-2.5-pro")
    assert len(responses.calls) == 3  # loadCodeAssist, then two generateContent


@responses.activate
def test_200_carrying_an_error_envelope_is_an_error(isolated_env: Path) -> None:
    responses.post(f"{BASE}:generateContent", json=env.google_simple(500))
    responses.post(f"{BASE}:generateContent", json=OK_BODY)
    assert make_client(isolated_env).generate("x", model="gemini-2.5-pro").attempts == 2


@responses.activate
def test_connection_reset_is_retried(isolated_env: Path) -> None:
    responses.post(f"{BASE}:generateContent", body=requests.ConnectionError("reset by peer"))
    responses.post(f"{BASE}:generateContent", json=OK_BODY)
    assert make_client(isolated_env).generate("x", model="gemini-2.5-pro").text == "Hello world"


@responses.activate
def test_expiring_token_is_refreshed_before_use_and_file_rewritten(isolated_env: Path) -> None:
    token = responses.post(TOKEN_URL, json={"access_token": "MARKER-NEW-ACCESS", "expires_in": 3599,
                                            "token_type": "Bearer"})
    responses.post(f"{BASE}:generateContent", json=OK_BODY)
    client = make_client(isolated_env, expiry_in_s=120)  # inside the 5-minute window
    client.generate("x", model="gemini-2.5-pro")
    form = dict(p.split("=", 1) for p in str(token.calls[0].request.body).split("&"))
    assert form["grant_type"] == "refresh_token" and form["client_id"] == "client-id"
    assert responses.calls[-1].request.headers["Authorization"] == "Bearer MARKER-NEW-ACCESS"
    path = isolated_env / ".gemini" / "oauth_creds.json"
    saved = json.loads(path.read_text())
    assert saved["access_token"] == "MARKER-NEW-ACCESS"
    assert saved["refresh_token"] == REFRESH  # the old refresh token is kept
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


@responses.activate
def test_401_triggers_one_refresh_and_one_retry(isolated_env: Path) -> None:
    responses.post(TOKEN_URL, json={"access_token": "MARKER-NEW-ACCESS", "expires_in": 3599})
    responses.post(f"{BASE}:generateContent", status=401, json=env.google_simple(401))
    responses.post(f"{BASE}:generateContent", json=OK_BODY)
    result = make_client(isolated_env).generate("x", model="gemini-2.5-pro")
    assert result.text == "Hello world"
    assert responses.calls[-1].request.headers["Authorization"] == "Bearer MARKER-NEW-ACCESS"


@responses.activate
def test_refresh_impossible_gives_the_login_command(isolated_env: Path, caplog: pytest.LogCaptureFixture) -> None:
    responses.post(f"{BASE}:generateContent", status=401, json=env.google_simple(401))
    caplog.set_level(logging.DEBUG)
    with pytest.raises(AuthError, match="run `gemini` once") as info:
        make_client(isolated_env, client_secret=None).generate("x", model="gemini-2.5-pro")
    text = str(info.value) + caplog.text
    assert all(secret not in text for secret in SECRETS)


@responses.activate
def test_revoked_refresh_token_is_a_clear_auth_error(isolated_env: Path) -> None:
    responses.post(TOKEN_URL, status=400, json={"error": "invalid_grant", "error_description": "Token has been expired or revoked."})
    with pytest.raises(AuthError, match="invalid_grant") as info:
        make_client(isolated_env, expiry_in_s=-10).generate("x", model="gemini-2.5-pro")
    assert all(secret not in str(info.value) for secret in SECRETS)


def test_missing_credentials_name_the_login_command(isolated_env: Path) -> None:
    with pytest.raises(AuthError, match="run `gemini`"):
        GeminiOAuth(isolated_env / ".gemini" / "oauth_creds.json", clock=FakeClock(), secrets=SecretRegistry(),
                    session=requests.Session())


def test_group_readable_credentials_draw_a_warning(isolated_env: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = write_creds(isolated_env)
    path.chmod(0o644)
    caplog.set_level(logging.WARNING)
    GeminiOAuth(path, clock=FakeClock(), secrets=SecretRegistry(), session=requests.Session())
    assert "chmod 600" in caplog.text


@responses.activate
def test_secrets_never_appear_in_errors_or_repr(isolated_env: Path) -> None:
    echo = env.google_error(400, "INVALID_ARGUMENT", f"bad token {ACCESS} and Bearer {ACCESS}")
    responses.post(f"{BASE}:generateContent", status=400, json=echo)
    secrets = SecretRegistry()
    client = make_client(isolated_env, secrets=secrets)
    with pytest.raises(Exception) as info:
        client.generate("x", model="gemini-2.5-pro")
    assert ACCESS not in str(info.value) and ACCESS not in repr(client) and "***" in str(info.value)
