"""Signing, control frames, configuration and the backfill window: pure pieces of the OKX source."""

from __future__ import annotations

import orjson
import pytest
from pydantic import SecretStr, ValidationError

from bridge.contract.events import Account, Direction, Provider, Source, Status, build_event
from bridge.ingest.backfill import Window
from bridge.sources.okx import messages as m
from bridge.sources.okx.auth import login_args, rest_headers, rest_timestamp
from bridge.sources.okx.config import OkxAccount, OkxConfig
from tests.support import fixture_bytes

SECRET = "22582BD0CFF14C41EDBF1AB98506286D"


def account(**changes: object) -> OkxAccount:
    values: dict[str, object] = {"name": "main", "api_key": "key-1", "secret_key": SECRET, "passphrase": "pass-phrase"}
    values.update(changes)
    return OkxAccount(**values)  # type: ignore[arg-type]


# -- signing (vectors computed independently with `openssl dgst -sha256 -hmac`) ----------------


def test_the_login_signs_timestamp_GET_and_the_verify_path_with_the_secret() -> None:
    args = login_args(account(), 1538054050.9)
    assert args == {
        "apiKey": "key-1",
        "passphrase": "pass-phrase",
        "timestamp": "1538054050",
        "sign": "+LdIr8lkkvhr5hoA3g9TMC0+uQJ849ftAcocA/ouu4M=",
    }


def test_rest_requests_sign_the_iso_timestamp_method_path_and_query() -> None:
    stamp = 1607418537.715
    headers = rest_headers(account(), "GET", "/api/v5/asset/deposit-history?before=1674103661000&limit=100", "", stamp)
    assert headers["OK-ACCESS-TIMESTAMP"] == "2020-12-08T09:08:57.715Z"
    assert headers["OK-ACCESS-SIGN"] == "Qe6yjncS2nN7johdRqaoAtdK6hm+1Gz7DqoceZVz7oU="
    assert headers["OK-ACCESS-KEY"] == "key-1" and headers["OK-ACCESS-PASSPHRASE"] == "pass-phrase"


def test_rest_timestamps_have_milliseconds_and_Z() -> None:
    assert rest_timestamp(0.0) == "1970-01-01T00:00:00.000Z"


# -- control frames ----------------------------------------------------------------------------


def test_the_documented_login_failure_is_a_configuration_error() -> None:
    control = m.classify(orjson.loads(fixture_bytes("okx/login.error.json")))
    assert isinstance(control, m.ErrorEvent)
    assert control.code == "60009" and control.is_configuration_error and control.conn_id == "a4d3ae55"


@pytest.mark.parametrize("code", ["60004", "60005", "60006", "60007", "60009", "60024", "60032"])
def test_credential_and_clock_errors_are_configuration_errors(code: str) -> None:
    assert m.ErrorEvent(code, "", None, None).is_configuration_error


@pytest.mark.parametrize("code", ["60012", "60013", "60018"])
def test_invalid_requests_are_told_apart_from_credential_errors(code: str) -> None:
    error = m.ErrorEvent(code, "", None, None)
    assert error.is_invalid_request and not error.is_configuration_error


@pytest.mark.parametrize("code", ["60014", "63999", "64007"])
def test_transient_errors_are_neither(code: str) -> None:
    error = m.ErrorEvent(code, "", None, None)
    assert not error.is_invalid_request and not error.is_configuration_error


def test_the_documented_subscribe_failure_keeps_its_request_id() -> None:
    control = m.classify(orjson.loads(fixture_bytes("okx/subscribe.error.json")))
    assert isinstance(control, m.ErrorEvent)
    assert (control.code, control.request_id, control.is_invalid_request) == ("60012", "1512", True)


def test_notice_64008_asks_for_a_reconnect() -> None:
    control = m.classify(orjson.loads(fixture_bytes("okx/notice.json")))
    assert isinstance(control, m.Notice) and control.is_service_upgrade


def test_login_and_subscribe_acks_are_recognized() -> None:
    assert m.classify({"event": "login", "code": "0", "msg": "", "connId": "c1"}) == m.LoginAck("c1")
    ack = m.classify({"id": "1512", "event": "subscribe", "arg": {"channel": "deposit-info"}, "connId": "c1"})
    assert ack == m.SubscribeAck("deposit-info", None, "c1")


def test_a_data_push_is_not_a_control_frame() -> None:
    assert m.classify(orjson.loads(fixture_bytes("okx/deposit-info.push.json"))) is None


def test_unknown_events_are_carried_not_failed() -> None:
    control = m.classify({"event": "channel-conn-count", "channel": "deposit-info", "connCount": "2", "connId": "c"})
    assert isinstance(control, m.OtherEvent) and control.event == "channel-conn-count"


def test_subscriptions_cover_both_channels_and_one_argument_per_filtered_currency() -> None:
    assert m.subscription_args(None, None) == [{"channel": "deposit-info"}, {"channel": "withdrawal-info"}]
    assert m.subscription_args(("BTC", "ETH"), None) == [
        {"channel": "deposit-info", "ccy": "BTC"},
        {"channel": "deposit-info", "ccy": "ETH"},
        {"channel": "withdrawal-info"},
    ]


def test_history_envelopes_yield_rows_or_a_rest_error() -> None:
    assert m.history_rows({"code": "0", "msg": "", "data": [{"a": 1}]}, 200) == [{"a": 1}]
    with pytest.raises(m.RestError) as limited:
        m.history_rows({"code": "50011", "msg": "Rate limit reached.", "data": []}, 429)
    assert limited.value.is_rate_limit and not limited.value.is_configuration_error
    with pytest.raises(m.RestError) as refused:
        m.history_rows({"code": "50113", "msg": "Invalid Sign", "data": []}, 401)
    assert refused.value.is_configuration_error


# -- configuration -----------------------------------------------------------------------------


def test_secrets_never_show_in_the_config_repr_or_its_validation_errors() -> None:
    config = OkxConfig(enabled=True, accounts=[account()])
    text = repr(config) + str(config.model_dump())
    assert SECRET not in text and "pass-phrase" not in text and "key-1" not in text
    with pytest.raises(ValidationError) as error:
        OkxConfig(accounts=[{"name": "bad name!", "api_key": "k", "secret_key": SECRET, "passphrase": "pass-phrase"}])
    assert SECRET not in str(error.value) and "pass-phrase" not in str(error.value)


def test_currency_filters_accept_a_comma_list_and_are_upper_cased() -> None:
    assert account(deposit_ccy="btc, eth").deposit_ccy == ("BTC", "ETH")
    assert account(withdrawal_ccy=[]).withdrawal_ccy is None


def test_account_names_must_be_unique() -> None:
    with pytest.raises(ValidationError, match="unique"):
        OkxConfig(accounts=[account(), account()])


def test_the_ping_interval_stays_under_the_30_second_server_timeout() -> None:
    with pytest.raises(ValidationError):
        OkxConfig(ping_interval=30)


def test_empty_credentials_are_refused() -> None:
    with pytest.raises(ValidationError):
        account(secret_key=SecretStr(" "))


# -- backfill window ---------------------------------------------------------------------------

MINUTE = 60_000


def transfer(transfer_id: str, *, created_ms: int, status: Status = Status.PENDING) -> object:
    from bridge.contract.timeutil import from_epoch_ms

    return build_event(
        provider=Provider.OKX,
        direction=Direction.DEPOSIT,
        transfer_id=transfer_id,
        status=status,
        provider_status="0",
        amount="1",
        asset="BTC",
        created_at=from_epoch_ms(created_ms, field="ts"),
        occurred_at=from_epoch_ms(created_ms, field="ts"),
        received_at=from_epoch_ms(created_ms, field="ts"),
        source=Source(channel="deposit-info"),
        account=Account(id="1"),
    )


NOW = 1_700_000_000_000


def window() -> Window:
    return Window(now_ms=NOW, initial_lookback_ms=60 * MINUTE, overlap_ms=2 * MINUTE, max_lookback_ms=24 * 60 * MINUTE)


def test_the_first_pass_reads_the_initial_lookback() -> None:
    assert window().since(NOW) == NOW - 62 * MINUTE


def test_later_passes_start_at_the_previous_pass_minus_the_overlap() -> None:
    w = window()
    w.completed(NOW + 10 * MINUTE)
    assert w.since(NOW + 20 * MINUTE) == NOW + 8 * MINUTE


def test_a_failed_pass_leaves_the_window_where_it_was() -> None:
    w = window()
    assert w.since(NOW + 30 * MINUTE) == NOW - 62 * MINUTE


def test_an_open_transfer_created_earlier_widens_the_window_to_its_creation() -> None:
    w = window()
    w.note(transfer("old", created_ms=NOW - 5 * 60 * MINUTE))  # type: ignore[arg-type]
    w.completed(NOW)
    assert w.since(NOW + MINUTE) == NOW - 5 * 60 * MINUTE


def test_a_finished_transfer_no_longer_widens_the_window() -> None:
    w = window()
    w.note(transfer("old", created_ms=NOW - 5 * 60 * MINUTE))  # type: ignore[arg-type]
    w.note(transfer("old", created_ms=NOW - 5 * 60 * MINUTE, status=Status.COMPLETED))  # type: ignore[arg-type]
    w.completed(NOW)
    assert w.since(NOW + MINUTE) == NOW - 2 * MINUTE
    assert w.open_transfers == 0


def test_the_window_never_reaches_past_the_maximum_lookback() -> None:
    w = Window(now_ms=NOW, initial_lookback_ms=48 * 60 * MINUTE, overlap_ms=0, max_lookback_ms=24 * 60 * MINUTE)
    assert w.since(NOW) == NOW - 24 * 60 * MINUTE


def test_an_open_transfer_older_than_the_maximum_lookback_is_forgotten() -> None:
    w = window()
    w.note(transfer("ancient", created_ms=NOW - 3 * 24 * 60 * MINUTE))  # type: ignore[arg-type]
    assert w.since(NOW) == NOW - 62 * MINUTE
    assert w.open_transfers == 0


def test_an_error_event_with_a_huge_message_is_classified_with_the_message_clipped() -> None:
    control = m.classify({"event": "error", "code": 10**5000, "msg": "x" * 1_000_000})
    assert isinstance(control, m.ErrorEvent)
    assert len(control.msg) < 400 and control.msg.endswith("(1,000,000 chars)")
    assert len(control.code) <= 80
