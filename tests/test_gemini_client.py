"""GeminiClient against `responses` mocks: wire format field by field, as gemini-cli speaks it (code_assist/, utils/)."""

from __future__ import annotations

import json
import logging
import os
import stat
from pathlib import Path

import pytest
import requests
import responses

from sparc_cloud.backends.gemini import KIND as GEMINI
from sparc_cloud.clients.gemini import GeminiClient, GeminiConfig
from sparc_cloud.clients.gemini_auth import GeminiOAuth
from sparc_cloud.errors import AuthError, ConfigError, ModelNotFound, RetriesExhausted, TerminalQuota
from sparc_cloud.http.clock import FakeClock
from sparc_cloud.http.ratelimit import RateLimiters
from sparc_cloud.http.retry import RetryPolicy
from sparc_cloud.redact import SecretRegistry
from sparc_cloud.sim import gemini_envelopes as env

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
                        limiters=RateLimiters(clock, GEMINI.limits("gemini", None)), policy=RetryPolicy(max_attempts=4),
                        clock=clock, secrets=secrets, oauth=oauth)


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


# ---------------------------------------------------------------------------------------------------------
# Newest gemini-cli behaviour (gemini.md section 6). Payload shapes are gemini-cli's: code_assist/setup.ts,
# code_assist/server.ts, code_assist/converter.ts, utils/googleQuotaErrors.ts, and users' reports in its issues.

def _body(call: int) -> dict[str, object]:
    data: dict[str, object] = json.loads(responses.calls[call].request.body or b"{}")
    return data


@responses.activate
def test_load_code_assist_is_called_even_with_google_cloud_project_and_its_project_wins(isolated_env: Path) -> None:
    """setup.ts 129-183, 206-239: the env project is offered as cloudaicompanionProject and duetProject; the
    answer's project is billed (a free-tier user's gcloud project would get 403 SERVICE_DISABLED)."""
    load = responses.post(f"{BASE}:loadCodeAssist", json={"currentTier": {"id": "free-tier"},
                                                          "cloudaicompanionProject": "managed-free-123"})
    responses.post(f"{BASE}:generateContent", json=OK_BODY)
    client = make_client(isolated_env, project="my-gcloud-project", load=False)
    client.generate("x", model="gemini-2.5-pro")
    assert load.call_count == 1
    assert _body(0) == {"cloudaicompanionProject": "my-gcloud-project",
                        "metadata": {"ideType": "IDE_UNSPECIFIED", "platform": "PLATFORM_UNSPECIFIED",
                                     "pluginType": "GEMINI", "duetProject": "my-gcloud-project"}}
    assert _body(1)["project"] == "managed-free-123"


@responses.activate
def test_the_env_project_is_used_only_when_load_code_assist_names_none(isolated_env: Path) -> None:
    responses.post(f"{BASE}:loadCodeAssist", json={"currentTier": {"id": "standard-tier"}})
    responses.post(f"{BASE}:generateContent", json=OK_BODY)
    make_client(isolated_env, project="my-gcloud-project", load=False).generate("x", model="gemini-2.5-pro")
    assert _body(1)["project"] == "my-gcloud-project"


@responses.activate
def test_an_account_without_a_tier_is_onboarded_and_the_operation_polled_until_done(isolated_env: Path) -> None:
    """setup.ts 242-279: no currentTier -> onboardUser with the default tier (the free tier without a project,
    'Precondition Failed' otherwise), then GET {base}/{operation name} every 5 s until `done`."""
    responses.post(f"{BASE}:loadCodeAssist", json={"allowedTiers": [
        {"id": "free-tier", "isDefault": True}, {"id": "standard-tier", "userDefinedCloudaicompanionProject": True}]})
    responses.post(f"{BASE}:onboardUser", json={"name": "operations/onb-1", "done": False})
    responses.get(f"{BASE}/operations/onb-1", json={"name": "operations/onb-1", "done": False})
    responses.get(f"{BASE}/operations/onb-1", json={"name": "operations/onb-1", "done": True, "response": {
        "cloudaicompanionProject": {"id": "onboarded-42", "name": "onboarded-42"}}})
    responses.post(f"{BASE}:generateContent", json=OK_BODY)
    clock = FakeClock()
    make_client(isolated_env, project="my-gcloud-project", load=False, clock=clock).generate("x", model="gemini-2.5-pro")
    assert _body(1) == {"tierId": "free-tier", "metadata": {"ideType": "IDE_UNSPECIFIED",
                                                            "platform": "PLATFORM_UNSPECIFIED", "pluginType": "GEMINI"}}
    assert [c.request.method for c in responses.calls[2:4]] == ["GET", "GET"]
    assert clock.sleeps == [5.0, 5.0]
    assert _body(4)["project"] == "onboarded-42"


@responses.activate
def test_a_paid_default_tier_is_onboarded_with_the_env_project(isolated_env: Path) -> None:
    responses.post(f"{BASE}:loadCodeAssist", json={"allowedTiers": [{"id": "standard-tier", "isDefault": True}]})
    responses.post(f"{BASE}:onboardUser", json={"name": "operations/o", "done": True, "response": {}})
    assert make_client(isolated_env, project="corp-proj", load=False).project_id() == "corp-proj"
    assert _body(1)["cloudaicompanionProject"] == "corp-proj"
    assert _body(1)["metadata"]["duetProject"] == "corp-proj"  # type: ignore[index]


# The 503 users saw (gemini-cli issue 23520), verbatim shape.
CAPACITY_503 = {"error": {"code": 503, "details": [{"@type": "type.googleapis.com/google.rpc.ErrorInfo",
                                                    "domain": "cloudcode-pa.googleapis.com",
                                                    "reason": "MODEL_CAPACITY_EXHAUSTED"}],
                          "message": "No capacity available for model on the server", "status": "UNAVAILABLE"}}


@responses.activate
def test_capacity_exhausted_is_retried_under_the_shared_policy(isolated_env: Path) -> None:
    """gemini-cli utils/retry.ts 346-395 retries capacity errors; a passing overload must not fail the agent."""
    responses.post(f"{BASE}:generateContent", status=503, json=CAPACITY_503)
    responses.post(f"{BASE}:generateContent", status=503, json=CAPACITY_503)
    responses.post(f"{BASE}:generateContent", json=OK_BODY)
    clock = FakeClock()
    result = make_client(isolated_env, clock=clock).generate("x", model="gemini-2.5-pro")
    assert result.attempts == 3 and result.text == "Hello world"


@responses.activate
def test_capacity_with_a_server_delay_waits_that_long(isolated_env: Path) -> None:
    """googleQuotaErrors.test.ts 84-180: capacity may carry RetryInfo "9s"."""
    with_delay = json.loads(json.dumps(CAPACITY_503))
    with_delay["error"]["details"].append({"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "9s"})
    responses.post(f"{BASE}:generateContent", status=503, json=with_delay)
    responses.post(f"{BASE}:generateContent", json=OK_BODY)
    clock = FakeClock()
    make_client(isolated_env, clock=clock).generate("x", model="gemini-2.5-pro")
    assert clock.sleeps[-1] >= 9.0


@responses.activate
def test_lasting_capacity_falls_back_when_enabled(isolated_env: Path) -> None:
    for _ in range(4):
        responses.post(f"{BASE}:generateContent", status=503, json=CAPACITY_503)
    responses.post(f"{BASE}:generateContent", json=OK_BODY)
    client = make_client(isolated_env, fallback={"gemini-2.5-pro": "gemini-2.5-flash"})
    result = client.generate("x", model="gemini-2.5-pro")
    assert result.fallback_from == "gemini-2.5-pro"
    assert _body(5)["model"] == "gemini-2.5-flash"  # [0] loadCodeAssist, [1-4] pro (4 attempts), [5] flash


@responses.activate
def test_lasting_capacity_without_fallback_fails_saying_it_is_not_quota(isolated_env: Path) -> None:
    for _ in range(4):
        responses.post(f"{BASE}:generateContent", status=503, json=CAPACITY_503)
    with pytest.raises(RetriesExhausted) as info:
        make_client(isolated_env).generate("x", model="gemini-2.5-pro")
    text = str(info.value)
    assert "gemini-2.5-pro has no capacity on the server" in text and "not your quota" in text
    assert "SPARC_GEMINI_FALLBACK=true" in text and info.value.attempts == 4


@responses.activate
def test_when_the_fallback_fails_too_the_error_names_both_models(isolated_env: Path) -> None:
    for _ in range(4):
        responses.post(f"{BASE}:generateContent", status=503, json=CAPACITY_503)
    responses.post(f"{BASE}:generateContent", status=429, json=env.daily_quota("gemini-2.5-flash", code_assist=True))
    client = make_client(isolated_env, fallback={"gemini-2.5-pro": "gemini-2.5-flash"})
    with pytest.raises(TerminalQuota) as info:
        client.generate("x", model="gemini-2.5-pro")
    assert "gemini-2.5-pro: " in str(info.value) and "then gemini-2.5-flash: " in str(info.value)


@responses.activate
def test_code_assist_endpoint_and_api_version_as_gemini_cli_reads_them(isolated_env: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """server.ts 73-74, 524-534 (test server.test.ts 357-378): URL = `${endpoint}/${version}:${method}`."""
    from sparc_cloud.settings import Settings

    monkeypatch.setenv("CODE_ASSIST_ENDPOINT", "https://ca-proxy.example.com")
    monkeypatch.setenv("CODE_ASSIST_API_VERSION", "v1beta7")
    settings = Settings()
    assert settings.code_assist_base() == "https://ca-proxy.example.com/v1beta7"
    responses.post("https://ca-proxy.example.com/v1beta7:loadCodeAssist", json=LOADED)
    responses.post("https://ca-proxy.example.com/v1beta7:generateContent", json=OK_BODY)
    clock = FakeClock()
    oauth = GeminiOAuth(write_creds(isolated_env, clock=clock), clock=clock, secrets=SecretRegistry(),
                        session=requests.Session(), refresh_command=None)
    client = GeminiClient(GeminiConfig(base_url=settings.code_assist_base()), session=requests.Session(),
                          limiters=RateLimiters(clock), policy=RetryPolicy(), clock=clock, secrets=SecretRegistry(),
                          oauth=oauth)
    assert client.generate("x", model="gemini-2.5-pro").text == "Hello world"


@pytest.mark.parametrize(("value", "base"), [
    ("https://cloudcode-pa.googleapis.com", "https://cloudcode-pa.googleapis.com/v1internal"),
    ("https://cloudcode-pa.googleapis.com/", "https://cloudcode-pa.googleapis.com/v1internal"),
    ("http://127.0.0.1:8765/v1internal", "http://127.0.0.1:8765/v1internal"),
])
def test_a_base_url_with_no_path_gets_the_api_version(value: str, base: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A host-only SPARC_GEMINI_BASE_URL once built `https://host:generateContent`."""
    from sparc_cloud.settings import Settings

    monkeypatch.setenv("SPARC_GEMINI_BASE_URL", value)
    assert Settings().code_assist_base() == base


@responses.activate
def test_a_blocked_prompt_is_reported_with_its_reason_and_not_sent_again(isolated_env: Path) -> None:
    """converter.ts 150-155: no candidates is an empty answer; promptFeedback.blockReason says why."""
    from sparc_cloud.errors import PromptBlocked

    responses.post(f"{BASE}:generateContent", json={"response": {"promptFeedback": {"blockReason": "PROHIBITED_CONTENT"},
                                                                 "usageMetadata": {"promptTokenCount": 9}},
                                                    "traceId": "t"})
    with pytest.raises(PromptBlocked, match="blocked \\(PROHIBITED_CONTENT\\)") as info:
        make_client(isolated_env).generate("x", model="gemini-2.5-pro")
    assert info.value.reason == "PROHIBITED_CONTENT"
    assert len(responses.calls) == 2  # loadCodeAssist, then generateContent once


@responses.activate
def test_an_answer_without_candidates_or_reason_is_an_empty_answer_not_resent(isolated_env: Path) -> None:
    from sparc_cloud.errors import PromptBlocked

    responses.post(f"{BASE}:generateContent", json={"traceId": "t"})  # a missing `response`: zero candidates
    with pytest.raises(PromptBlocked, match="empty answer"):
        make_client(isolated_env).generate("x", model="gemini-2.5-pro")
    assert len(responses.calls) == 2


@responses.activate
def test_validation_required_takes_its_url_from_error_info_metadata(isolated_env: Path) -> None:
    """googleQuotaErrors.ts 192-195: no Help.links -> ErrorInfo.metadata.validation_link."""
    from sparc_cloud.errors import ValidationRequired

    body = env.google_error(403, "PERMISSION_DENIED", "Verify your account to continue.", [
        {"@type": env.RPC_TYPE + "ErrorInfo", "reason": "VALIDATION_REQUIRED", "domain": "cloudcode-pa.googleapis.com",
         "metadata": {"validation_link": "https://accounts.google.com/signin/continue?sarp=1&scc=1"}}])
    responses.post(f"{BASE}:generateContent", status=403, json=body)
    with pytest.raises(ValidationRequired) as info:
        make_client(isolated_env).generate("x", model="gemini-2.5-pro")
    assert info.value.url == "https://accounts.google.com/signin/continue?sarp=1&scc=1"
    assert info.value.url in str(info.value)


@responses.activate
def test_quota_reset_delay_in_plain_seconds_is_read_and_terminal(isolated_env: Path) -> None:
    """gemini-cli issue 29425: QUOTA_EXHAUSTED with quotaResetDelay "33740.910400305s"."""
    body = env.google_error(429, "RESOURCE_EXHAUSTED", "Individual quota reached. Please upgrade your subscription to "
                            "increase your limits. Resets in 9h22m20s.", [
                                {"@type": env.RPC_TYPE + "ErrorInfo", "reason": "QUOTA_EXHAUSTED",
                                 "domain": "cloudcode-pa.googleapis.com",
                                 "metadata": {"uiMessage": "true", "model": "gemini-2.5-pro",
                                              "quotaResetDelay": "33740.910400305s",
                                              "quotaResetTimeStamp": "2026-05-05T04:21:08Z"}}])
    from sparc_cloud.http.classify import parse_duration

    assert parse_duration("33740.910400305s") == pytest.approx(33740.910400305)
    responses.post(f"{BASE}:generateContent", status=429, json=body)
    with pytest.raises(TerminalQuota, match="Individual quota reached"):
        make_client(isolated_env).generate("x", model="gemini-2.5-pro")
    assert len(responses.calls) == 2
