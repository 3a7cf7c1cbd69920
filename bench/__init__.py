"""Benchmarks: run each as a script (see bench/RESULTS.md)."""
