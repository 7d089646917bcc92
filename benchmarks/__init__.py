"""Benchmarks (not tests): ``python -m benchmarks.bench_control_plane``; see ``benchmarks/RESULTS.md``."""
