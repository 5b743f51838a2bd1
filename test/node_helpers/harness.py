"""Node-test harness: the graph in a child process, a probe node (camera + observer) in pytest."""

from __future__ import annotations

from collections.abc import Callable
import os
from pathlib import Path
import re
import signal
import subprocess
import sys
import threading
import time
from typing import Any

import numpy as np
import rclpy
from rclpy.context import Context
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.parameter_client import AsyncParameterClient
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image
from std_msgs.msg import Header
import yaml

from ivf_ros.nodes.ros_image import array_to_image_msg

REPO_ROOT = Path(__file__).resolve().parents[2]
STAMP_STEP_NS = 100_000_000  # 10 Hz cameras
NIGHT_PUBLISHER = Path(__file__).resolve().parent / 'night_publisher.py'


def write_params(path: Path, fusion: dict[str, Any], detection: dict[str, Any]) -> Path:
    """Write a ROS params file for the two nodes."""
    document = {'/**/fusion_node': {'ros__parameters': fusion},
                '/**/detection_node': {'ros__parameters': detection}}
    path.write_text(yaml.safe_dump(document))
    return path


class ChildProcess:
    """A python child process (same venv and ROS domain) logging to a file; always stopped."""

    def __init__(self, args: list[str], log_path: Path, cwd: Path | None = None) -> None:
        self.log_path = log_path
        env = dict(os.environ, RCUTILS_LOGGING_BUFFERED_STREAM='0', PYTHONUNBUFFERED='1')
        self._log = log_path.open('w')
        self.process = subprocess.Popen(
            [sys.executable, *args], stdout=self._log, stderr=subprocess.STDOUT, env=env,
            cwd=str(cwd or REPO_ROOT))

    def log(self) -> str:
        """Return everything the child has logged so far."""
        return self.log_path.read_text(errors='replace')

    def alive(self) -> bool:
        """Return whether the child still runs."""
        return self.process.poll() is None

    def wait_for_log(self, pattern: str, timeout: float) -> re.Match[str]:
        """Wait until the log matches pattern (regex); fail with the log tail otherwise."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            match = re.search(pattern, self.log())
            if match:
                return match
            if not self.alive():
                break
            time.sleep(0.1)
        raise AssertionError(f'{pattern!r} not in the log (alive={self.alive()}):\n'
                             f'{self.log()[-3000:]}')

    def stop(self, timeout: float = 10.0) -> int | None:
        """Interrupt (Ctrl-C), then kill after timeout; return the exit code."""
        if self.alive():
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self._log.close()
        return self.process.returncode


def publish_night_pairs(log_path: Path, count: int, width: int, height: int, *extra: str,
                        timeout: float = 60.0) -> set[int]:
    """Run night_publisher.py (4 Hz, stamps from 50 s) to the end; return the stamps it sent."""
    publisher = ChildProcess(
        [str(NIGHT_PUBLISHER), '--count', str(count), '--rate', '4', '--width', str(width),
         '--height', str(height), '--start', '50', *extra], log_path)
    try:
        publisher.process.wait(timeout)
    finally:
        publisher.stop()
    sent = {int(stamp) for stamp in re.findall(r'sent (\d+)', publisher.log())}
    assert len(sent) == count, publisher.log()
    return sent


def stamp_ns(header: Header) -> int:
    """Return a header's stamp in nanoseconds."""
    return header.stamp.sec * 1_000_000_000 + header.stamp.nanosec


def make_header(stamp: int, frame_id: str) -> Header:
    """Return a header with a nanosecond stamp."""
    header = Header(frame_id=frame_id)
    header.stamp.sec, header.stamp.nanosec = divmod(stamp, 1_000_000_000)
    return header


class Probe:
    """Publishes camera frames and records every output of the graph, spinning in a thread."""

    def __init__(self, outputs: dict[str, type]) -> None:
        self.context = Context()
        rclpy.init(context=self.context)
        self.node = Node('probe', context=self.context)
        # Reliable publishers also serve best-effort subscriptions.
        qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        self.visible_pub = self.node.create_publisher(Image, 'visible/image_raw', qos)
        self.infrared_pub = self.node.create_publisher(Image, 'infrared/image_raw', qos)
        self.received: dict[str, list[Any]] = {topic: [] for topic in outputs}
        for topic, msg_type in outputs.items():
            self.node.create_subscription(
                msg_type, topic, lambda msg, topic=topic: self.received[topic].append(msg), 10)
        self._executor = SingleThreadedExecutor(context=self.context)
        self._executor.add_node(self.node)
        self._thread = threading.Thread(target=self._executor.spin, daemon=True)
        self._thread.start()
        self._next_stamp = 100 * 1_000_000_000
        self._parameter_clients: dict[str, AsyncParameterClient] = {}

    def next_stamp(self) -> int:
        """Return a fresh camera stamp (10 Hz timeline)."""
        self._next_stamp += STAMP_STEP_NS
        return self._next_stamp

    def jump_stamps(self, seconds: float) -> None:
        """Move the camera timeline (negative: a bag looping back)."""
        self._next_stamp += int(seconds * 1e9)

    def publish_visible(self, stamp: int, rgb: np.ndarray, encoding: str = 'rgb8') -> None:
        """Publish one visible frame."""
        self.visible_pub.publish(array_to_image_msg(rgb, encoding,
                                                    make_header(stamp, 'visible_camera')))

    def publish_infrared(self, stamp: int, infrared: np.ndarray, encoding: str = 'mono8') -> None:
        """Publish one infrared frame."""
        self.infrared_pub.publish(array_to_image_msg(infrared, encoding,
                                                     make_header(stamp, 'thermal_camera')))

    def stamps(self, topic: str) -> set[int]:
        """Return the stamps received on topic."""
        return {stamp_ns(msg.header) for msg in list(self.received[topic])}

    def wait_for(self, predicate: Callable[[], bool], timeout: float) -> bool:
        """Poll predicate until true or timeout."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return True
            time.sleep(0.05)
        return predicate()

    def wait_for_subscribers(self, topic_counts: dict[str, int], timeout: float) -> bool:
        """Wait until each topic has at least the given number of subscriptions."""
        return self.wait_for(lambda: all(
            self.node.count_subscribers(topic) >= count
            for topic, count in topic_counts.items()), timeout)

    def set_parameters(self, node_name: str, values: dict[str, Any],
                       timeout: float = 10.0) -> list[Any]:
        """Set parameters (values or typed Parameters) on a remote node; return the results."""
        client = self._parameter_clients.get(node_name)
        if client is None:
            client = self._parameter_clients[node_name] = AsyncParameterClient(
                self.node, node_name)
        assert client.wait_for_services(timeout), f'no parameter services on {node_name}'
        future = client.set_parameters([
            value if isinstance(value, Parameter) else Parameter(name, value=value)
            for name, value in values.items()])
        assert self.wait_for(future.done, timeout), f'set_parameters on {node_name} hung'
        return list(future.result().results)

    def call(self, service_type: type, name: str, request: object,
             timeout: float = 15.0) -> Any:
        """Call a service of the graph and return the response."""
        client = self.node.create_client(service_type, name)
        try:
            assert client.wait_for_service(timeout), f'service {name} not available'
            future = client.call_async(request)
            assert self.wait_for(future.done, timeout), f'{name} did not answer'
            return future.result()
        finally:
            self.node.destroy_client(client)

    def close(self) -> None:
        """Stop spinning and shut the probe's context down."""
        self._executor.shutdown()
        self.node.destroy_node()
        self.context.try_shutdown()
        self._thread.join(5)
