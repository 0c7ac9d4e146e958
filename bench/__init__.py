"""Benchmarks of reqworker (see bench/README.md)."""
