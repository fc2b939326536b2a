"""OKX: private WebSocket ``deposit-info`` / ``withdrawal-info`` with REST history backfill.

``plugin`` registers it; ``service`` is its stream source (on ``bridge.ingest.stream``), ``client``
the transport, ``backfill`` the signed history client, ``parse`` the pure parser, ``messages`` the
wire shapes, ``auth`` the signing, ``config`` the ``okx:`` section.
"""
