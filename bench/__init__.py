"""Benchmarks run by hand (`make bench`): numbers printed, never asserted."""
