"""Receive sensor_msgs/Image frames; record each frame's name, content digest and latency.

Run as `python -m dds_helpers.image_subscriber` from test/. Stops after --count frames or
--timeout seconds and writes a JSON report to --output (or stdout).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
import time
from typing import Any

from dds_helpers.frames import message_digest
from dds_helpers.qos import add_qos_arguments, image_qos, ros_node


def parse_arguments(argv: list[str] | None = None) -> argparse.Namespace:
    """Return the command line of the subscriber."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_qos_arguments(parser)
    parser.add_argument('--count', type=int, required=True, help='frames to wait for')
    parser.add_argument('--timeout', type=float, default=30.0)
    parser.add_argument('--idle-timeout', type=float, default=0.0,
                        help='stop this many seconds after the last frame (0: never)')
    parser.add_argument('--no-digest', action='store_true', help='skip hashing (benchmarks)')
    parser.add_argument('--output', type=Path)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Collect frames until count, timeout or idle timeout; 0 when count frames arrived."""
    from rclpy.executors import SingleThreadedExecutor
    from sensor_msgs.msg import Image

    args = parse_arguments(argv)
    frames: list[dict[str, Any]] = []

    def on_image(message: Image) -> None:
        """Record one frame: latency first, so hashing does not inflate it."""
        received_ns = time.time_ns()
        sent_ns = message.header.stamp.sec * 10**9 + message.header.stamp.nanosec
        frames.append({
            'frame_id': message.header.frame_id,
            'latency_ns': received_ns - sent_ns,
            'size': len(message.data),
            'digest': None if args.no_digest else message_digest(message),
        })

    with ros_node('ivf_dds_image_subscriber') as node:
        node.create_subscription(
            Image, args.topic, on_image, image_qos(args.reliability, args.depth))
        executor = SingleThreadedExecutor(context=node.context)
        executor.add_node(node)
        deadline = time.monotonic() + args.timeout
        last_count, last_change = 0, time.monotonic()
        while len(frames) < args.count and time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.05)
            if len(frames) != last_count:
                last_count, last_change = len(frames), time.monotonic()
            elif args.idle_timeout and frames and (
                    time.monotonic() - last_change > args.idle_timeout):
                break
        executor.shutdown()
    report = json.dumps({'count': len(frames), 'frames': frames})
    if args.output:
        args.output.write_text(report)
    else:
        print(report, flush=True)
    return 0 if len(frames) >= args.count else 1


if __name__ == '__main__':
    raise SystemExit(main())
