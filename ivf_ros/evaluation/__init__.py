"""Judging fused images: fusion metrics, classical baselines, detection AP, reports and plots.

May import io, fusion and pipeline; never rclpy, never training or the adapters.
"""
