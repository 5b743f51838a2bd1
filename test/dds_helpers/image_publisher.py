"""Publish numbered synthetic sensor_msgs/Image frames, then wait for the subscriber to leave.

Run as `python -m dds_helpers.image_publisher` from test/. Each frame's header carries its name
(`<encoding>/<index>`) and the wall-clock time of publishing (for latency). Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import time

from dds_helpers.frames import ENCODINGS, frame_array, frame_id, HEIGHT, WIDTH
from dds_helpers.qos import add_qos_arguments, image_qos, ros_node


def parse_arguments(argv: list[str] | None = None) -> argparse.Namespace:
    """Return the command line of the publisher."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_qos_arguments(parser)
    parser.add_argument('--encodings', default=','.join(ENCODINGS))
    parser.add_argument('--count', type=int, default=5, help='frames per encoding')
    parser.add_argument('--rate', type=float, default=20.0, help='frames per second per encoding')
    parser.add_argument('--width', type=int, default=WIDTH)
    parser.add_argument('--height', type=int, default=HEIGHT)
    parser.add_argument('--match-timeout', type=float, default=20.0)
    parser.add_argument('--linger', type=float, default=20.0,
                        help='seconds to stay (serving resends) until the subscriber leaves')
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Publish the frames; exit 0 when all were handed to DDS, 2 when nobody subscribed."""
    from rclpy.executors import SingleThreadedExecutor
    from sensor_msgs.msg import Image
    from std_msgs.msg import Header

    from ivf_ros.io.image_codec import array_to_image_fields

    args = parse_arguments(argv)
    encodings = [name for name in args.encodings.split(',') if name]
    # Build every message before the clock starts: publishing, not rendering, is measured.
    messages = []
    for index in range(args.count):
        for encoding in encodings:
            fields = array_to_image_fields(
                frame_array(encoding, index, args.width, args.height), encoding)
            messages.append(Image(
                header=Header(frame_id=frame_id(encoding, index)), height=fields.height,
                width=fields.width, encoding=fields.encoding,
                is_bigendian=int(fields.is_bigendian), step=fields.step, data=fields.data))
    report = {'published': 0, 'publish_errors': 0, 'matched': False}
    with ros_node('ivf_dds_image_publisher') as node:
        publisher = node.create_publisher(
            Image, args.topic, image_qos(args.reliability, args.depth))
        executor = SingleThreadedExecutor(context=node.context)
        executor.add_node(node)
        deadline = time.monotonic() + args.match_timeout
        while publisher.get_subscription_count() == 0 and time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.05)
        if publisher.get_subscription_count() == 0:
            print(json.dumps(report), flush=True)
            return 2
        report['matched'] = True
        # The writer saw the reader; give the reader a moment to see the writer as well.
        time.sleep(0.3)
        period = 1.0 / (args.rate * len(encodings))
        next_time = time.monotonic()
        for message in messages:
            next_time += period
            stamp_ns = time.time_ns()
            message.header.stamp.sec, message.header.stamp.nanosec = divmod(stamp_ns, 10**9)
            try:
                publisher.publish(message)
                report['published'] += 1
            except Exception as error:  # noqa: BLE001  RCLError under a flood: count, go on
                report['publish_errors'] += 1
                report['last_error'] = str(error)
            executor.spin_once(timeout_sec=max(0.0, next_time - time.monotonic()))
        # Reliable delivery needs the writer alive until the reader has everything.
        deadline = time.monotonic() + args.linger
        while publisher.get_subscription_count() > 0 and time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.05)
        executor.shutdown()
    print(json.dumps(report), flush=True)
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
