"""Helpers for the DDS tests and scripts/bench_dds.py: image publisher/subscriber processes."""
