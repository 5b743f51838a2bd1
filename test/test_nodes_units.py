"""The nodes' pure helpers: registration, newest-only worker, rates, parameter descriptors."""

from __future__ import annotations

from collections.abc import Callable
import threading
import time
from types import SimpleNamespace

import numpy as np
import pytest

from ivf_ros.nodes.param_specs import FUSION_PARAMS, NODE_PARAMS, spec_by_name
from ivf_ros.pipeline.registration import homography_matrix, register_infrared
from ivf_ros.pipeline.runtime import LatencyStats, LatestWorker, RateMeter, Throttle


def test_identity_homography_is_resize_only() -> None:
    assert homography_matrix([1, 0, 0, 0, 1, 0, 0, 0, 1]) is None
    assert homography_matrix([2, 0, 0, 0, 2, 0, 0, 0, 2]) is None  # scale-free


def test_singular_or_short_homography_is_rejected() -> None:
    with pytest.raises(ValueError, match='singular'):
        homography_matrix([0.0] * 9)
    with pytest.raises(ValueError, match='9'):
        homography_matrix([1.0, 0.0])


def test_register_resizes_then_warps() -> None:
    infrared = np.zeros((64, 80), np.uint8)
    infrared[10:20, 10:20] = 255
    resized = register_infrared(infrared, (128, 160))
    assert resized.shape == (128, 160) and resized[30, 30] == 255
    shift = homography_matrix([1, 0, 5, 0, 1, 0, 0, 0, 1])  # 5 px to the right
    shifted = register_infrared(infrared, (128, 160), shift)
    assert shifted[30, 30 + 5] == 255 and shifted[30, 21] == 0
    same = register_infrared(resized, (128, 160))
    assert same is resized  # already registered: no copy


def blocking_worker() -> tuple[LatestWorker[int], threading.Event, list[int]]:
    """Return a worker whose handler holds each item until the event is set, and its log."""
    release = threading.Event()
    handled: list[int] = []

    def handler(item: int) -> None:
        release.wait(5)
        handled.append(item)

    return LatestWorker('test', handler, lambda error: None), release, handled


def test_latest_worker_never_builds_a_backlog() -> None:
    worker, release, handled = blocking_worker()
    try:
        worker.submit(0)
        time.sleep(0.1)  # the worker is now blocked on item 0
        for item in range(1, 6):
            worker.submit(item)
        release.set()
        deadline = time.monotonic() + 5
        while worker.processed < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert handled == [0, 5]  # the newest; 1..4 were replaced and counted
        assert worker.dropped == 4
    finally:
        worker.stop()


def test_an_idle_worker_loses_neither_of_two_items_submitted_together() -> None:
    handled: list[int] = []
    worker: LatestWorker[int] = LatestWorker('test', handled.append, lambda error: None)
    try:
        # Two pairs released milliseconds apart (the camera rate just learned): whether the
        # thread took the first before the second came or not, nothing was stale yet.
        worker.submit(1)
        worker.submit(2)
        deadline = time.monotonic() + 5
        while worker.processed < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert handled == [1, 2] and worker.dropped == 0
    finally:
        worker.stop()


def test_worker_survives_a_failing_item() -> None:
    errors: list[Exception] = []
    done = threading.Event()

    def handler(item: int) -> None:
        if item == 0:
            raise ValueError('bad frame')
        done.set()

    worker: LatestWorker[int] = LatestWorker('test', handler, errors.append)
    try:
        worker.submit(0)
        time.sleep(0.1)
        worker.submit(1)
        assert done.wait(5) and isinstance(errors[0], ValueError)
    finally:
        worker.stop()


def test_rate_latency_and_throttle() -> None:
    meter = RateMeter(window_s=5.0)
    for index in range(11):
        meter.tick(now=100.0 + index * 0.1)
    assert meter.rate(now=101.0) == pytest.approx(10.0)
    assert meter.rate(now=200.0) == 0.0
    stats = LatencyStats()
    assert np.isnan(stats.percentiles(50)[0])
    for value in range(1, 101):
        stats.add(value / 1000)
    p50, p95 = stats.percentiles(50, 95)
    assert p50 == pytest.approx(50.5) and p95 == pytest.approx(95.05)
    throttle = Throttle(period_s=60)
    assert throttle.allow('a') and not throttle.allow('a') and throttle.allow('b')
    assert throttle.suppressed == {'a': 1}


def test_descriptors_carry_ranges_and_read_only() -> None:
    pytest.importorskip('rclpy')
    from ivf_ros.nodes.parameters import descriptor

    conf = descriptor(spec_by_name('detection_node')['conf'])
    assert conf.floating_point_range[0].from_value == 0.0
    assert conf.floating_point_range[0].to_value == 1.0
    imgsz = descriptor(spec_by_name('detection_node')['imgsz'])
    assert imgsz.integer_range[0].step == 32
    model_path = descriptor(next(s for s in FUSION_PARAMS if s.name == 'model_path'))
    assert model_path.read_only and 'shipped' in model_path.description
    for specs in NODE_PARAMS.values():
        for spec in specs:
            assert descriptor(spec).description == spec.description


def test_image_messages_round_trip() -> None:
    pytest.importorskip('rclpy')
    from std_msgs.msg import Header

    from ivf_ros.nodes.ros_image import (
        array_to_compressed_msg,
        array_to_image_msg,
        compressed_msg_to_array,
        image_msg_to_array,
    )

    header = Header(frame_id='visible_camera')
    header.stamp.sec = 7
    rgb = np.random.default_rng(0).integers(0, 255, (12, 16, 3), dtype=np.uint8)
    msg = array_to_image_msg(rgb, 'rgb8', header)
    assert (msg.width, msg.height, msg.step, msg.encoding) == (16, 12, 48, 'rgb8')
    assert msg.header.stamp.sec == 7 and msg.header.frame_id == 'visible_camera'
    array, encoding = image_msg_to_array(msg)
    assert encoding == 'rgb8' and np.array_equal(array, rgb)
    thermal = np.arange(12 * 16, dtype=np.uint16).reshape(12, 16) * 300
    compressed = array_to_compressed_msg(thermal, 'mono16', header, 'png')
    assert compressed.header.stamp.sec == 7 and 'png' in compressed.format
    decoded, encoding = compressed_msg_to_array(compressed)
    assert np.array_equal(decoded, thermal) and encoding in ('mono16', '16UC1')


@pytest.mark.ros
def test_a_callback_that_raises_is_counted_not_fatal() -> None:
    import rclpy
    from rclpy.context import Context

    from ivf_ros.nodes.fusion_node import FusionNode

    context = Context()
    rclpy.init(context=context)
    try:
        node = FusionNode(context=context)
        calls = []

        def broken(*args: object) -> None:
            calls.append(args)
            raise KeyError('what a subscription callback must never let out')

        guarded = node.guarded('test callback', broken)
        guarded('msg')
        guarded('msg')  # the second one is throttled, still counted
        assert len(calls) == 2
        assert node.problems.count('callback') == 2
        status = node.diagnostic_status()
        assert status.level == status.WARN and 'test callback failed (KeyError)' in status.message
        node.destroy_node()
    finally:
        context.try_shutdown()


def _fake_recorder(held: list[tuple[str, bytes]], write_raw: Callable[[str, int, bytes], None],
                   logged: list[str]) -> SimpleNamespace:
    """Return the state BagRecorder's write path uses, with its own methods bound to it."""
    from collections import deque

    from ivf_ros.nodes.bag_recorder import BagRecorder

    topics = {topic: 0 for topic in ('/a', '/b')}
    recorder = SimpleNamespace(
        _held=deque(held), _lock=threading.Lock(), _sim_time=True,
        _unflushed=0, _flushed_at=time.monotonic(),
        writer=SimpleNamespace(write_raw=write_raw, flush=lambda: None),
        get_clock=lambda: SimpleNamespace(now=lambda: SimpleNamespace(nanoseconds=5)),
        get_logger=lambda: SimpleNamespace(error=logged.append),
        stats=SimpleNamespace(received=dict(topics), written=dict(topics), errors={}))
    recorder._write_held = lambda stamp: BagRecorder._write_held(recorder, stamp)
    recorder._write_failed = lambda topic, error: BagRecorder._write_failed(
        recorder, topic, error)
    return recorder


def test_a_held_message_that_fails_is_lost_once_and_blocks_none() -> None:
    from ivf_ros.nodes.bag_recorder import BagRecorder

    written: list[tuple[str, int, bytes]] = []
    fail_at = [2]

    def write_raw(topic: str, stamp: int, raw: bytes) -> None:
        if len(written) == fail_at[0]:
            fail_at[0] = -1
            raise OSError('disk full')
        written.append((topic, stamp, raw))

    recorder = _fake_recorder([('/a', b'1'), ('/b', b'2'), ('/a', b'3'), ('/b', b'4')],
                              write_raw, [])
    BagRecorder._write_held(recorder, 7)   # the third write fails: lost, the fourth written
    assert [raw for _, _, raw in written] == [b'1', b'2', b'4'] and not recorder._held
    assert recorder.stats.written == {'/a': 1, '/b': 2}
    assert recorder.stats.errors == {'/a': 'disk full'}


@pytest.mark.ros
def test_a_qos_override_on_one_camera_leaves_the_other_alone() -> None:
    import rclpy
    from rclpy.context import Context
    from rclpy.qos import qos_profile_sensor_data, ReliabilityPolicy
    from sensor_msgs.msg import Image

    from ivf_ros.nodes.fusion_node import FusionNode

    context = Context()
    rclpy.init(context=context)
    try:
        # rclpy writes an override into the profile it is handed: a shared one would carry it
        # to the infrared subscription (and every later user of qos_profile_sensor_data).
        node = FusionNode(context=context, cli_args=[
            '--ros-args', '-p',
            'qos_overrides./visible/image_raw.subscription.reliability:=reliable'])
        visible = node.camera_subscription(Image, 'visible/image_raw', lambda msg: None)
        infrared = node.camera_subscription(Image, 'infrared/image_raw', lambda msg: None)
        assert visible.qos_profile.reliability == ReliabilityPolicy.RELIABLE
        assert infrared.qos_profile.reliability == ReliabilityPolicy.BEST_EFFORT
        assert qos_profile_sensor_data.reliability == ReliabilityPolicy.BEST_EFFORT
        node.destroy_node()
    finally:
        context.try_shutdown()


def test_a_failed_held_write_does_not_lose_the_message_that_arrived() -> None:
    from ivf_ros.nodes.bag_recorder import BagRecorder

    written: list[bytes] = []

    def write_raw(topic: str, stamp: int, raw: bytes) -> None:
        if raw == b'held':
            raise OSError('the held one cannot be written')
        written.append(raw)

    logged: list[str] = []
    recorder = _fake_recorder([('/a', b'held')], write_raw, logged)
    BagRecorder._callback(recorder, '/b')(b'new')
    assert written == [b'new'] and recorder.stats.written == {'/a': 0, '/b': 1}
    # The error is filed under the held message's topic, not under the one that arrived; the
    # held message is lost (counted), not retried before every later message.
    assert set(recorder.stats.errors) == {'/a'} and not recorder._held
    assert logged == ['cannot write /a: the held one cannot be written']


@pytest.mark.ros
def test_a_parameter_no_node_declares_is_named_in_a_warning() -> None:
    import rclpy
    from rclpy.context import Context

    from ivf_ros.nodes.base import warn_unused_overrides
    from ivf_ros.nodes.detection_node import DetectionNode
    from ivf_ros.nodes.fusion_node import FusionNode

    context = Context()
    # As ivf-graph runs them: every -p reaches both nodes.
    rclpy.init(context=context, args=[
        '--ros-args', '-p', 'slop_s:=0.1', '-p', 'conf:=0.4', '-p', 'use_sim_time:=true',
        '-p', 'qos_overrides./visible/image_raw.subscription.depth:=3'])
    try:
        nodes = [FusionNode(context=context), DetectionNode(context=context)]
        warnings: list[str] = []
        nodes[0].get_logger().warning = warnings.append  # type: ignore[method-assign]
        nodes[1].get_logger().warning = warnings.append  # type: ignore[method-assign]
        # 'conf' is detection_node's: only the typo is named, once.
        assert warn_unused_overrides(nodes) == ['slop_s']
        assert len(warnings) == 1 and warnings[0].startswith('ignoring parameter(s) slop_s:')
        for node in nodes:
            node.destroy_node()
    finally:
        context.try_shutdown()


@pytest.mark.ros
def test_camera_info_sits_beside_the_image_topic() -> None:
    from ivf_ros.nodes.ros_image import camera_info_topic

    assert camera_info_topic('/car/visible/image_raw') == '/car/visible/camera_info'
    assert camera_info_topic('/image_raw') == '/camera_info'
    assert camera_info_topic('image_raw') == 'camera_info'


@pytest.mark.ros
def test_camera_info_describes_its_roi_and_binning() -> None:
    from sensor_msgs.msg import CameraInfo, RegionOfInterest

    from ivf_ros.nodes.ros_image import camera_info_image_size

    assert camera_info_image_size(CameraInfo(width=640, height=512)) == (512, 640)
    assert camera_info_image_size(CameraInfo(width=640, height=512, binning_x=2,
                                             binning_y=2)) == (256, 320)
    roi = RegionOfInterest(x_offset=10, y_offset=20, width=300, height=200)
    assert camera_info_image_size(CameraInfo(width=640, height=512, roi=roi)) == (200, 300)


def test_a_homography_is_judged_singular_scale_free() -> None:
    # The identity times 1e-5 is the identity (the old determinant test called it singular).
    assert homography_matrix([1e-5, 0, 0, 0, 1e-5, 0, 0, 0, 1e-5]) is None
    shift = homography_matrix([1e-4, 0, 5e-4, 0, 1e-4, 0, 0, 0, 1e-4])
    assert shift is not None and np.allclose(shift, [[1, 0, 5], [0, 1, 0], [0, 0, 1]])
    # Nearly rank 1 (rows almost equal) with a determinant of 0.01: it folds the image onto a
    # line, and the old test took it.
    with pytest.raises(ValueError, match='singular'):
        homography_matrix([1e4, 1e4, 0, 1e4, 1e4 + 1e-6, 0, 0, 0, 1])
    with pytest.raises(ValueError, match='not finite'):
        homography_matrix([1, 0, float('nan'), 0, 1, 0, 0, 0, 1])
    assert homography_matrix([1, 0, 1e4, 0, 1, 0, 0, 0, 1]) is not None  # a large shift is fine


def test_a_stopped_worker_counts_what_it_never_handles() -> None:
    worker, release, handled = blocking_worker()
    worker.submit(0)
    deadline = time.monotonic() + 5
    while not worker._busy and time.monotonic() < deadline:
        time.sleep(0.01)
    worker.submit(1)                       # waits behind item 0
    assert worker.stop(timeout=0.05) is False   # item 0 still in the handler
    release.set()
    worker.submit(2)                       # after stop: nobody will take it
    assert worker.stop() is True
    assert handled == [0] and worker.processed == 1
    assert worker.dropped == 2             # 1 discarded by stop(), 2 refused: both counted
