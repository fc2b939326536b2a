"""Logs (JSON, redacted, rate-limited repeats) and Prometheus metrics, for every layer above."""
