"""CloudEvents ``source`` of an event whose account id came from a hostile payload: still one
URI-reference (a consumer's CloudEvents SDK parses it as a URI and rejects one with a space)."""

from __future__ import annotations

from urllib.parse import unquote

import pytest

from bridge.delivery.publish import Publisher
from bridge.delivery.settings import TopicSettings
from bridge.kafka.settings import KafkaSettings
from tests.test_pipeline_kafka import withdrawal

RFC3986_PATH = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~!$&'()*+,;=:@/%")


@pytest.mark.parametrize("account_id", ["6812b103908d2d0d49c7ff79", "289320****60975104", "a b", "x/../y?z#w", "ünïcode", "100%", "tab\tand\x1bescape"])
def test_the_account_id_is_one_percent_encoded_path_segment_of_ce_source(account_id: str) -> None:
    event = withdrawal()
    event = event.model_copy(update={"account": event.account.model_copy(update={"id": account_id})})

    source = dict(Publisher(KafkaSettings(), TopicSettings()).event_record(event).headers)["ce_source"].decode("ascii")

    assert set(source) <= RFC3986_PATH
    provider, segment = source.removeprefix("/").split("/")
    assert provider == "openxswitch" and unquote(segment) == account_id
