"""Helpers for the node tests: a tiny YOLO, publisher and graph processes."""
