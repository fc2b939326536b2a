"""Ripio's frames, envelopes, signatures and configuration — pure, no sockets."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from pydantic import SecretStr, ValidationError

from bridge.contract.jsonutil import loads_exact
from bridge.ingest.backfill import Window
from bridge.sources.ripio import messages as m
from bridge.sources.ripio.auth import prehash, sign, signed_headers, signed_path
from bridge.sources.ripio.backfill import start_date
from bridge.sources.ripio.config import RipioAccount, RipioConfig
from bridge.sources.ripio.parse import parse_message
from tests.support import RECEIVED, fixture_bytes

SECRET = "test-secret-key"


class _Credentials:
    api_token = SecretStr("token-abc")
    api_secret = SecretStr(SECRET)


# -- signing -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("timestamp", "method", "path", "body", "expected"),
    [
        # computed independently: printf '%s' '<prehash>' | openssl dgst -sha256 -hmac test-secret-key -binary | base64
        ("1673271591764", "POST", "/trade/ticket", "", "esmwO6cNnBAoU8l5mAfDc4H12GCO5KQQIkJvoPVkZho="),
        (
            "1673271591764",
            "get",
            "/trade/deposits?start_date=2023-01-09T00%3A00%3A00.000Z&page_size=200",
            "",
            "99URTbp3NyBEg/nirC6srU9jHdwoHnbv8T3kzmOFXMw=",
        ),
        ("1673271591764", "POST", "/trade/withdrawals", '{"amount":0.1}', "a40Vj9x02PFLlHTagQFcIOenm0Chz2eypEb6zhcyooI="),
    ],
)
def test_the_signature_is_base64_hmac_sha256_over_timestamp_method_path_and_body(
    timestamp: str, method: str, path: str, body: str, expected: str
) -> None:
    assert sign(SECRET, prehash(timestamp, method, path, body)) == expected


def test_signed_headers_carry_token_millisecond_timestamp_signature_and_the_optional_tolerance() -> None:
    headers = signed_headers(_Credentials(), "POST", "/trade/ticket", "", 1673271591.764, tolerance_ms=30_000)
    assert headers["Authorization"] == "token-abc"
    assert headers["Timestamp"] == "1673271591764"
    assert headers["Signature"] == "esmwO6cNnBAoU8l5mAfDc4H12GCO5KQQIkJvoPVkZho="
    assert headers["Timestamp-tolerance"] == "30000"
    assert "Timestamp-tolerance" not in signed_headers(_Credentials(), "GET", "/x", "", 1.0)


@pytest.mark.parametrize(("include", "expected"), [(False, "/trade/deposits"), (True, "/trade/deposits?page_size=5")])
def test_the_query_string_is_signed_only_when_configured(include: bool, expected: str) -> None:
    assert signed_path("/trade/deposits", "page_size=5", include_query=include) == expected


# -- stream frames -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("frame", "kind"),
    [
        ({"id": -1, "topic": "deposit", "timestamp": 1, "body": {}}, m.Welcome),
        ({"id": -1}, m.Welcome),
        ({"error_code": 40100, "message": "Invalid ticket", "data": None}, m.StreamError),
        ({"method": "pong"}, m.Pong),
        ({"pong": 1700000000000}, m.Pong),
        ({"method": "subscribe", "topics": ["deposit"], "status": "ok"}, m.OtherControl),
        ({"id": 3, "topic": "deposit", "timestamp": 1, "body": {"id": "x"}}, type(None)),
        ({"id": 3, "topic": "balance", "body": {}}, type(None)),  # a message, for parse to refuse
        ({"unexpected": True}, type(None)),  # unknown: parse refuses it → dead letter
    ],
)
def test_control_frames_are_told_apart_from_messages(frame: dict[str, Any], kind: type) -> None:
    assert isinstance(m.classify(frame), kind)


def test_the_documented_subscription_request_carries_topics_and_ticket() -> None:
    assert m.subscribe_request(["deposit"], "97794B95-AFE7-454F-81B0-9109112548C2") == loads_exact(fixture_bytes("ripio/subscribe.json"))


def test_the_welcome_fixture_is_a_welcome_and_carries_no_transfer() -> None:
    welcome = loads_exact(fixture_bytes("ripio/welcome.json"))
    assert isinstance(m.classify(welcome), m.Welcome) and parse_message(welcome, received_at=RECEIVED) == []


# -- REST envelopes ------------------------------------------------------------------------------


def test_a_ticket_response_yields_the_ticket() -> None:
    assert m.ticket_from(loads_exact(fixture_bytes("ripio/ticket.rest.json")), 200) == "97794B95-AFE7-454F-81B0-9109112548C2"


@pytest.mark.parametrize(
    ("fixture", "status", "rate_limit", "configuration", "transient"),
    [
        ("error.unauthorized.rest.json", 401, False, True, False),
        ("error.rate-limit.rest.json", 429, True, False, True),
    ],
)
def test_error_envelopes_raise_a_rest_error_that_says_what_to_do(
    fixture: str, status: int, rate_limit: bool, configuration: bool, transient: bool
) -> None:
    with pytest.raises(m.RestError) as caught:
        m.ticket_from(loads_exact(fixture_bytes(f"ripio/{fixture}")), status)
    error = caught.value
    assert (error.is_rate_limit, error.is_configuration_error, error.is_transient) == (rate_limit, configuration, transient)
    assert f"HTTP {status}" in str(error)


@pytest.mark.parametrize(("status", "code", "transient"), [(500, 50000, True), (503, 503, True), (400, 40000, False), (403, 40300, False)])
def test_server_errors_are_transient_and_refusals_are_not(status: int, code: int, transient: bool) -> None:
    error = m.RestError(status, code, "x")
    assert (error.is_transient, error.is_configuration_error) == (transient, not transient)


def test_an_error_code_in_a_200_answer_is_still_an_error() -> None:
    with pytest.raises(m.RestError, match="40000"):
        m.listing_page("deposit", {"error_code": 40000, "message": "Invalid parameters", "data": None}, 200)


def test_a_listing_page_gives_rows_cursor_and_page_numbers() -> None:
    page = m.listing_page("withdrawal", loads_exact(fixture_bytes("ripio/withdrawals.listing.rest.json")), 200)
    assert len(page.rows) == 1 and page.next_cursor == "MTU0ODQzNDIzNTQ0MzpBMURDRDNCNg=="
    assert (page.current_page, page.total_pages, page.next_page_number()) == (1, 1, None)


def test_a_listing_without_the_data_envelope_and_without_a_cursor_pages_by_number() -> None:
    page = m.listing_page("deposit", {"deposits": [{}], "pagination": {"current_page": 2, "total_pages": 5}}, 200)
    assert (page.next_cursor, page.next_page_number()) == (None, 3)


def test_a_listing_that_lacks_its_rows_is_an_error() -> None:
    with pytest.raises(m.RestError, match="'withdrawals' is not a list"):
        m.listing_page("withdrawal", {"data": {"deposits": []}}, 200)


# -- backfill window -----------------------------------------------------------------------------


def test_start_date_is_utc_with_milliseconds() -> None:
    assert start_date(1673271591764) == "2023-01-09T13:39:51.764Z"


def test_the_window_reaches_back_to_the_oldest_open_transfer_and_forgets_it_once_final() -> None:
    created = 1673271564057  # the fixture's create_date
    window = Window(now_ms=created + 100_000, initial_lookback_ms=10_000, overlap_ms=5_000, max_lookback_ms=86_400_000)
    assert window.since(created + 100_000) == created + 85_000
    [pending] = parse_message(loads_exact(fixture_bytes("ripio/withdrawal.json")), received_at=RECEIVED)
    window.note(pending)  # type: ignore[arg-type]
    window.completed(created + 200_000)
    assert window.since(created + 300_000) == created  # still open: its next state may come any time
    window.note(pending.model_copy(update={"is_final": True}))  # type: ignore[union-attr]
    assert window.since(created + 300_000) == created + 195_000


def test_the_window_never_reaches_past_the_maximum_lookback() -> None:
    window = Window(now_ms=10_000_000, initial_lookback_ms=9_000_000, overlap_ms=0, max_lookback_ms=1_000_000)
    assert window.since(10_000_000) == 9_000_000


# -- configuration -------------------------------------------------------------------------------


def account(**values: Any) -> dict[str, Any]:
    return {"name": "main", "api_token": "tok-1234567890", "api_secret": "sec-1234567890", **values}


def test_secrets_never_appear_in_reprs_dumps_or_validation_errors(caplog: pytest.LogCaptureFixture) -> None:
    config = RipioConfig(enabled=True, accounts=[account()])
    caplog.set_level(logging.DEBUG)
    logging.getLogger("test").debug("config %r %s", config, config.model_dump())
    with pytest.raises(ValidationError) as caught:
        RipioConfig(accounts=[account(name="bad name!")])
    text = repr(config) + str(config.model_dump()) + str(caught.value) + caplog.text
    assert "tok-1234567890" not in text and "sec-1234567890" not in text


@pytest.mark.parametrize("topics", [["deposit", "balance"], [], "order_status"])
def test_only_the_transfer_topics_can_be_subscribed(topics: Any) -> None:
    with pytest.raises(ValidationError, match="topics"):
        RipioConfig(topics=topics)


def test_topics_accept_a_comma_separated_variable() -> None:
    assert RipioConfig(topics="withdrawal, deposit").topics == ("withdrawal", "deposit")


def test_account_names_are_unique_and_credentials_not_empty() -> None:
    with pytest.raises(ValidationError, match="unique"):
        RipioConfig(accounts=[account(), account()])
    with pytest.raises(ValidationError, match="must not be empty"):
        RipioAccount(**account(api_secret="  "))


def test_the_unconfirmed_endpoints_and_keepalive_are_configurable() -> None:
    config = RipioConfig(ws_url="wss://example.invalid/ws", withdrawals_path="/trade/withdrawals/list", ping_interval=None, sign_query=True)
    assert (config.listing_path("withdrawal"), config.listing_path("deposit")) == ("/trade/withdrawals/list", "/trade/deposits")
    assert config.ping_interval is None and config.sign_query
    with pytest.raises(ValidationError):
        RipioConfig(withdrawals_path="trade/withdrawals")
