"""The source engine: what a source is, the stream, webhook and poll kinds, backfill and REST pacing, and the provider registry."""
