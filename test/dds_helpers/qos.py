"""QoS and rclpy session shared by the helper processes."""

from __future__ import annotations

import argparse
from collections.abc import Iterator
import contextlib
import signal
import sys
from typing import Any

RELIABILITIES = ('reliable', 'best_effort')


def add_qos_arguments(parser: argparse.ArgumentParser) -> None:
    """Add --topic, --reliability and --depth to a helper's command line."""
    parser.add_argument('--topic', default='ivf_dds_roundtrip')
    parser.add_argument('--reliability', choices=RELIABILITIES, default='reliable')
    parser.add_argument('--depth', type=int, default=10)


def image_qos(reliability: str, depth: int) -> Any:
    """Return a KEEP_LAST volatile QoS profile with the given reliability."""
    from rclpy.qos import QoSProfile, ReliabilityPolicy

    policy = (ReliabilityPolicy.RELIABLE if reliability == 'reliable'
              else ReliabilityPolicy.BEST_EFFORT)
    return QoSProfile(depth=depth, reliability=policy)


@contextlib.contextmanager
def ros_node(name: str) -> Iterator[Any]:
    """Yield an rclpy node; SIGTERM ends the process through the same clean shutdown."""
    import rclpy

    # A parent that gives up sends SIGTERM: leave DDS properly instead of dying mid-write.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(3))
    rclpy.init()
    node = rclpy.create_node(name)
    try:
        yield node
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
