"""Fireblocks: signed transaction webhooks (v1 RSA-SHA512, v2 detached JWS RS512) on one route,
closed by a JWT-signed REST backfill (``GET /v1/transactions``).

Modules: ``config`` (the ``fireblocks:`` section), ``signature`` (v1/v2 verification, the JWKS),
``auth`` (the REST JWT: the only module that reads the API private key), ``messages`` (envelopes),
``parse`` (pure normalization), ``ordering`` (the out-of-order rule), ``rest`` (the signed history
client), ``webhook`` (the receiver and its backfill loop), ``plugin``.
"""
