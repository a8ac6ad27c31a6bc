"""Secret masking: known values (longest first, added at any time) and secret-shaped strings."""

from __future__ import annotations

import logging

import pytest

from sparc_cloud.redact import MASK, RedactingFilter, SecretRegistry, redact


def test_known_values_are_masked_longest_first_even_when_one_contains_another() -> None:
    secrets = SecretRegistry()
    secrets.add("acct-1234", "acct-1234-extra-5678", None, "abc")  # None and short values are ignored
    assert secrets.redact("id acct-1234-extra-5678 and acct-1234, abc") == f"id {MASK} and {MASK}, abc"


def test_values_added_later_are_masked_from_then_on() -> None:
    secrets = SecretRegistry()
    assert secrets.redact("token-one token-two") == "token-one token-two"
    secrets.add("token-one")
    secrets.add("token-two", "token-one")
    assert secrets.redact("token-one token-two") == f"{MASK} {MASK}"
    assert "token" not in repr(secrets)


@pytest.mark.parametrize(("text", "leak"), [
    ("jwt eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiIxMjM0NTYifQ.c2lnbmF0dXJl end", "eyJhbGciOiJSUzI1NiJ9"),
    ("access ya29.a0AfH6SMBxyz-_.123 end", "ya29.a0AfH6SMBxyz"),
    ("refresh 1//0gAbCdEfGhIjKlMnOpQrStUv end", "1//0gAbCdEfGhIjKlMnOpQrStUv"),
    ("key AIzaSyA1234567890abcdefghijklmnop end", "AIzaSyA1234567890abcdefghijklmnop"),
    ("Authorization: Bearer sk-live.abc/def+ghi= end", "sk-live.abc/def+ghi="),
    ("https://x.example/v1?alt=json&key=SECRETVALUE&b=1", "SECRETVALUE"),
    ('{"refresh_token": "rt-secret-value", "other": 1}', "rt-secret-value"),
    ("https://hooks.slack.com/services/T000/B000/XXXX posted", "T000/B000/XXXX"),
])
def test_secret_shaped_strings_are_masked_whatever_their_source(text: str, leak: str) -> None:
    masked = redact(text)
    assert leak not in masked and MASK in masked
    assert masked[:3] == text[:3]  # only the secret goes


def test_the_logging_filter_masks_the_final_message() -> None:
    secrets = SecretRegistry()
    secrets.add("super-secret-value")
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "token=%s done", ("super-secret-value",), None)
    assert RedactingFilter(secrets).filter(record)
    assert record.getMessage() == f"token={MASK} done"
