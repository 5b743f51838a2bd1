"""Replay a rosbag2 over DDS without ROS tools: raw CDR, original timing, /clock, remapping."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
import importlib
from pathlib import Path
import signal
import threading
import time
from typing import Any

import rclpy
from rclpy._rclpy_pybind11 import RCLError
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.publisher import Publisher
from rclpy.qos import (
    DurabilityPolicy,
    HistoryPolicy,
    QoSProfile,
    ReliabilityPolicy,
)
from rclpy.signals import SignalHandlerOptions
from rosgraph_msgs.msg import Clock

from ivf_ros.io.bagio import BagError, BagMessage, BagReader, split_stamp
from ivf_ros.pipeline.runtime import installed_signal_handlers

RELIABILITIES = ('reliable', 'best_effort', 'recorded')
MATCH_SETTLE_S = 0.5
SENT_HISTORY = 100_000   # publish times kept per topic (about 3 h of a 10 Hz camera)
MAX_DEPTH = 1000          # the most history a publisher keeps, whatever the bag says


def rclpy_arguments(ros_args: list[str] | None) -> list[str]:
    """Return the argv for rclpy.init of an ivf-bag tool: its own, never sys.argv."""
    # Never args=None: rclpy would then parse sys.argv, where rcl reads the CLI's own options
    # (`--remap /a:=/b`) as a deprecated global remap rule (a WARN, and a remap of every topic).
    return ['ivf-bag', '--ros-args', *ros_args] if ros_args else ['ivf-bag']


def set_from_a_thread(event: threading.Event) -> None:
    """Set event from a new thread (a signal handler's way: see play_bag)."""
    # The main thread may be inside event.wait(), holding the event's non-reentrant lock for a
    # moment; a handler running there that called set() itself would never return.
    threading.Thread(target=event.set, daemon=True).start()


def message_class(msgtype: str) -> type:
    """Import the rclpy class of a type name like 'sensor_msgs/msg/Image'."""
    package, _, name = msgtype.rpartition('/')
    try:
        return getattr(importlib.import_module(package.replace('/', '.')), name)
    except (ImportError, AttributeError):
        raise BagError(
            f'message type {msgtype} is not installed for rclpy (pip mode: vision_msgs comes '
            'from scripts/setup.sh)') from None


def parse_remaps(remaps: list[str] | None) -> dict[str, str]:
    """Parse 'from:=to' topic remappings as `ros2 bag play --remap` takes them."""
    result = {}
    for remap in remaps or []:
        source, sep, target = remap.partition(':=')
        if not sep or not source or not target:
            raise BagError(f'bad remap {remap!r}: expected /from/topic:=/to/topic')
        result[source] = target
    return result


@dataclass
class PlayStats:
    """What a playback sent: messages per topic, publish failures, loops, wall time."""

    published: dict[str, int] = field(default_factory=dict)
    failed: dict[str, int] = field(default_factory=dict)
    loops: int = 0
    wall_s: float = 0.0
    # topic -> (bag log time, wall-clock publish time) in ns, for latency measurements: the
    # last SENT_HISTORY per topic, so that a bag looped for hours does not grow without bound.
    sent: dict[str, deque[tuple[int, int]]] = field(default_factory=dict)
    paced_wait_s: float = 0.0
    pace_timeouts: int = 0
    skipped: dict[str, int] = field(default_factory=dict)  # unplayable topic -> its messages


@dataclass(frozen=True)
class Pacing:
    """Lockstep replay: hold each trigger frame until the graph is at most lag outputs behind."""

    output_topic: str           # e.g. /detections: one message per processed pair
    trigger_topic: str          # e.g. /camera/visible/image_raw: one message per pair
    lag: int = 1                # approximate-time pairing releases a pair on the next frame
    timeout_s: float = 30.0


class BagPlayer(Node):
    """Publish a bag's messages as raw CDR with the recorded timing (like `ros2 bag play`)."""

    def __init__(self, bag: str | Path, rate: float = 1.0, loop: bool = False, loops: int = 0,
                 start_offset_s: float = 0.0, topics: list[str] | None = None,
                 remap: dict[str, str] | None = None, clock_hz: float = 0.0,
                 reliability: str = 'reliable', pacing: Pacing | None = None,
                 node_name: str = 'ivf_bag_player',
                 stop_event: threading.Event | None = None) -> None:
        super().__init__(node_name)
        # Set before anything can raise: rclpy's shutdown destroys a half-built node too, and
        # destroy_node must then not hide the real BagError behind an AttributeError.
        self.pacing: Pacing | None = None
        self._reader: BagReader | None = None
        # Set (by play_bag's SIGINT/SIGTERM handler, or any thread) to end playback promptly.
        self.stop_event = stop_event or threading.Event()
        if rate <= 0:
            raise BagError(f'--rate must be > 0, got {rate}')
        if reliability not in RELIABILITIES:
            raise BagError(f'reliability must be one of {RELIABILITIES}, got {reliability!r}')
        self.bag = Path(bag)
        self.rate = rate
        self.loops = 0 if loop and not loops else max(1, loops)  # 0 = forever
        self.start_offset_ns = int(start_offset_s * 1e9)
        self.clock_period_s = 1.0 / clock_hz if clock_hz > 0 else 0.0
        reader = BagReader(self.bag)
        reader.__enter__()
        self._reader = reader
        available = self._reader.topics
        requested = list(topics) if topics else sorted(available)
        missing = [topic for topic in requested if topic not in available]
        if missing:
            raise BagError(f'{self.bag} has no topic(s) {missing}; it has {sorted(available)}')
        remap = remap or {}
        self._topic_publishers: dict[str, Publisher] = {}
        skipped: dict[str, int] = {}
        for topic in requested:
            try:
                message_type = message_class(available[topic])
            except BagError as error:
                if topics:      # asked for by name: refuse, as for a missing topic
                    raise BagError(f'cannot play {topic}: {error}') from None
                # Like `ros2 bag play`: a topic of a type rclpy lacks (a robot's own messages)
                # is left out, and said so, rather than refusing the camera topics beside it.
                skipped[topic] = self._reader.counts.get(topic, 0)
                self.get_logger().warning(
                    f'not playing {topic} ({skipped[topic]} message(s)): {error}')
                continue
            self._topic_publishers[topic] = self.create_publisher(
                message_type, remap.get(topic, topic), self._qos(topic, reliability))
        self.topics = list(self._topic_publishers)
        if not self.topics:
            raise BagError(f'{self.bag} has no topic whose type rclpy has: {skipped}')
        self._clock = self.create_publisher(
            Clock, '/clock', QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE)) \
            if self.clock_period_s else None
        self.stats = PlayStats({topic: 0 for topic in self.topics},
                               {topic: 0 for topic in self.topics},
                               sent={topic: deque(maxlen=SENT_HISTORY) for topic in self.topics},
                               skipped=skipped)
        self._outputs = 0
        self._output_event = threading.Event()
        if pacing is not None:
            if pacing.trigger_topic not in self.topics:
                raise BagError(f'pace trigger {pacing.trigger_topic} is not played')
            self.pacing = pacing
            self._pace_subscription = None
            self._executor = SingleThreadedExecutor()
            self._executor.add_node(self)
            self._spinner = threading.Thread(target=self._executor.spin, daemon=True)
            self._spinner.start()

    def _subscribe_pace_topic(self, timeout_s: float) -> None:
        """Count the pace topic's messages (raw: any type); waits for it to appear."""
        assert self.pacing is not None
        deadline = time.monotonic() + timeout_s
        while self._pace_subscription is None and time.monotonic() < deadline:
            types = dict(self.get_topic_names_and_types()).get(self.pacing.output_topic)
            if types:
                self._pace_subscription = self.create_subscription(
                    message_class(types[0]), self.pacing.output_topic, self._on_output,
                    QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE), raw=True)
                return
            if self.stop_event.wait(0.05):
                return                      # stopping: play() publishes nothing
        raise BagError(f'no publisher of {self.pacing.output_topic} after {timeout_s:.0f} s')

    def _on_output(self, _raw: bytes) -> None:
        self._outputs += 1
        self._output_event.set()

    def _wait_for_graph(self, triggers_sent: int) -> int:
        """Block until outputs >= triggers_sent - lag; return the nanoseconds waited."""
        assert self.pacing is not None
        started = time.monotonic_ns()
        deadline = time.monotonic() + self.pacing.timeout_s
        # A loop's last pair is released too: the restart ends its timeline in the synchroniser.
        while self._outputs < triggers_sent - self.pacing.lag and not self.stopping():
            if time.monotonic() > deadline:
                self.stats.pace_timeouts += 1
                break
            self._output_event.wait(0.05)
            self._output_event.clear()
        waited = time.monotonic_ns() - started
        self.stats.paced_wait_s += waited / 1e9
        return waited

    def _qos(self, topic: str, reliability: str) -> QoSProfile:
        """Return the publisher QoS: reliable by default, so every camera subscription matches."""
        recorded = self._reader.qos(topic)
        # The recorded depth, within reason: metadata.yaml is untrusted, and a depth rmw cannot
        # take (over 2^32) raised a TypeError traceback from rclpy.
        depth = min(MAX_DEPTH, max([int(profile.depth) for profile in recorded] + [10]))
        if reliability == 'recorded' and recorded:
            # Like `ros2 bag play`: reuse the recorded reliability when every publisher agreed.
            names = {profile.reliability.name for profile in recorded}
            reliability = 'best_effort' if names == {'BEST_EFFORT'} else 'reliable'
        elif reliability == 'recorded':
            reliability = 'reliable'
        # Latched when every recorded publisher was (like `ros2 bag play`): a transient-local
        # subscription (/tf_static, a latched camera_info) matches no volatile publisher, and
        # a transient-local publisher still serves volatile subscriptions.
        latched = bool(recorded) and all(
            profile.durability.name == 'TRANSIENT_LOCAL' for profile in recorded)
        return QoSProfile(
            history=HistoryPolicy.KEEP_LAST, depth=depth,
            reliability=(ReliabilityPolicy.BEST_EFFORT if reliability == 'best_effort'
                         else ReliabilityPolicy.RELIABLE),
            durability=(DurabilityPolicy.TRANSIENT_LOCAL if latched
                        else DurabilityPolicy.VOLATILE))

    def stopping(self) -> bool:
        """Return whether playback must end: stop_event set, or rclpy shut down (a signal)."""
        # Off the main thread rclpy keeps its own signal handlers, which only shut the context
        # down: a --loop would otherwise go on publishing into destroyed publishers.
        return self.stop_event.is_set() or not self.context.ok()

    def wait_for_subscribers(self, topics: list[str] | None = None, count: int = 1,
                             timeout_s: float = 10.0) -> bool:
        """Wait until each (original-named) topic has count matched subscribers."""
        deadline = time.monotonic() + timeout_s
        wanted = [self._topic_publishers[topic] for topic in (topics or self.topics)]
        while time.monotonic() < deadline:
            if all(publisher.get_subscription_count() >= count for publisher in wanted):
                # Our side matched first; give the readers' side time to match us too, or a
                # best-effort reader misses the first frame.
                self.stop_event.wait(MATCH_SETTLE_S)
                return True
            if self.stop_event.wait(0.02):
                return False
        return False

    def publish_clock(self, bag_time_ns: int) -> None:
        """Publish the bag time on /clock (for nodes with use_sim_time)."""
        if self._clock is not None:
            sec, nanosec = split_stamp(bag_time_ns)
            message = Clock()
            message.clock.sec, message.clock.nanosec = sec, nanosec
            self._clock.publish(message)

    def play(self) -> PlayStats:
        """Play the bag (all loops) in the calling thread; return what was published."""
        if self.pacing is not None and self._pace_subscription is None:
            self._subscribe_pace_topic(self.pacing.timeout_s)
        self.get_logger().info(
            f'playing {len(self.topics)} topic(s) of {self.bag} at rate {self.rate:g}'
            + (' (looping)' if self.loops == 0 else f' ({self.loops} loop(s))'))
        started = time.monotonic()
        while (self.loops == 0 or self.stats.loops < self.loops) and not self.stopping():
            played = self._play_once()
            if self.stopping():
                break                       # a loop cut short is not counted
            if not played:
                # Nothing at or after --start: a --loop would spin on an empty pass forever.
                raise BagError(f'nothing to play in {self.bag}'
                               + (f' from --start {self.start_offset_ns / 1e9:g} s'
                                  if self.start_offset_ns else '')
                               + f' on {self.topics}')
            self.stats.loops += 1
        self.stats.wall_s = time.monotonic() - started
        return self.stats

    def _play_once(self) -> int:
        """Play the bag once; return how many messages were due (0: none after --start)."""
        start_ns = self._reader.start_ns + self.start_offset_ns if self.start_offset_ns else None
        first: BagMessage | None = None
        wall_start = bag_start = 0
        next_clock = 0.0
        due_count = 0
        for message in self._reader.messages(self.topics, start_ns=start_ns):
            if self.stopping():
                break
            due_count += 1
            if first is None:
                # Playback starts at once with the first message at or after --start.
                first = message
                bag_start = message.log_time_ns
                wall_start = time.monotonic_ns()
            if self.pacing is not None and message.topic == self.pacing.trigger_topic:
                # Lockstep: the bag's timeline pauses while the graph catches up.
                wall_start += self._wait_for_graph(self.stats.published[message.topic])
            due = wall_start + (message.log_time_ns - bag_start) / self.rate
            # Sleep to the message's time, ticking /clock meanwhile (bag time jumps back on loop).
            while (now := time.monotonic_ns()) < due:
                if self._clock is not None and now / 1e9 >= next_clock:
                    self.publish_clock(bag_start + int((now - wall_start) * self.rate))
                    next_clock = now / 1e9 + self.clock_period_s
                if self.stop_event.wait(min((due - now) / 1e9, self.clock_period_s or 1.0)):
                    return due_count
            self.publish_clock(message.log_time_ns)
            try:
                self._topic_publishers[message.topic].publish(message.raw)
                self.stats.sent[message.topic].append((message.log_time_ns, time.time_ns()))
                self.stats.published[message.topic] += 1
            except RCLError:
                # Fast DDS can refuse a publish under a flood: count it, never stop playback.
                self.stats.failed[message.topic] += 1
        return due_count

    def destroy_node(self) -> None:
        """Close the bag and destroy the node."""
        if self.pacing is not None:
            self._executor.shutdown()
            # Join the spinning thread: a thread still inside rcl at exit aborts the process.
            self._spinner.join(timeout=5.0)
            self.pacing = None
        if self._reader is not None:
            self._reader.__exit__(None, None, None)
            self._reader = None
        super().destroy_node()


def play_bag(bag: str | Path, wait_for_subscribers: int = 0, wait_timeout_s: float = 10.0,
             delay_s: float = 0.0, ros_args: list[str] | None = None,
             **options: Any) -> PlayStats:
    """Initialise rclpy, play a bag with BagPlayer options, shut down; return the stats.

    SIGINT or SIGTERM (in the main thread) ends playback at once, the node is destroyed and
    KeyboardInterrupt raised; a second signal raises it at once.
    """
    stop = threading.Event()
    signals: list[int] = []
    tearing_down = threading.Event()

    def request_stop(signum: int, _frame: object) -> None:
        signals.append(signum)
        if stop.is_set() and not tearing_down.is_set():
            # A second signal during playback: at once, whatever the player is doing. Not
            # during teardown, which must finish (a thread left inside rcl aborts the process).
            raise KeyboardInterrupt(signal.Signals(signum).name)
        set_from_a_thread(stop)

    # Our own handlers: rclpy's SIGTERM handler only shuts the context down, and a --loop
    # then played on forever into dead publishers (SIGINT raised anywhere, mid-publish).
    in_main_thread = threading.current_thread() is threading.main_thread()
    with installed_signal_handlers({number: request_stop for number in (
            signal.SIGINT, signal.SIGTERM)} if in_main_thread else {}):
        rclpy.init(args=rclpy_arguments(ros_args),
                   signal_handler_options=(SignalHandlerOptions.NO if in_main_thread
                                           else SignalHandlerOptions.ALL))
        try:
            player = BagPlayer(bag, stop_event=stop, **options)
            try:
                if wait_for_subscribers and not player.wait_for_subscribers(
                        count=wait_for_subscribers, timeout_s=wait_timeout_s) \
                        and not stop.is_set():
                    player.get_logger().warning(
                        f'not every topic had {wait_for_subscribers} subscriber(s) after '
                        f'{wait_timeout_s:.0f} s: playing anyway')
                stop.wait(delay_s)
                stats = player.play()
                tearing_down.set()
                if signals:
                    player.get_logger().warning(
                        f'stopped by {signal.Signals(signals[0]).name}: '
                        f'{sum(stats.published.values())} message(s) played')
                else:
                    # Reliable writers keep unacknowledged samples; give readers a moment.
                    time.sleep(0.2)
            finally:
                tearing_down.set()
                player.destroy_node()
        finally:
            rclpy.try_shutdown()
    if signals:
        raise KeyboardInterrupt(signal.Signals(signals[0]).name)
    return stats
