"""Cluster mode: several replicas coordinated by Kafka's group protocol and transactions.

``settings`` (the ``cluster:`` section), ``membership`` (the consumer group that hands out slots),
``slot`` (what one held slot runs: its pipeline, sources and ingress consumer) and ``runtime``
(the service shell's entry point). Imported by the shell only when ``cluster.enabled``.
"""
