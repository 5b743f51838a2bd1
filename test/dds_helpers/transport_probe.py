"""Start one rclpy node and print, as JSON, the Fast DDS transports it really opened (Linux).

Run as `python -m dds_helpers.transport_probe` from test/: lists the shared-memory segments the
process maps (name, bytes) and the local addresses of its UDP sockets, which shows whether a
Fast DDS XML profile took effect (a mistyped profile is only logged, and defaults are used).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
import socket
import struct
import time


def mapped_shm_segments() -> dict[str, int]:
    """Return {name: size in bytes} of the Fast DDS data segments this process maps."""
    segments = {}
    for line in Path('/proc/self/maps').read_text().splitlines():
        path = line.split()[-1]
        name = os.path.basename(path)
        # fastdds_<id> are data segments; *_el are locks and fastdds_port* are listener queues.
        if path.startswith('/dev/shm/fastdds_') and not name.startswith('fastdds_port') \
                and not name.endswith('_el') and os.path.exists(path):
            segments[name] = os.path.getsize(path)
    return segments


def udp_local_addresses() -> list[str]:
    """Return 'ip:port' of every UDPv4 socket this process owns."""
    inodes = set()
    for fd in Path('/proc/self/fd').iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith('socket:['):
            inodes.add(target[len('socket:['):-1])
    addresses = []
    for line in Path('/proc/net/udp').read_text().splitlines()[1:]:
        fields = line.split()
        if fields[9] in inodes:
            address, port = fields[1].split(':')
            # /proc/net/udp writes the IPv4 address as a host-order (little-endian) hex word.
            ip = socket.inet_ntoa(struct.pack('<I', int(address, 16)))
            addresses.append(f'{ip}:{int(port, 16)}')
    return sorted(addresses)


def main() -> int:
    """Create a node with an Image publisher and subscription, then report its transports."""
    from sensor_msgs.msg import Image

    from dds_helpers.qos import image_qos, ros_node

    with ros_node('ivf_dds_transport_probe') as node:
        node.create_publisher(Image, 'ivf_transport_probe', image_qos('reliable', 1))
        node.create_subscription(Image, 'ivf_transport_probe', lambda _: None,
                                 image_qos('reliable', 1))
        time.sleep(0.5)
        report = {'shm_segments': mapped_shm_segments(), 'udp': udp_local_addresses()}
    print(json.dumps(report), flush=True)
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
