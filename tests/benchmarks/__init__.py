"""Benchmark suite (``python -m tests.benchmarks``): figures next to same-run baselines, never timed tests."""
