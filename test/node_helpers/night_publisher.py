"""A camera-pair process: publish synthetic night pairs on visible/ and infrared/image_raw."""

from __future__ import annotations

import argparse
import sys
import time

import rclpy
from rclpy.node import Node
from rclpy.qos import qos_profile_sensor_data
from rclpy.utilities import remove_ros_args
from sensor_msgs.msg import Image
from std_msgs.msg import Header

from ivf_ros.io.synthetic import make_night_pair
from ivf_ros.nodes.ros_image import array_to_image_msg


def main(argv: list[str] | None = None) -> int:
    """Wait for the fusion node's subscriptions, publish --count pairs at --rate, exit.

    ROS arguments after --ros-args (e.g. -r __ns:=/car1) go to rclpy.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument('--count', type=int, default=5)
    parser.add_argument('--rate', type=float, default=5.0)
    parser.add_argument('--width', type=int, default=160)
    parser.add_argument('--height', type=int, default=128)
    parser.add_argument('--start', type=float, default=100.0, help='first stamp [s]')
    parser.add_argument('--thermal-bits', type=int, default=8, choices=(8, 16))
    parser.add_argument('--wait', type=float, default=20.0, help='max wait for subscribers [s]')
    options = parser.parse_args(remove_ros_args(['night_publisher', *argv])[1:])
    rclpy.init(args=['night_publisher', *argv])
    node = Node('night_publisher')
    visible_pub = node.create_publisher(Image, 'visible/image_raw', qos_profile_sensor_data)
    infrared_pub = node.create_publisher(Image, 'infrared/image_raw', qos_profile_sensor_data)
    deadline = time.monotonic() + options.wait
    while min(visible_pub.get_subscription_count(), infrared_pub.get_subscription_count()) < 1:
        if time.monotonic() > deadline:
            print('night_publisher: no subscriber appeared', file=sys.stderr)
            return 1
        time.sleep(0.05)
    thermal_encoding = 'mono8' if options.thermal_bits == 8 else 'mono16'
    for index in range(options.count):
        pair = make_night_pair(seed=1, width=options.width, height=options.height, frame=index,
                               thermal_bits=options.thermal_bits)
        stamp_ns = int(options.start * 1e9) + index * 100_000_000
        header = Header(frame_id='visible_camera')
        header.stamp.sec, header.stamp.nanosec = divmod(stamp_ns, 1_000_000_000)
        visible_pub.publish(array_to_image_msg(pair.visible, 'rgb8', header))
        infrared_header = Header(frame_id='thermal_camera', stamp=header.stamp)
        infrared_pub.publish(array_to_image_msg(pair.infrared, thermal_encoding, infrared_header))
        print(f'sent {stamp_ns}', flush=True)
        time.sleep(1.0 / options.rate)
    time.sleep(0.5)  # let the last best-effort samples leave before the participant goes
    node.destroy_node()
    rclpy.shutdown()
    return 0


if __name__ == '__main__':
    sys.exit(main())
