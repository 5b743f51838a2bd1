"""Record topics raw into a rosbag2 without ROS tools: QoS adapted to publishers, nothing lost."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
import signal
import threading
import time

import rclpy
from rclpy.clock import Clock, ClockType
from rclpy.event_handler import QoSRequestedIncompatibleQoSInfo, SubscriptionEventCallbacks
from rclpy.node import Node
from rclpy.qos import (
    DurabilityPolicy,
    HistoryPolicy,
    qos_policy_name_from_kind,
    QoSProfile,
    ReliabilityPolicy,
)
from rclpy.signals import SignalHandlerOptions
from rosbags.interfaces import (
    Qos,
    QosDurability,
    QosHistory,
    QosLiveliness,
    QosReliability,
    QosTime,
)

from ivf_ros.io.bagio import BagError, BagWriter, Storage, typestore
from ivf_ros.nodes.bag_player import message_class, rclpy_arguments, set_from_a_thread
from ivf_ros.pipeline.runtime import installed_signal_handlers

# Deep enough that a burst of 640x512 frames waits in the reader instead of being overwritten.
RECORD_DEPTH = 1000
# After a stop request, keep taking what the DDS readers still hold until they stay empty this
# long, but never longer than DRAIN_MAX_S: a live camera never pauses, and Ctrl-C must stop.
DRAIN_QUIET_S = 0.3
DRAIN_MAX_S = 1.0
# Crash safety: what was written is committed to disk every FLUSH_MESSAGES messages or
# FLUSH_PERIOD_S seconds, so a killed recorder loses at most one such chunk (`ivf-bag reindex`
# rebuilds the bag's metadata.yaml afterwards).
FLUSH_MESSAGES = 50
FLUSH_PERIOD_S = 1.0


def _time(duration: object) -> QosTime:
    nanoseconds = int(getattr(duration, 'nanoseconds', 0))
    return QosTime(nanoseconds // 1_000_000_000, nanoseconds % 1_000_000_000)


def rosbags_qos(profile: QoSProfile) -> Qos:
    """Convert an rclpy QoSProfile (a publisher's offer) to the rosbags/metadata.yaml form."""
    def policy(enum: type, value: object) -> object:
        return enum[getattr(value, 'name', 'UNKNOWN').upper()] \
            if getattr(value, 'name', '').upper() in enum.__members__ else enum.UNKNOWN

    return Qos(
        history=policy(QosHistory, profile.history), depth=int(profile.depth),
        reliability=policy(QosReliability, profile.reliability),
        durability=policy(QosDurability, profile.durability),
        deadline=_time(profile.deadline), lifespan=_time(profile.lifespan),
        liveliness=policy(QosLiveliness, profile.liveliness),
        liveliness_lease_duration=_time(profile.liveliness_lease_duration),
        avoid_ros_namespace_conventions=bool(profile.avoid_ros_namespace_conventions))


def adapted_qos(offered: list[QoSProfile]) -> QoSProfile:
    """Return a subscription QoS matching every publisher (reliable only if all offer it)."""
    reliable = bool(offered) and all(
        profile.reliability == ReliabilityPolicy.RELIABLE for profile in offered)
    latched = bool(offered) and all(
        profile.durability == DurabilityPolicy.TRANSIENT_LOCAL for profile in offered)
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST, depth=RECORD_DEPTH,
        reliability=ReliabilityPolicy.RELIABLE if reliable else ReliabilityPolicy.BEST_EFFORT,
        durability=DurabilityPolicy.TRANSIENT_LOCAL if latched else DurabilityPolicy.VOLATILE)


@dataclass
class RecordStats:
    """Messages received and written per topic (equal unless the disk failed)."""

    received: dict[str, int] = field(default_factory=dict)
    written: dict[str, int] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)


class BagRecorder(Node):
    """Subscribe raw to topics as they appear and write each message as received."""

    def __init__(self, output: str | Path, topics: list[str], storage: Storage = 'sqlite3',
                 overwrite: bool = False, node_name: str = 'ivf_bag_recorder') -> None:
        super().__init__(node_name)
        if not topics:
            raise BagError('record needs at least one topic')
        # Names as `ros2 bag record` takes them: relative ones resolve against the node's
        # namespace (and remaps), so 'visible/image_raw' means '/visible/image_raw'.
        self.wanted = list(dict.fromkeys(self.resolve_topic_name(topic) for topic in topics))
        self.writer = BagWriter(output, storage, overwrite).__enter__()
        self.stats = RecordStats({topic: 0 for topic in self.wanted},
                                 {topic: 0 for topic in self.wanted})
        self._lock = threading.Lock()
        self._topic_subscriptions: dict[str, object] = {}
        # With use_sim_time the node clock reads 0 until the first /clock arrives. rosbag2 waits
        # for that /clock before subscribing (ros2/rosbag2#1378), which can miss the first
        # frames; we subscribe at once and hold what comes early, writing it at the first
        # clock time, so nothing is lost and no message is stamped 1970.
        self._sim_time = bool(self.get_parameter('use_sim_time').value)
        self._held: deque[tuple[str, bytes]] = deque()
        self._unflushed = 0
        self._flushed_at = time.monotonic()
        self.ready = threading.Event()
        self._discover()
        # Topics appear whenever their publishers start: look again until all are subscribed.
        # A steady clock: with use_sim_time a ROS-time timer would wait for the first /clock.
        self._discovery_timer = self.create_timer(
            0.1, self._discover, clock=Clock(clock_type=ClockType.STEADY_TIME))

    def _discover(self) -> None:
        """Subscribe to every wanted topic that now has a publisher with a known type."""
        graph = dict(self.get_topic_names_and_types())
        for topic in self.wanted:
            if topic in self._topic_subscriptions or topic not in graph:
                continue
            offered = [info.qos_profile for info in self.get_publishers_info_by_topic(topic)]
            if not offered:
                continue
            msgtype = graph[topic][0]
            try:
                if msgtype not in typestore().fielddefs:
                    raise BagError(f'no message definition for {msgtype}')
                self.writer.add_topic(topic, msgtype, [rosbags_qos(q) for q in offered])
                self._topic_subscriptions[topic] = self.create_subscription(
                    message_class(msgtype), topic, self._callback(topic), adapted_qos(offered),
                    raw=True, event_callbacks=SubscriptionEventCallbacks(
                        incompatible_qos=self._incompatible_callback(topic)))
            except BagError as error:
                self.stats.errors[topic] = str(error)
                self.get_logger().error(f'cannot record {topic}: {error}')
                self._topic_subscriptions[topic] = None
                continue
            self.get_logger().info(f'recording {topic} ({msgtype})')
        if len(self._topic_subscriptions) == len(self.wanted):
            self.ready.set()

    def _callback(self, topic: str) -> Callable[[bytes], None]:
        def record(raw: bytes) -> None:
            stamp = self.get_clock().now().nanoseconds
            with self._lock:
                self.stats.received[topic] += 1
                if self._sim_time and stamp == 0:
                    self._held.append((topic, raw))          # no /clock yet
                    return
                self._write_held(stamp)
                try:
                    self.writer.write_raw(topic, stamp, raw)
                    self.stats.written[topic] += 1
                    self._unflushed += 1
                    if (self._unflushed >= FLUSH_MESSAGES
                            or time.monotonic() - self._flushed_at >= FLUSH_PERIOD_S):
                        self.writer.flush()
                        self._unflushed, self._flushed_at = 0, time.monotonic()
                except Exception as error:  # noqa: BLE001 - storage errors come in many types
                    self._write_failed(topic, error)
        return record

    def _incompatible_callback(
            self, topic: str) -> Callable[[QoSRequestedIncompatibleQoSInfo], None]:
        """Return the handler that reports a topic's publishers the subscription cannot hear."""
        def incompatible(info: QoSRequestedIncompatibleQoSInfo) -> None:
            # The subscription QoS suits the publishers seen when it was made; one that starts
            # later offering less (best effort, volatile) is never heard. rclpy only logged a
            # WARN: the summary said everything was recorded and the exit code was 0.
            error = ('a publisher offers an incompatible '
                     f'{qos_policy_name_from_kind(info.last_policy_kind).lower()} QoS (seen '
                     f'{info.total_count} time(s)): its messages are not recorded')
            with self._lock:
                self.stats.errors[topic] = error
            self.get_logger().error(f'{topic}: {error}')
        return incompatible

    def _write_failed(self, topic: str, error: Exception) -> None:
        """Keep a failed write's error under its topic; log the first one of each topic."""
        # A full disk or a storage file changed under the recorder: keep receiving, so that
        # the counts say how many were lost.
        if topic not in self.stats.errors:
            self.get_logger().error(f'cannot write {topic}: {error}')
        self.stats.errors[topic] = str(error)

    def _write_held(self, stamp: int) -> None:
        """Write the messages held for the first /clock at stamp (caller holds the lock)."""
        # Oldest first, each taken off before its write: one that cannot be written is lost
        # (received minus written says so) instead of blocking those behind it, and none is
        # written twice.
        while self._held:
            topic, raw = self._held.popleft()
            try:
                self.writer.write_raw(topic, stamp, raw)
                self.stats.written[topic] += 1
            except Exception as error:  # noqa: BLE001 - storage errors come in many types
                self._write_failed(topic, error)

    def missing_topics(self) -> list[str]:
        """Return the wanted topics that never appeared (no publisher was ever seen)."""
        return [topic for topic in self.wanted if topic not in self._topic_subscriptions]

    def close(self) -> RecordStats:
        """Stop recording, write metadata.yaml; return the counts."""
        for topic in self.missing_topics():
            self.get_logger().warning(f'{topic} never appeared: nothing recorded from it')
        with self._lock:
            try:
                if self._held:
                    stamp = self.get_clock().now().nanoseconds
                    if stamp == 0:
                        self.get_logger().warning(
                            f'use_sim_time but no /clock arrived: {len(self._held)} message(s) '
                            'written at time 0')
                    self._write_held(stamp)   # a failed write is counted, not raised
            finally:
                self.writer.close()  # metadata.yaml for what was written, whatever failed
        return self.stats


def record_bag(output: str | Path, topics: list[str], storage: Storage = 'sqlite3',
               overwrite: bool = False, duration_s: float = 0.0,
               ros_args: list[str] | None = None,
               on_ready: Callable[[], None] | None = None,
               on_progress: Callable[[int], None] | None = None,
               progress_every: int = 0) -> RecordStats:
    """Record until SIGINT/SIGTERM (or duration_s), then drain the queues; return the counts.

    on_progress(received) is called each time another progress_every messages were written.
    """
    stop = threading.Event()
    # Our own handlers: rclpy's would shut the context down before the queues are drained.
    with installed_signal_handlers({number: lambda *_: set_from_a_thread(stop)
                                    for number in (signal.SIGINT, signal.SIGTERM)}):
        rclpy.init(args=rclpy_arguments(ros_args), signal_handler_options=SignalHandlerOptions.NO)
        recorder = None
        try:
            recorder = BagRecorder(output, topics, storage, overwrite)
            deadline = time.monotonic() + duration_s if duration_s > 0 else None
            announced = False
            reported = 0
            while not stop.is_set() and (deadline is None or time.monotonic() < deadline):
                rclpy.spin_once(recorder, timeout_sec=0.05)
                received = sum(recorder.stats.received.values())
                if on_progress is not None and progress_every and (
                        received - reported >= progress_every):
                    reported = received
                    on_progress(received)
                if not announced and recorder.ready.is_set():
                    announced = True
                    if on_ready is not None:
                        on_ready()
            # Take what is still queued in the DDS readers: count in = count written.
            quiet_since = stopped = time.monotonic()
            while (time.monotonic() - quiet_since < DRAIN_QUIET_S
                   and time.monotonic() - stopped < DRAIN_MAX_S):
                before = sum(recorder.stats.received.values())
                rclpy.spin_once(recorder, timeout_sec=0.05)
                if sum(recorder.stats.received.values()) != before:
                    quiet_since = time.monotonic()
        finally:
            try:
                stats = recorder.close() if recorder is not None else RecordStats()
            finally:  # a close that raises (disk full) still leaves ROS as found
                if recorder is not None:
                    recorder.destroy_node()
                rclpy.try_shutdown()
        return stats
