"""Gemini's error bodies exactly as the real services send them: google.rpc envelopes as gemini-cli's tests
(utils/googleQuotaErrors.test.ts) and its users' reports show them."""

from __future__ import annotations

import time
from typing import Any

from sparc_cloud.sim.envelopes import go_duration, proto_duration

RPC_TYPE = "type.googleapis.com/google.rpc."  # the @type prefix of google.rpc error details
_T = RPC_TYPE


def google_error(code: int, status: str, message: str, details: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """A google.rpc.Status envelope."""
    err: dict[str, Any] = {"code": code, "message": message, "status": status}
    if details:
        err["details"] = details
    return {"error": err}


def code_assist_rate_limit(model: str, delay_s: float) -> dict[str, Any]:
    """The Code Assist 429 seen in gemini-cli's tests: ErrorInfo RATE_LIMIT_EXCEEDED + RetryInfo."""
    reset_at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + delay_s))
    return google_error(429, "RESOURCE_EXHAUSTED",
                        f"You have exhausted your capacity on this model. Your quota will reset after "
                        f"{max(1, round(delay_s))}s.",
                        [{"@type": _T + "ErrorInfo", "reason": "RATE_LIMIT_EXCEEDED",
                          "domain": "cloudcode-pa.googleapis.com",
                          "metadata": {"uiMessage": "true", "model": model, "quotaResetDelay": go_duration(delay_s),
                                       "quotaResetTimeStamp": reset_at}},
                         {"@type": _T + "RetryInfo", "retryDelay": proto_duration(delay_s)}])


def public_rate_limit(model: str, delay_s: float) -> dict[str, Any]:
    """The public API per-minute 429: QuotaFailure + Help + RetryInfo, precise delay in the message."""
    return google_error(429, "RESOURCE_EXHAUSTED",
                        "You exceeded your current quota, please check your plan and billing details. "
                        "* Quota exceeded for metric: generativelanguage.googleapis.com/"
                        f"generate_content_free_tier_requests, limit: 10, model: {model}\n"
                        f"Please retry in {delay_s:.9f}s.",
                        [{"@type": _T + "QuotaFailure", "violations": [
                            {"quotaMetric": "generativelanguage.googleapis.com/generate_content_free_tier_requests",
                             "quotaId": "GenerateRequestsPerMinutePerProjectPerModel-FreeTier",
                             "quotaDimensions": {"location": "global", "model": model}, "quotaValue": "10"}]},
                         {"@type": _T + "Help", "links": [
                             {"description": "Learn more about Gemini API quotas",
                              "url": "https://ai.google.dev/gemini-api/docs/rate-limits"}]},
                         {"@type": _T + "RetryInfo", "retryDelay": f"{int(delay_s)}s"}])


def daily_quota(model: str, code_assist: bool) -> dict[str, Any]:
    """Terminal quota: QUOTA_EXHAUSTED (Code Assist) or a PerDay QuotaFailure (public API)."""
    if code_assist:
        return google_error(429, "RESOURCE_EXHAUSTED",
                            "Individual quota reached. Please upgrade your subscription to increase your limits. "
                            "Resets in 9h22m20s.",
                            [{"@type": _T + "ErrorInfo", "reason": "QUOTA_EXHAUSTED",
                              "domain": "cloudcode-pa.googleapis.com",
                              "metadata": {"uiMessage": "true", "model": model, "quotaResetDelay": "9h22m20s"}}])
    return google_error(429, "RESOURCE_EXHAUSTED",
                        "You exceeded your current quota, please check your plan and billing details. "
                        "* Quota exceeded for metric: generativelanguage.googleapis.com/"
                        f"generate_content_free_tier_requests, limit: 250, model: {model}",
                        [{"@type": _T + "QuotaFailure", "violations": [
                            {"quotaMetric": "generativelanguage.googleapis.com/generate_content_free_tier_requests",
                             "quotaId": "GenerateRequestsPerDayPerProjectPerModel-FreeTier"}]}])


def capacity(model: str) -> dict[str, Any]:
    """503 no capacity (MODEL_CAPACITY_EXHAUSTED)."""
    return google_error(503, "UNAVAILABLE", f"No capacity available for model {model} on the server",
                        [{"@type": _T + "ErrorInfo", "reason": "MODEL_CAPACITY_EXHAUSTED",
                          "domain": "cloudcode-pa.googleapis.com", "metadata": {"model": model}}])


GOOGLE_SIMPLE = {
    400: ("INVALID_ARGUMENT", "Request contains an invalid argument."),
    401: ("UNAUTHENTICATED", "Request had invalid authentication credentials. Expected OAuth 2 access token, "
                             "login cookie or other valid authentication credential."),
    403: ("PERMISSION_DENIED", "The caller does not have permission"),
    500: ("INTERNAL", "Internal error encountered."),
    503: ("UNAVAILABLE", "The model is overloaded. Please try again later."),
    504: ("DEADLINE_EXCEEDED", "Deadline expired before operation could complete."),
}


def google_simple(code: int, message: str | None = None) -> dict[str, Any]:
    """A detail-less envelope for a plain status."""
    status, default = GOOGLE_SIMPLE.get(code, ("UNKNOWN", "Unknown error."))
    return google_error(code, status, message or default)


def model_not_found(model: str) -> dict[str, Any]:
    """404 for an unknown model."""
    return google_error(404, "NOT_FOUND", f"models/{model} is not found for API version v1beta, or is not "
                        "supported for generateContent. Call ListModels to see the list of available models "
                        "and their supported methods.")


def service_disabled(project: str) -> dict[str, Any]:
    """403 for a Code Assist call billed to a project without the API (users' reports in gemini-cli's issues)."""
    return google_error(403, "PERMISSION_DENIED",
                        f"Cloud Code Private API has not been used in project {project} before or it is disabled. "
                        "Enable it by visiting https://console.developers.google.com/apis/api/"
                        f"cloudcode-pa.googleapis.com/overview?project={project} then retry.",
                        [{"@type": _T + "ErrorInfo", "reason": "SERVICE_DISABLED", "domain": "googleapis.com",
                          "metadata": {"consumer": f"projects/{project}", "service": "cloudcode-pa.googleapis.com"}}])
