"""Benchmark suites behind ``gqemu bench`` (top layer)."""
