"""Signature verification cost per delivery, v1 (RSA-SHA512 over the body) and v2 (detached JWS
RS512, key already cached), on a ~2 KB transaction body: ``python -m bridge_testkit.fireblocks.sigbench``."""

from __future__ import annotations

import json
import timeit

from bridge.sources.fireblocks.signature import read_jws_header, verify_jws, verify_legacy
from bridge_testkit.fireblocks.simulator import FireblocksSimulator, sign_jws, sign_legacy


def measure(number: int = 2000) -> dict[str, float]:
    sim = FireblocksSimulator(seed=1)
    transaction = sim.create("withdrawal")
    body = sim.body(transaction, 3)
    v1_keys = [sim.legacy_key.public_key()]
    v1_header = sign_legacy(sim.legacy_key, body)
    v2_header = sign_jws(sim.v2_keys["sim-1"], "sim-1", body)
    v2_key = sim.v2_keys["sim-1"].public_key()

    def v1() -> None:
        assert verify_legacy(v1_header, body, v1_keys) == 0

    def v2() -> None:
        jws = read_jws_header(v2_header)
        assert jws is not None and verify_jws(jws, body, v2_key)

    result = {"body_bytes": float(len(body))}
    for name, check in (("v1_us", v1), ("v2_us", v2)):
        best = min(timeit.repeat(check, number=number, repeat=3))
        result[name] = round(best / number * 1e6, 1)
    return result


if __name__ == "__main__":
    print(json.dumps(measure()))
