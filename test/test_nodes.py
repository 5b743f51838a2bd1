"""
fusion_node + detection_node over real Fast DDS: the graph runs in a child process (ivf-graph).

A separate publisher process sends synthetic night pairs; a probe node in the test process sends
bad input and reads fused/image, fusion/weights, detections and /diagnostics.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from diagnostic_msgs.msg import DiagnosticArray
from node_helpers.harness import (
    ChildProcess,
    make_header,
    Probe,
    publish_night_pairs,
    stamp_ns,
    write_params,
)
from node_helpers.tiny_yolo import build_fusion_weights, cached_tiny_yolo, TINY_NAMES
import numpy as np
import pytest
from rclpy.parameter import Parameter
from sensor_msgs.msg import CameraInfo, Image
from vision_msgs.msg import Detection2DArray

from ivf_ros.io.synthetic import make_night_pair

# An empty list would travel as BYTE_ARRAY: say it is a string array.
NO_CLASSES = Parameter('classes', Parameter.Type.STRING_ARRAY, [])
pytestmark = [pytest.mark.ros, pytest.mark.timeout(240)]

WIDTH, HEIGHT = 160, 128
OUTPUTS = {'fused/image': Image, 'fused/camera_info': CameraInfo, 'fusion/weights': Image,
           'enhanced/image': Image,
           'detections': Detection2DArray,
           'detections/image': Image, '/diagnostics': DiagnosticArray}


@pytest.fixture(scope='module')
def graph(tmp_path_factory: pytest.TempPathFactory, yolo_config_dir: Path
          ) -> Iterator[ChildProcess]:
    folder = tmp_path_factory.mktemp('graph')
    params = write_params(
        folder / 'params.yaml',
        fusion={'model_path': str(build_fusion_weights(folder / 'fusion.pt')), 'device': 'cpu',
                'publish_weights': True, 'publish_enhanced': True, 'diagnostics_period': 0.5},
        # Random weights score boxes near zero: conf 0 makes them appear at all.
        detection={'model': str(cached_tiny_yolo(tmp_path_factory.getbasetemp())),
                   'device': 'cpu',
                   'conf': 0.0, 'imgsz': 160, 'max_det': 5, 'diagnostics_period': 0.5})
    process = ChildProcess(['-m', 'ivf_ros.nodes.graph', '--params-file', str(params)],
                           folder / 'graph.log')
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture(scope='module')
def probe(graph: ChildProcess) -> Iterator[Probe]:
    probe = Probe(OUTPUTS)
    try:
        # Both nodes active: fusion subscribes to the cameras, detection publishes (it takes
        # the fused images in-process: ivf-graph's fast path).
        ready = probe.wait_for_subscribers(
            {'/visible/image_raw': 1, '/infrared/image_raw': 1, '/fused/image': 1}, 90) and (
            probe.wait_for(lambda: probe.node.count_publishers('/detections') >= 1, 90))
        assert ready, f'graph did not become active:\n{graph.log()[-3000:]}'
        yield probe
    finally:
        probe.close()


def night(frame: int = 0, width: int = WIDTH, height: int = HEIGHT) -> tuple[np.ndarray,
                                                                             np.ndarray]:
    pair = make_night_pair(seed=3, width=width, height=height, frame=frame)
    return pair.visible, pair.infrared


def send_good_pair(probe: Probe, timeout: float = 20.0) -> int:
    """Send good pairs until one comes back fused and detected; return its stamp."""
    for attempt in range(4):  # best-effort camera QoS: a sample may be lost, never hang
        stamp = probe.next_stamp()
        visible, infrared = night(attempt)
        probe.publish_visible(stamp, visible)
        probe.publish_infrared(stamp, infrared)
        if probe.wait_for(lambda stamp=stamp: stamp in probe.stamps('detections'), timeout / 4):
            return stamp
    raise AssertionError('no good pair came back fused and detected')


def latest_status(probe: Probe, name: str = 'fusion_node: fusion') -> dict[str, str]:
    """Return a node's newest diagnostic values (plus the message under 'message')."""
    for array in reversed(probe.received['/diagnostics']):
        for status in array.status:
            if status.name.endswith(name):
                return {'message': status.message,
                        **{kv.key: kv.value for kv in status.values}}
    return {}


def wait_status(probe: Probe, predicate, timeout: float = 10.0) -> dict[str, str]:
    assert probe.wait_for(lambda: predicate(latest_status(probe)), timeout), latest_status(probe)
    return latest_status(probe)


def test_night_pairs_from_a_publisher_process(graph: ChildProcess, probe: Probe,
                                              tmp_path: Path) -> None:
    sent = publish_night_pairs(tmp_path / 'publisher.log', 6, WIDTH, HEIGHT)
    assert probe.wait_for(lambda: len(probe.stamps('detections') & sent) >= 3, 30), (
        f'fused {probe.stamps("fused/image")}, sent {sorted(sent)}\n{graph.log()[-2000:]}')
    fused = [msg for msg in probe.received['fused/image'] if msg.header.stamp.sec < 60]
    assert len(fused) >= 3
    for msg in fused:
        stamp = stamp_ns(msg.header)
        assert stamp in sent  # the visible frame's stamp, untouched
        assert msg.header.frame_id == 'visible_camera'
        assert (msg.width, msg.height, msg.encoding) == (WIDTH, HEIGHT, 'rgb8')
        assert len(msg.data) == msg.step * msg.height == WIDTH * HEIGHT * 3
    weights = [msg for msg in probe.received['fusion/weights'] if msg.header.stamp.sec < 60]
    assert weights and all(msg.encoding == 'mono8' and msg.width == WIDTH for msg in weights)
    detections = [msg for msg in probe.received['detections'] if msg.header.stamp.sec < 60]
    assert detections and all(msg.header.frame_id == 'visible_camera' for msg in detections)
    for array in detections:
        assert 1 <= len(array.detections) <= 5
        for detection in array.detections:
            box = detection.bbox
            assert -1 <= box.center.position.x <= WIDTH + 1
            assert -1 <= box.center.position.y <= HEIGHT + 1
            assert 0 < box.size_x <= WIDTH + 1 and 0 < box.size_y <= HEIGHT + 1
            hypothesis = detection.results[0].hypothesis
            assert hypothesis.class_id in TINY_NAMES or hypothesis.class_id.startswith('class')
            assert 0.0 <= hypothesis.score <= 1.0
    enhanced = [msg for msg in probe.received['enhanced/image'] if msg.header.stamp.sec < 60]
    assert enhanced and {(m.width, m.height, m.encoding) for m in enhanced} == {
        (WIDTH, HEIGHT, 'rgb8')}
    annotated = probe.received['detections/image']
    assert annotated and annotated[-1].width == WIDTH and annotated[-1].encoding == 'rgb8'
    status = wait_status(probe, lambda s: int(s.get('fused frames', 0)) >= 3)
    assert status['device'] == 'cpu'
    assert float(status['latency p50 [ms]']) > 0
    assert probe.wait_for(lambda: int(latest_status(probe, 'detection_node: detection').get(
        'images detected', 0)) >= 3, 10)


def test_output_encoding_changes_at_runtime(probe: Probe) -> None:
    assert probe.set_parameters('fusion_node', {'output_encoding': 'bgr8'})[0].successful
    try:
        stamp = send_good_pair(probe)
        fused = next(m for m in probe.received['fused/image']
                     if stamp_ns(m.header) == stamp)
        assert fused.encoding == 'bgr8'
        assert not probe.set_parameters('fusion_node', {'output_encoding': 'yuv'})[0].successful
    finally:
        assert probe.set_parameters('fusion_node', {'output_encoding': 'rgb8'})[0].successful


def test_fused_camera_info_is_the_visible_calibration_with_the_fused_header(
        probe: Probe) -> None:
    from rclpy.qos import QoSProfile, ReliabilityPolicy

    publisher = probe.node.create_publisher(
        CameraInfo, 'visible/camera_info',
        QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE))
    try:
        def send_info(width: int) -> None:
            info = CameraInfo(header=make_header(1, 'visible_camera_optical'), width=width,
                              height=HEIGHT, distortion_model='plumb_bob')
            info.k[0], info.k[4], info.k[8] = 200.0, 201.0, 1.0
            publisher.publish(info)

        def send_until_seen(width: int) -> None:
            # Best-effort input can lose a sample just after discovery: send until it is seen.
            for _ in range(10):
                send_info(width)
                if probe.wait_for(lambda: latest_status(probe).get('visible camera_info')
                                  == f'{width}x{HEIGHT}', 1.5):
                    return
            raise AssertionError(f'camera_info not received: {latest_status(probe)}')

        assert probe.wait_for(lambda: publisher.get_subscription_count() >= 1, 10)
        send_until_seen(WIDTH)
        stamp = send_good_pair(probe)
        assert probe.wait_for(lambda: stamp in probe.stamps('fused/camera_info'), 10)
        info = next(m for m in probe.received['fused/camera_info']
                    if stamp_ns(m.header) == stamp)
        fused = next(m for m in probe.received['fused/image'] if stamp_ns(m.header) == stamp)
        assert info.header.frame_id == fused.header.frame_id == 'visible_camera'
        assert (info.width, info.height, info.k[0], info.k[4]) == (WIDTH, HEIGHT, 200.0, 201.0)
        # A calibration of another size does not describe the fused image: counted, not sent.
        send_until_seen(WIDTH * 2)
        before = int(latest_status(probe)['camera_info size mismatches'])
        stamp = send_good_pair(probe)
        # Detections may come before fusion_node's own outputs (ivf-graph's in-process path):
        # wait until the mismatch is counted, which happens where camera_info would be sent.
        wait_status(probe, lambda s: int(s['camera_info size mismatches']) > before)
        assert stamp not in probe.stamps('fused/camera_info')
        send_until_seen(WIDTH)  # leave the graph with a matching calibration
    finally:
        probe.node.destroy_publisher(publisher)


def test_unknown_encoding_is_reported_and_skipped(graph: ChildProcess, probe: Probe) -> None:
    stamp = probe.next_stamp()
    visible, infrared = night()
    bad = Image(header=make_header(stamp, 'visible_camera'), height=HEIGHT, width=WIDTH,
                encoding='yuv_weird', step=WIDTH * 3, data=visible.tobytes())
    probe.visible_pub.publish(bad)
    probe.publish_infrared(stamp, infrared)
    graph.wait_for_log(r'visible frame dropped: .*yuv_weird', 15)
    wait_status(probe, lambda s: int(s.get('bad visible frames', 0)) >= 1)
    send_good_pair(probe)
    assert graph.alive()


def test_truncated_infrared_is_reported_and_skipped(graph: ChildProcess, probe: Probe) -> None:
    stamp = probe.next_stamp()
    visible, infrared = night()
    probe.publish_visible(stamp, visible)
    truncated = Image(header=make_header(stamp, 'thermal_camera'), height=HEIGHT, width=WIDTH,
                      encoding='mono8', step=WIDTH, data=infrared.tobytes()[: WIDTH * 10])
    probe.infrared_pub.publish(truncated)
    graph.wait_for_log(r'infrared frame dropped: .*bytes', 15)
    status = wait_status(probe, lambda s: int(s.get('bad infrared frames', 0)) >= 1)
    assert 'infrared' in status['last bad input']
    send_good_pair(probe)
    assert graph.alive()


def test_mono16_infrared_of_another_size_is_registered(graph: ChildProcess,
                                                       probe: Probe) -> None:
    stamp = probe.next_stamp()
    pair = make_night_pair(seed=4, width=WIDTH // 2, height=HEIGHT // 2, thermal_bits=16)
    visible, _ = night()
    probe.publish_visible(stamp, visible)
    probe.publish_infrared(stamp, pair.infrared, 'mono16')
    graph.wait_for_log(r'infrared 80x64 differs from visible 160x128: resizing', 15)
    assert probe.wait_for(lambda: stamp in probe.stamps('fused/image'), 15)
    fused = next(m for m in probe.received['fused/image'] if m.header.stamp.nanosec ==
                 stamp % 1_000_000_000 and m.header.stamp.sec == stamp // 1_000_000_000)
    assert (fused.width, fused.height) == (WIDTH, HEIGHT)


def test_missing_infrared_stream_is_diagnosed(graph: ChildProcess, probe: Probe) -> None:
    visible, _ = night()
    for _ in range(60):  # up to 6 s of visible frames only, at 10 Hz
        probe.publish_visible(probe.next_stamp(), visible)
        if 'no infrared frames' in latest_status(probe).get('message', ''):
            break
        probe.wait_for(lambda: False, 0.1)
    status = wait_status(probe, lambda s: 'no infrared frames' in s.get('message', ''), 5)
    assert int(status['unmatched visible']) >= 1
    graph.wait_for_log(r'no infrared frames', 5)
    send_good_pair(probe)
    assert graph.alive()


def test_stamps_jumping_back_restart_pairing(graph: ChildProcess, probe: Probe) -> None:
    send_good_pair(probe)
    probe.jump_stamps(-20.0)  # a bag looping back
    send_good_pair(probe)
    graph.wait_for_log(r'visible stamps went back by \d+\.\d+ s', 5)
    status = wait_status(probe, lambda s: int(s.get('sync resets', 0)) >= 1)
    assert int(status['time jumps back']) >= 1
    assert graph.alive()


def test_out_of_range_and_read_only_parameters_are_rejected(probe: Probe) -> None:
    conf, = probe.set_parameters('detection_node', {'conf': 1.5})
    assert not conf.successful and 'conf' in conf.reason
    model, = probe.set_parameters('detection_node', {'model': '/elsewhere.pt'})
    assert not model.successful
    slop, = probe.set_parameters('fusion_node', {'slop': 5.0})
    assert not slop.successful
    homography, = probe.set_parameters('fusion_node', {'homography': [0.0] * 9})
    assert not homography.successful and 'singular' in homography.reason
    accepted = probe.set_parameters('fusion_node', {'slop': 0.05})
    assert accepted[0].successful
    assert probe.set_parameters('detection_node', {'iou': 0.5})[0].successful


def test_classes_filter_by_name(probe: Probe) -> None:
    assert probe.set_parameters('detection_node', {'classes': NO_CLASSES})[0].successful
    stamp = send_good_pair(probe)
    everything = next(m for m in probe.received['detections']
                      if stamp_ns(m.header) == stamp)
    names = [d.results[0].hypothesis.class_id for d in everything.detections]
    assert names
    for kept in (names[0], 'bicycle' if names[0] != 'bicycle' else 'car'):
        assert probe.set_parameters('detection_node', {'classes': [kept]})[0].successful
        stamp = send_good_pair(probe)
        filtered = next(m for m in probe.received['detections']
                        if stamp_ns(m.header) == stamp)
        assert all(d.results[0].hypothesis.class_id == kept for d in filtered.detections)
    unknown, = probe.set_parameters('detection_node', {'classes': ['unicorn']})
    assert not unknown.successful and 'unicorn' in unknown.reason
    # What `ros2 param set /detection_node classes "[]"` sends: an empty BOOL_ARRAY.
    cleared = Parameter('classes', Parameter.Type.BOOL_ARRAY, [])
    assert probe.set_parameters('detection_node', {'classes': cleared})[0].successful
    stamp = send_good_pair(probe)
    again = next(m for m in probe.received['detections'] if stamp_ns(m.header) == stamp)
    assert len(again.detections) == len(everything.detections)
    assert probe.set_parameters('detection_node', {'classes': NO_CLASSES})[0].successful
