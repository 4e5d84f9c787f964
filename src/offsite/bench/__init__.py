"""Benchmarks: commands that print figures, measured against this machine's own limits."""
