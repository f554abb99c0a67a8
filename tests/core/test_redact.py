"""URLs and messages rendered without their secrets."""

from __future__ import annotations

import pytest

from sidekick.core.redact import is_secret_key, redact_text, redact_url


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("http://user:hunter2@host:9000/ingest", "http://user:***@host:9000/ingest"),
        ("elasticsearch+https://u:p%40ss@es:9200/logs", "elasticsearch+https://u:***@es:9200/logs"),
        ("loki://u:a@b@loki:3100", "loki://u:***@loki:3100"),  # an unencoded @ in the password
        ("syslog+tcp://u:pw@[::1]:514", "syslog+tcp://u:***@[::1]:514"),
        ("otlp://u:@c:4318", "otlp://u:***@c:4318"),
        ("http://h/p?token=abc&gzip=true", "http://h/p?token=***&gzip=true"),
        ("http://h/?access_token=a;apiKey=b&X-Amz-Signature=c", "http://h/?access_token=***;apiKey=***&X-Amz-Signature=***"),
        ("http://h/?%74oken=abc", "http://h/?%74oken=***"),  # percent-encoded name
        ("otlp://c:4318?headers=Authorization=Bearer%20x", "otlp://c:4318?headers=***"),
        ("http://h/#access_token=abc", "http://h/#access_token=***"),
        ("stdout:?secret=x", "stdout:?secret=***"),
        ("http://u:p@h:notaport/?key=v", "http://u:***@h:notaport/?key=***"),
    ],
)  # fmt: skip
def test_secrets_in_urls_are_masked(url: str, shown: str) -> None:
    assert redact_url(url) == shown


@pytest.mark.parametrize(
    "url",
    [
        "http://collector:9000/ingest?tenant=shop&gzip=true",
        "elasticsearch://es:9200/logs-%Y.%m.%d?password_file=/run/secrets/pw",
        "loki://user@loki:3100",  # a user name alone is kept
        "file:///var/log/app/*.log",
        "stdout:",
        "http://h/?token",  # a name without a value hides nothing
        "not a url at all",
    ],
)
def test_urls_without_secrets_are_unchanged(url: str) -> None:
    assert redact_url(url) == url


@pytest.mark.parametrize(
    ("name", "secret"),
    [
        ("token", True),
        ("Token", True),
        ("access_token", True),
        ("accessToken", True),
        ("key", True),
        ("api-key", True),
        ("sig", True),
        ("client_secret", True),
        ("password", True),
        ("auth", True),
        ("bearer_token_file", False),
        ("password_file", False),
        ("api_key_file", False),
        ("keyword", False),
        ("index", False),
        ("tenant", False),
        ("monkey", False),
    ],
)
def test_secret_looking_parameter_names(name: str, secret: bool) -> None:
    assert is_secret_key(name) is secret


def test_every_url_in_a_message_is_masked() -> None:
    text = (
        "cannot reach http://u:pw1@a:1/x?token=t1 (via 'https://b/?key=k2'), "
        "then loki://u:pw3@c:3100"
    )
    shown = redact_text(text)
    for secret in ("pw1", "t1", "k2", "pw3"):
        assert secret not in shown
    assert shown == (
        "cannot reach http://u:***@a:1/x?token=*** (via 'https://b/?key=***'), "
        "then loki://u:***@c:3100"
    )


def test_a_message_without_urls_is_returned_as_is() -> None:
    text = "output 'stdout:': token=abc is not an option"
    assert redact_text(text) is text


def test_punctuation_after_a_url_in_a_message_is_kept() -> None:
    assert redact_text("cannot reach http://h/?token=x: refused.") == (
        "cannot reach http://h/?token=***: refused."
    )
    assert redact_text("(see http://u:p@h/a).") == "(see http://u:***@h/a)."
