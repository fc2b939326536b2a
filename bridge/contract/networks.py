"""Best-effort canonical network names (contract field ``network``): known spellings only.

Providers name chains their own way (``USDT-TRC20``, ``ERC20``, ``Ethereum``, ``bitcoin``). A
spelling not listed here yields ``None``: the contract forbids guessing.
"""

from __future__ import annotations

__all__ = ["canonical_network"]

_ALIASES: dict[str, str] = {
    "bitcoin": "bitcoin",
    "btc": "bitcoin",
    "bitcoincash": "bitcoin-cash",
    "bitcoin cash": "bitcoin-cash",
    "bch": "bitcoin-cash",
    "ethereum": "ethereum",
    "eth": "ethereum",
    "erc20": "ethereum",
    "tron": "tron",
    "trx": "tron",
    "trc20": "tron",
    "bsc": "bsc",
    "bep20": "bsc",
    "bnb smart chain": "bsc",
    "polygon": "polygon",
    "matic": "polygon",
    "solana": "solana",
    "sol": "solana",
    "arbitrum one": "arbitrum",
    "arbitrum": "arbitrum",
    "optimism": "optimism",
    "avalanche c-chain": "avalanche",
    "avax-c": "avalanche",
    "litecoin": "litecoin",
    "ltc": "litecoin",
    "ton": "ton",
    "toncoin": "ton",
    "xrp": "ripple",
    "ripple": "ripple",
    "base": "base",
    "lightning": "lightning",
}


def canonical_network(*candidates: str | None) -> str | None:
    """First candidate that names a known network; OKX ``CCY-CHAIN`` strings are split on ``-``."""
    for candidate in candidates:
        if not candidate:
            continue
        text = candidate.strip().lower()
        found = _ALIASES.get(text)
        if found is None and "-" in text:
            found = _ALIASES.get(text.split("-", 1)[1])
        if found is not None:
            return found
    return None
