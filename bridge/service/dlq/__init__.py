"""``transfer-bridge dlq``: read the dead-letter topic safely and replay it with today's parsers."""
