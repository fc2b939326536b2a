"""Fixtures of the OpenXSwitch tests: a receiver on a real pipeline, served on 127.0.0.1:0."""

from __future__ import annotations

import contextlib
from typing import Any, AsyncIterator, Awaitable, Callable

import aiohttp
import pytest

from bridge.sources.openxswitch.config import OpenXSwitchConfig
from bridge.sources.openxswitch.signature import HEADER, Encoding, sign
from bridge.sources.openxswitch.webhook import OpenXSwitchWebhook
from tests.conftest import PipelineFactory

SECRET = "whsec-current-7f3a"
OLD_SECRET = "whsec-previous-19bc"


class Receiver:
    """A running webhook on a real pipeline, plus a client that signs like the provider."""

    def __init__(self, webhook: OpenXSwitchWebhook, url: str, http: aiohttp.ClientSession):
        self.webhook = webhook
        self.url = url
        self.http = http

    async def post(
        self,
        body: bytes,
        *,
        secret: str | None = SECRET,
        encoding: Encoding = "hex",
        signature: str | None = None,
        content_type: str = "application/json",
        headers: dict[str, str] | None = None,
    ) -> tuple[int, dict[str, Any]]:
        """POST ``body``; signed with ``secret`` unless ``signature`` is given (None secret = unsigned)."""
        sent = {"Content-Type": content_type, **(headers or {})}
        if signature is not None:
            sent[HEADER] = signature
        elif secret is not None:
            sent[HEADER] = sign(secret.encode(), body, encoding)
        async with self.http.post(self.url, data=body, headers=sent) as response:
            return response.status, await response.json(content_type=None)


ReceiverFactory = Callable[..., Awaitable[Receiver]]


@pytest.fixture
async def make_receiver(make_pipeline: PipelineFactory) -> AsyncIterator[ReceiverFactory]:
    """``await make_receiver(**config)``: a pipeline on the test's topics and a webhook serving it."""
    async with contextlib.AsyncExitStack() as stack:
        http = await stack.enter_async_context(aiohttp.ClientSession())

        async def factory(*, pipeline: Any = None, **config: Any) -> Receiver:
            options = {"enabled": True, "secrets": [SECRET], **config}
            webhook = OpenXSwitchWebhook(OpenXSwitchConfig(**options), pipeline or await make_pipeline())
            url = await stack.enter_async_context(webhook.serve())
            return Receiver(webhook, url, http)

        yield factory
