"""Benchmarks of the DESIGN §5 targets: one command each, run.py for all (docs/performance.md)."""
