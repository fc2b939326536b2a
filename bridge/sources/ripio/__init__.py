"""Ripio: WebSocket ``deposit`` / ``withdrawal`` topics (ticket auth) with REST listing backfill.

``plugin`` registers it; ``service`` is its stream source (on ``bridge.ingest.stream``), ``client``
the transport, ``rest`` the signed REST client, ``backfill`` the listing pages, ``parse`` the pure
parser, ``messages`` the wire shapes, ``auth`` the signing, ``config`` the ``ripio:`` section.
"""
