"""Logs: one JSON event per line with context fields; secrets and signatures never written."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest

from bridge.observability.logs import REDACTOR, configure_logging, log_context, register_secrets

API_KEY = "0f3c9a2e-77b1-4d2c-9e55-1a2b3c4d5e6f"
PASSPHRASE = "Main-7hq2z!"
WEBHOOK_SECRET = "whsec_live_91f0c2d9a8"


@pytest.fixture
def stream() -> Iterator[io.StringIO]:
    root = logging.getLogger()
    saved_handlers, saved_level = list(root.handlers), root.level
    out = io.StringIO()
    configure_logging("DEBUG", "json", {"noisy": "WARNING"}, stream=out)
    register_secrets([API_KEY, PASSPHRASE, WEBHOOK_SECRET])
    try:
        yield out
    finally:
        REDACTOR.clear()
        for handler in list(root.handlers):
            root.removeHandler(handler)
        for handler in saved_handlers:
            root.addHandler(handler)
        root.setLevel(saved_level)
        logging.getLogger("noisy").setLevel(logging.NOTSET)


def lines(stream: io.StringIO) -> list[dict[str, Any]]:
    text = stream.getvalue()
    return [json.loads(line) for line in text.splitlines()]


def test_each_record_is_one_json_line_with_its_context_fields(stream: io.StringIO) -> None:
    log = logging.getLogger("bridge.test")
    with log_context(provider="okx", account="main", source="okx:main"):
        log.info("published\nstate", extra={"key": "okx:deposit:1", "event_id": "abc"})
    log.warning("outside")
    first, second = lines(stream)
    assert first["message"] == "published\nstate"  # a newline stays inside the JSON string
    assert (first["provider"], first["account"], first["source"], first["key"], first["event_id"]) == ("okx", "main", "okx:main", "okx:deposit:1", "abc")
    assert first["level"] == "INFO" and first["logger"] == "bridge.test" and first["ts"].endswith("Z")
    assert "provider" not in second
    assert len(stream.getvalue().splitlines()) == 2


def test_levels_are_configurable_per_logger(stream: io.StringIO) -> None:
    logging.getLogger("noisy").info("hidden")
    logging.getLogger("noisy").warning("shown")
    logging.getLogger("bridge").debug("debug shown")
    assert [line["message"] for line in lines(stream)] == ["shown", "debug shown"]


def test_registered_secret_values_are_masked_in_messages_arguments_and_extras(stream: io.StringIO) -> None:
    log = logging.getLogger("bridge.test")
    log.info("login with %s / %s", API_KEY, PASSPHRASE)
    log.info("config", extra={"detail": {"nested": [f"x{WEBHOOK_SECRET}y"]}})
    text = stream.getvalue()
    assert API_KEY not in text and PASSPHRASE not in text and WEBHOOK_SECRET not in text
    first, second = lines(stream)
    assert first["message"] == "login with ********** / **********"
    assert second["detail"] == {"nested": ["x**********y"]}


def test_secrets_in_exceptions_and_tracebacks_are_masked(stream: io.StringIO) -> None:
    try:
        raise RuntimeError(f"refused key {API_KEY}")
    except RuntimeError:
        logging.getLogger("aiokafka").exception("third-party failure")  # any logger, not only ours
    [line] = lines(stream)
    assert "RuntimeError: refused key **********" in line["exception"]
    assert API_KEY not in stream.getvalue()


def test_values_of_secret_names_are_masked_even_when_not_registered(stream: io.StringIO) -> None:
    log = logging.getLogger("bridge.test")
    log.info('frame {"op":"login","args":[{"apiKey":"k-1","passphrase":"p-2","timestamp":"1","sign":"c2lnbmF0dXJl="}]}')
    log.info("X-Webhook-Signature: 5d41402abc4b2a76b9719d911017c592 from 10.0.0.1")
    log.info("GET /x?sign=abcdef&ts=1 Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.e30.sig")
    log.info("request", extra={"headers": {"X-Webhook-Signature": "5d41402a", "OK-ACCESS-PASSPHRASE": "p", "Content-Type": "application/json"}})
    log.info("signature mismatch for delivery r-1; api_key must not be empty")  # words, not values: kept
    login, header, query, extra, words = lines(stream)
    assert login["message"] == 'frame {"op":"login","args":[{"apiKey":"**********","passphrase":"**********","timestamp":"1","sign":"**********"}]}'
    assert header["message"] == "X-Webhook-Signature: ********** from 10.0.0.1"
    assert query["message"] == "GET /x?sign=**********&ts=1 Authorization: Bearer **********"
    assert extra["headers"] == {"X-Webhook-Signature": "**********", "OK-ACCESS-PASSPHRASE": "**********", "Content-Type": "application/json"}
    assert words["message"] == "signature mismatch for delivery r-1; api_key must not be empty"


def test_text_format_is_redacted_too() -> None:
    out = io.StringIO()
    root = logging.getLogger()
    saved = list(root.handlers)
    configure_logging("INFO", "text", stream=out)
    register_secrets([PASSPHRASE])
    try:
        with log_context(provider="ripio"):
            logging.getLogger("bridge.test").error("bad passphrase %s", PASSPHRASE)
    finally:
        REDACTOR.clear()
        for handler in list(root.handlers):
            root.removeHandler(handler)
        for handler in saved:
            root.addHandler(handler)
    assert out.getvalue().rstrip().endswith("bridge.test: bad passphrase ********** [provider=ripio]")


def test_a_warning_a_source_repeats_per_request_is_written_once_per_window_and_summed_up() -> None:
    """During a Kafka outage a webhook answers every delivery 503 with the same warning; the log
    gets the first one and, when the window ends, one summary line — not one line per request."""
    buffer = io.StringIO()
    handler = configure_logging("INFO", "json", {}, stream=buffer)
    try:
        source_log = logging.getLogger("bridge.sources.openxswitch.webhook")
        for _ in range(500):
            source_log.warning("%s webhook: Kafka did not acknowledge within %.1fs; answering 503", "openxswitch", 20.0)
        logging.getLogger("bridge.service.app").warning("a line of the shell, not rate-limited")
        logging.getLogger("bridge.service.app").warning("a line of the shell, not rate-limited")
    finally:
        logging.getLogger().removeHandler(handler)
    lines = [json.loads(line) for line in buffer.getvalue().splitlines()]
    assert [line["logger"] for line in lines] == ["bridge.sources.openxswitch.webhook", "bridge.service.app", "bridge.service.app"]
