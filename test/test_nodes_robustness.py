"""
One bad frame never stops night vision: crashes, stalls and silent losses over real DDS.

The graph (ivf-graph: fusion_node + detection_node) and a compressed-input fusion_node run in
child processes; a probe node sends hostile input, then good pairs, and reads the outputs and
/diagnostics. Ends with a seeded fuzz of >= 2,000 messages.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
import re
import subprocess
import sys
import time

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from lifecycle_msgs.msg import Transition
from lifecycle_msgs.srv import ChangeState
from node_helpers.fuzz import bomb, fuzz_messages
from node_helpers.harness import ChildProcess, make_header, Probe, write_params
from node_helpers.tiny_yolo import build_fusion_weights, cached_tiny_yolo
import pytest
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CompressedImage, Image
from vision_msgs.msg import Detection2DArray

from ivf_ros.io.image_codec import encode_compressed
from ivf_ros.io.synthetic import make_night_pair

pytestmark = [pytest.mark.ros, pytest.mark.timeout(300)]

WIDTH, HEIGHT = 96, 80
OUTPUTS = {'fused/image': Image, 'detections': Detection2DArray,
           'cmp/fused/image': Image, '/diagnostics': DiagnosticArray}
FUZZ_MESSAGES = 2400  # over both nodes (raw and compressed)


@pytest.fixture(scope='module')
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp('robustness')


@pytest.fixture(scope='module')
def graph(folder: Path, tmp_path_factory: pytest.TempPathFactory, yolo_config_dir: Path
          ) -> Iterator[ChildProcess]:
    weights = build_fusion_weights(folder / 'fusion.pt')
    params = write_params(
        folder / 'params.yaml',
        fusion={'model_path': str(weights), 'device': 'cpu', 'diagnostics_period': 0.3,
                'queue_size': 4, 'max_pixels': 1_000_000},
        detection={'model': str(cached_tiny_yolo(tmp_path_factory.getbasetemp())),
                   'device': 'cpu', 'conf': 0.0, 'imgsz': 96, 'max_det': 3,
                   'diagnostics_period': 0.3})
    raw = ChildProcess(['-m', 'ivf_ros.nodes.graph', '--params-file', str(params)],
                       folder / 'graph.log')
    # The same fusion node on CompressedImage input, in its own namespace.
    compressed = ChildProcess(
        ['-m', 'ivf_ros.nodes.fusion_node', '--ros-args', '-r', '__ns:=/cmp',
         '--params-file', str(params), '-p', 'image_transport:=compressed'],
        folder / 'compressed.log')
    try:
        yield raw, compressed
    finally:
        compressed.stop()
        raw.stop()


@pytest.fixture(scope='module')
def probe(graph: tuple[ChildProcess, ChildProcess]) -> Iterator[Probe]:
    probe = Probe(OUTPUTS)
    qos = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)
    probe.compressed_pubs = {
        stream: probe.node.create_publisher(
            CompressedImage, f'cmp/{stream}/image_raw/compressed', qos)
        for stream in ('visible', 'infrared')}
    try:
        ready = probe.wait_for_subscribers(
            {'/visible/image_raw': 1, '/infrared/image_raw': 1, '/fused/image': 1,
             '/cmp/visible/image_raw/compressed': 1, '/cmp/infrared/image_raw/compressed': 1},
            120)
        assert ready, f'graph did not become active:\n{graph[0].log()[-2000:]}'
        yield probe
    finally:
        probe.close()


def night(frame: int = 0) -> tuple:
    pair = make_night_pair(seed=5, width=WIDTH, height=HEIGHT, frame=frame)
    return pair.visible, pair.infrared


def send_good_pairs(probe: Probe, count: int = 3, compressed: bool = False,
                    timeout: float = 20.0) -> set[int]:
    """Send good pairs until `count` came back fused; return their stamps."""
    topic = 'cmp/fused/image' if compressed else 'fused/image'
    fused: set[int] = set()
    for attempt in range(4 * count):
        stamp = probe.next_stamp()
        visible, infrared = night(attempt)
        if compressed:
            header = make_header(stamp, 'cam')
            for stream, array, encoding in (('visible', visible, 'rgb8'),
                                            ('infrared', infrared, 'mono8')):
                fmt, data = encode_compressed(array, encoding, 'png')
                probe.compressed_pubs[stream].publish(
                    CompressedImage(header=header, format=fmt, data=data))
        else:
            probe.publish_visible(stamp, visible)
            probe.publish_infrared(stamp, infrared)
        if probe.wait_for(lambda stamp=stamp: stamp in probe.stamps(topic), timeout / count):
            fused.add(stamp)
            if len(fused) >= count:
                return fused
    raise AssertionError(f'only {len(fused)} of {count} good pairs came back fused on {topic}')


def status_of(probe: Probe, status_name: str) -> DiagnosticStatus | None:
    """Return the newest status of that exact name (e.g. '/fusion_node: fusion')."""
    # Exact, not a suffix: '/cmp/fusion_node: fusion' ends with '/fusion_node: fusion', and the
    # compressed-input node of this module's graph reports on the same topic.
    for array in reversed(list(probe.received['/diagnostics'])):
        for status in array.status:
            if status.name == status_name:
                return status
    return None


def values(status: DiagnosticStatus | None) -> dict[str, str]:
    return {kv.key: kv.value for kv in status.values} if status is not None else {}


def wait_status(probe: Probe, status_name: str, predicate, timeout: float = 15.0
                ) -> DiagnosticStatus:
    assert probe.wait_for(
        lambda: (s := status_of(probe, status_name)) is not None and predicate(s), timeout
    ), status_of(probe, status_name)
    return status_of(probe, status_name)


FUSION = '/fusion_node: fusion'
COMPRESSED = '/cmp/fusion_node: fusion'


def send_until_rejected(probe: Probe, status_name: str, pattern: str,
                        publish: Callable[[], None], timeout: float = 15.0) -> None:
    """Publish a bad frame until a node's diagnostics name its rejection as the last bad input.

    Camera input is best effort: the first message after discovery can be lost, so the frame is
    sent again each second (the same frame, rejected the same way).
    """
    def rejected() -> bool:
        return bool(re.search(pattern, values(status_of(probe, status_name)).get(
            'last bad input', '')))

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        publish()
        if probe.wait_for(rejected, min(1.0, max(0.0, deadline - time.monotonic()))):
            return
    raise AssertionError(f'{pattern!r} never reported: {values(status_of(probe, status_name))}')


def test_a_negative_stamp_is_counted_and_the_node_lives(graph, probe: Probe) -> None:
    raw, _ = graph
    visible, infrared = night()
    bad = Image(header=make_header(0, 'cam'), height=HEIGHT, width=WIDTH, encoding='rgb8',
                step=WIDTH * 3, data=visible.tobytes())
    bad.header.stamp.sec = -5
    send_until_rejected(probe, FUSION, r'visible frame dropped: negative stamp -5',
                        lambda: probe.visible_pub.publish(bad))
    send_good_pairs(probe, 2)
    assert raw.alive() and 'Traceback' not in raw.log()


def test_an_image_claiming_too_many_pixels_is_refused_before_decoding(graph,
                                                                      probe: Probe) -> None:
    raw, _ = graph
    huge = Image(header=make_header(probe.next_stamp(), 'cam'), height=8000, width=8000,
                 encoding='mono8', step=8000, data=b'\x00' * 64)
    send_until_rejected(probe, FUSION, r'infrared frame dropped: image of 8000x8000 = 64000000 '
                                       r'pixels exceeds max_pixels = 1000000',
                        lambda: probe.infrared_pub.publish(huge))
    send_good_pairs(probe, 1)


@pytest.mark.parametrize('kind', ['jpeg', 'png'])
def test_a_decompression_bomb_is_refused_from_its_header(graph, probe: Probe,
                                                         kind: str) -> None:
    _, compressed = graph
    header = make_header(probe.next_stamp(), 'cam')
    message = CompressedImage(header=header, format=f'rgb8; {kind} compressed bgr8',
                              data=bomb(kind))
    send_until_rejected(probe, COMPRESSED, rf'visible frame dropped: {kind} image of 60000x60000',
                        lambda: probe.compressed_pubs['visible'].publish(message))
    send_good_pairs(probe, 1, compressed=True)
    assert compressed.alive() and 'Traceback' not in compressed.log()


def test_one_frame_stamped_in_the_past_does_not_stop_fusion(graph, probe: Probe) -> None:
    visible, _ = night()
    send_good_pairs(probe, 1)
    probe.publish_visible(0, visible)  # stamp 0: a driver without a clock, once
    send_good_pairs(probe, 3)


def test_a_duplicated_frame_is_fused_once_and_named(graph, probe: Probe) -> None:
    raw, _ = graph
    stamp = probe.next_stamp()
    visible, infrared = night()
    for _ in range(2):  # a driver republishing the same frame
        probe.publish_visible(stamp, visible)
        probe.publish_infrared(stamp, infrared)
    send_good_pairs(probe, 1)
    copies = [m for m in list(probe.received['fused/image'])
              if m.header.stamp.sec * 10**9 + m.header.stamp.nanosec == stamp]
    assert len(copies) == 1
    # Not silent: counted in the diagnostics, and the log says why only one was paired.
    wait_status(probe, FUSION, lambda s: int(values(s)['repeated stamps']) >= 1)
    assert probe.wait_for(lambda: 'frames repeat the stamp' in raw.log(), 10), raw.log()[-2000:]


def test_a_small_backward_jump_does_not_claim_a_restart(graph, probe: Probe) -> None:
    send_good_pairs(probe, 1)
    visible, _ = night()
    probe.publish_visible(probe.next_stamp() - 300_000_000, visible)  # 0.2 s back
    wait_status(probe, FUSION, lambda s: re.search(
        r'visible stamps went back by 0\.\d+ s \(within 1 s: kept if it can still pair, else '
        r'dropped; 3 in a row older than the last pair restart the pairing\)',
        values(s)['last time jump']))


def test_a_short_bag_looping_restarts_the_pairing_and_says_so(graph, probe: Probe) -> None:
    send_good_pairs(probe, 1)
    last_pair = probe.next_stamp()
    visible, _ = night()
    for back_ms in (300, 250, 200):   # a 0.3 s loop: three frames older than the last pair
        probe.publish_visible(last_pair - back_ms * 1_000_000, visible)
    wait_status(probe, FUSION, lambda s: 'short bag looping' in values(s)['last time jump'])
    send_good_pairs(probe, 2)          # and the graph pairs on


def test_streams_that_never_pair_are_an_error_naming_offset_and_slop(graph,
                                                                     probe: Probe) -> None:
    visible, infrared = night()
    for _ in range(40):  # 4 s of both cameras, infrared stamps 0.5 s late: nothing pairs
        stamp = probe.next_stamp()
        probe.publish_visible(stamp, visible)
        probe.publish_infrared(stamp + 500_000_000, infrared)
        probe.wait_for(lambda: False, 0.1)
        status = status_of(probe, FUSION)
        if status is not None and status.level == DiagnosticStatus.ERROR:
            break
    status = wait_status(probe, FUSION, lambda s: s.level == DiagnosticStatus.ERROR, 5)
    assert 'nothing was fused' in status.message and 'offset 0.500 s' in status.message
    assert 'slop 0.02 s' in status.message
    probe.jump_stamps(2.0)
    send_good_pairs(probe, 2)
    wait_status(probe, FUSION, lambda s: s.level != DiagnosticStatus.ERROR)


def test_status_returns_to_ok_once_good_frames_flow_and_keeps_the_counts(graph,
                                                                         probe: Probe) -> None:
    visible, _ = night()
    probe.visible_pub.publish(Image(header=make_header(probe.next_stamp(), 'cam'), height=2,
                                    width=2, encoding='yuv_weird', step=6, data=b'\x00' * 12))
    wait_status(probe, FUSION, lambda s: s.level == DiagnosticStatus.WARN
                and 'yuv_weird' in s.message)
    bad = int(values(status_of(probe, FUSION))['bad visible frames'])
    for _ in range(4):  # good pairs for longer than the 5 s a problem stays recent
        send_good_pairs(probe, 1)
        probe.wait_for(lambda: False, 1.5)
    status = wait_status(probe, FUSION, lambda s: s.level == DiagnosticStatus.OK)
    assert int(values(status)['bad visible frames']) == bad >= 1


def test_sim_time_before_clock_and_failed_configure_still_report(folder: Path,
                                                                 probe: Probe) -> None:
    node = ChildProcess(
        ['-m', 'ivf_ros.nodes.fusion_node', '--ros-args', '-r', '__node:=lost_node',
         '-p', 'use_sim_time:=true', '-p', f'model_path:={folder / "absent.pt"}',
         '-p', 'diagnostics_period:=0.3'], folder / 'lost.log')
    try:
        # No /clock is ever published: the report comes on a steady timer anyway.
        # The first report goes out from inside the failing transition ('configuring'), the
        # periodic ones once it is over.
        status = wait_status(probe, '/lost_node: fusion',
                             lambda s: s.level == DiagnosticStatus.ERROR
                             and values(s)['lifecycle state'] == 'unconfigured', 60)
        assert 'configure failed' in status.message and 'absent.pt' in status.message
    finally:
        node.stop()


def test_a_failed_activate_leaves_nothing_behind(folder: Path, probe: Probe) -> None:
    # An invalid QoS override makes the second subscription raise after the first exists.
    node = ChildProcess(
        ['-m', 'ivf_ros.nodes.fusion_node', '--ros-args', '-r', '__ns:=/qos_typo',
         '-p', f'model_path:={build_fusion_weights(folder / "fusion.pt")}',
         '-p', 'device:=cpu', '-p', 'diagnostics_period:=0.3',
         '-p', 'qos_overrides./qos_typo/infrared/image_raw.subscription.reliability:='
               'best-effort'], folder / 'qos_typo.log')
    try:
        status = wait_status(probe, '/qos_typo/fusion_node: fusion',
                             lambda s: s.level == DiagnosticStatus.ERROR
                             and values(s)['lifecycle state'] == 'unconfigured', 60)
        assert 'a transition from inactive raised' in status.message, status.message
        # on_error released the visible subscription made before the exception.
        assert not probe.wait_for(
            lambda: probe.node.count_subscribers('/qos_typo/visible/image_raw') > 0, 2.0)
    finally:
        node.stop()


def test_help_prints_help_and_does_not_start_a_node() -> None:
    for module in ('fusion_node', 'detection_node'):
        result = subprocess.run([sys.executable, '-m', f'ivf_ros.nodes.{module}', '--help'],
                                capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
        assert result.stdout.startswith(f'usage: {module}') and 'max_pixels' in result.stdout


def test_fuzzing_never_stops_the_nodes_and_every_rejection_is_counted(graph,
                                                                      probe: Probe) -> None:
    raw, compressed = graph
    before = {name: values(status_of(probe, status_name))
              for name, status_name in (('raw', FUSION), ('cmp', COMPRESSED))}
    sent = 0
    for compressed_input in (False, True):
        for index, (stream, msg) in enumerate(
                fuzz_messages(seed=17 + compressed_input, count=FUZZ_MESSAGES // 2,
                              compressed=compressed_input)):
            if compressed_input:
                probe.compressed_pubs[stream].publish(msg)
            else:
                (probe.visible_pub if stream == 'visible' else probe.infrared_pub).publish(msg)
            sent += 1
            if index % 10 == 9:
                # Paced (~200 messages/s): the camera subscriptions keep only the newest few
                # samples, and a flood would mostly test DDS dropping them.
                probe.wait_for(lambda: False, 0.05)
    assert sent >= 2000
    assert raw.alive() and compressed.alive()
    probe.jump_stamps(100.0)  # past every fuzzed stamp
    fused_raw = send_good_pairs(probe, 3)
    fused_cmp = send_good_pairs(probe, 3, compressed=True)
    assert len(fused_raw) == len(fused_cmp) == 3
    arrived = 0
    for name, status_name in (('raw', FUSION), ('cmp', COMPRESSED)):
        # Books balance: every frame that reached the node was rejected (counted) or accepted.
        def balanced(status: DiagnosticStatus) -> bool:
            v = values(status)
            return all(int(v[f'received {s} frames']) == int(v[f'rejected {s} frames'])
                       + int(v[f'accepted {s} frames']) for s in ('visible', 'infrared'))
        status = wait_status(probe, status_name, balanced)
        v, old = values(status), before[name]
        rejected = sum(int(v[f'bad {s} frames']) - int(old.get(f'bad {s} frames', 0))
                       for s in ('visible', 'infrared'))
        received = sum(int(v[f'received {s} frames']) - int(old.get(f'received {s} frames', 0))
                       for s in ('visible', 'infrared'))
        print(f'{name}: {received} fuzzed + good frames received, {rejected} rejected')
        assert rejected >= received // 3
        arrived += received
    # Most of the fuzz reached the nodes (best-effort camera QoS may drop a few).
    assert arrived >= sent // 2, (arrived, sent)
    for process in (raw, compressed):
        assert 'Traceback' not in process.log()


def test_the_graph_exits_once_both_nodes_are_finalized(graph, probe: Probe) -> None:
    raw, _ = graph
    for node in ('fusion_node', 'detection_node'):
        request = ChangeState.Request()
        request.transition.id = Transition.TRANSITION_ACTIVE_SHUTDOWN
        assert probe.call(ChangeState, f'/{node}/change_state', request, timeout=30).success
    raw.process.wait(30)
    assert raw.process.returncode == 0
