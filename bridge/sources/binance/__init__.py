"""Binance: signed REST polling of the capital deposit and withdrawal history (no push channel exists).

``plugin`` registers it; ``service`` is its poll source (on ``bridge.ingest.poll``), ``rest`` the
signed client with server time, ``limits`` the weight budgets and rate-limit blocks, ``tracker``
the open transfers older than the hot window, ``parse`` the pure parser, ``messages`` the wire
vocabulary, ``auth`` the signing (HMAC, Ed25519, RSA), ``config`` the ``binance:`` section.
"""
