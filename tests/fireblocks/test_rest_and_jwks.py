"""The REST JWT as Fireblocks checks it (against the simulator), and the JWKS cache's refresh rules."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from bridge.sources.fireblocks.auth import RequestSigner
from bridge.sources.fireblocks.jwks import KeySet
from bridge.sources.fireblocks.rest import FireblocksApiError, FireblocksRest
from bridge.sources.fireblocks.signature import b64url_decode
from bridge_testkit.fireblocks.simulator import FireblocksSimulator, new_key, pem_private


@pytest.fixture
async def sim() -> AsyncIterator[FireblocksSimulator]:
    simulator = FireblocksSimulator(seed=3)
    await simulator.start()
    yield simulator
    await simulator.stop()


def test_the_request_jwt_carries_uri_nonce_iat_exp_sub_and_body_hash_and_the_signer_repr_hides_the_key() -> None:
    signer = RequestSigner("api-key-123", pem_private(new_key()), clock=lambda: 1_800_000_000.0)
    first, second = signer.token("/v1/transactions?after=1"), signer.token("/v1/transactions?after=1")
    claims = json.loads(b64url_decode(first.split(".")[1]))
    assert claims["uri"] == "/v1/transactions?after=1" and claims["sub"] == "api-key-123"
    assert claims["exp"] - claims["iat"] < 30 and claims["iat"] == 1_800_000_000
    assert claims["bodyHash"] == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"  # SHA-256 of b""
    assert json.loads(b64url_decode(second.split(".")[1]))["nonce"] != claims["nonce"]
    assert json.loads(b64url_decode(first.split(".")[0])) == {"alg": "RS256", "typ": "JWT"}
    assert "api-key-123" not in repr(signer)


async def test_signed_transaction_pages_are_accepted_by_fireblocks_rules_and_walk_by_creation_time(sim: FireblocksSimulator) -> None:
    for _ in range(5):
        transaction = sim.create("deposit")
        sim.reveal(sim.delivery(transaction, 0))
    signer = RequestSigner(sim.api_key, pem_private(sim.api_user_key))
    async with aiohttp.ClientSession() as session:
        rest = FireblocksRest(session, sim.base_url, "main", signer, rate_per_second=100)
        pages = [rows async for rows, _ in rest.transactions(0, limit=2)]
    # the cursor re-reads the last row of a full page (rows created in the same ms are never skipped)
    assert [len(rows) for rows in pages] == [2, 2, 2, 2, 1]
    assert len({row["id"] for rows in pages for row in rows}) == 5
    assert sim.rest_refusals == [] and len(sim.rest_requests) == 5


async def test_a_request_signed_with_another_private_key_is_refused_as_fatal(sim: FireblocksSimulator) -> None:
    signer = RequestSigner(sim.api_key, pem_private(new_key()))
    async with aiohttp.ClientSession() as session:
        rest = FireblocksRest(session, sim.base_url, "main", signer, rate_per_second=100)
        with pytest.raises(FireblocksApiError, match="401"):
            [rows async for rows, _ in rest.transactions(0, limit=2)]
    assert sim.rest_refusals == ["bad JWT signature"]


async def test_an_unknown_kid_refetches_the_jwks_once_then_not_again_within_the_minimum_interval(sim: FireblocksSimulator) -> None:
    now = [1000.0]
    keys = KeySet(url=sim.jwks_url, min_refetch_s=60.0, clock=lambda: now[0])
    assert await keys.ensure("sim-1") and sim.jwks_requests == 1
    assert await keys.ensure("sim-1") and sim.jwks_requests == 1  # cached
    new_kid = sim.rotate()
    assert await keys.ensure(new_kid) and new_kid not in keys.keys and sim.jwks_requests == 1  # too soon: 401, not a fetch
    now[0] += 61
    assert await keys.ensure(new_kid) and new_kid in keys.keys and sim.jwks_requests == 2
    now[0] += 1
    assert await keys.ensure("forged") and sim.jwks_requests == 2  # a flood of forged kids is no fetch loop
    await keys.close()


async def test_deliveries_arriving_while_the_first_jwks_fetch_is_in_flight_wait_for_it_instead_of_503(sim: FireblocksSimulator) -> None:
    keys = KeySet(url=sim.jwks_url, min_refetch_s=60.0)
    assert await asyncio.gather(*(keys.ensure("sim-1") for _ in range(4))) == [True] * 4
    assert sim.jwks_requests == 1
    await keys.close()


async def test_a_jwks_that_cannot_be_fetched_is_an_outage_not_a_refusal(sim: FireblocksSimulator) -> None:
    sim.jwks_down = True
    keys = KeySet(url=sim.jwks_url, min_refetch_s=0.0)
    assert await keys.ensure("sim-1") is False and keys.last_error and "503" in keys.last_error
    sim.jwks_down = False
    assert await keys.ensure("sim-1") is True
    await keys.close()


def test_a_static_jwks_file_is_never_fetched(tmp_path: Path, sim: FireblocksSimulator) -> None:
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps(sim.jwks()))
    keys = KeySet(url="http://127.0.0.1:9/unused", file=path)
    assert keys.static and not keys.needs_fetch("unknown") and "sim-1" in keys.keys
