"""Lifecycle behaviour over real DDS: missing weights fail configure cleanly; autostart false."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
import re

from lifecycle_msgs.msg import Transition
from lifecycle_msgs.srv import ChangeState, GetState
from node_helpers.harness import ChildProcess, Probe, write_params
from node_helpers.tiny_yolo import cached_tiny_yolo
import pytest

pytestmark = [pytest.mark.ros, pytest.mark.timeout(180)]


@pytest.fixture(scope='module')
def missing_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp('absent') / 'ivf_fusion.pt'


@pytest.fixture(scope='module')
def graph(tmp_path_factory: pytest.TempPathFactory, yolo_config_dir: Path,
          missing_weights: Path) -> Iterator[ChildProcess]:
    """fusion_node with missing weights, detection_node waiting for a lifecycle manager."""
    folder = tmp_path_factory.mktemp('lifecycle')
    params = write_params(
        folder / 'params.yaml', fusion={'model_path': str(missing_weights), 'device': 'cpu'},
        detection={'model': str(cached_tiny_yolo(tmp_path_factory.getbasetemp())),
                   'device': 'cpu', 'imgsz': 64, 'autostart': False})
    # Over DDS (no in-process fast path): the test watches detection_node's subscription.
    process = ChildProcess(['-m', 'ivf_ros.nodes.graph', '--params-file', str(params),
                            '--no-fast-path'],
                           folder / 'graph.log')
    try:
        yield process
    finally:
        assert process.stop() == 0, process.log()[-2000:]


@pytest.fixture(scope='module')
def probe() -> Iterator[Probe]:
    probe = Probe({})
    try:
        yield probe
    finally:
        probe.close()




def state_of(probe: Probe, node: str) -> str:
    return probe.call(GetState, f'/{node}/get_state', GetState.Request()).current_state.label


def change_state(probe: Probe, node: str, transition: int) -> bool:
    request = ChangeState.Request()
    request.transition.id = transition
    # Configuring loads (and warms up) a network: allow for a loaded 2-core machine.
    return probe.call(ChangeState, f'/{node}/change_state', request, timeout=60).success


def test_missing_weights_fail_configure_and_the_process_lives(
        graph: ChildProcess, probe: Probe, missing_weights: Path) -> None:
    graph.wait_for_log(r'\[fusion_node\]: cannot load the fusion model .*not found: '
                       + re.escape(str(missing_weights)), 60)
    assert state_of(probe, 'fusion_node') == 'unconfigured'
    assert graph.alive()
    assert 'Traceback' not in graph.log()
    # A lifecycle manager retrying gets the same clear failure, not a crash.
    assert not change_state(probe, 'fusion_node', Transition.TRANSITION_CONFIGURE)
    assert graph.alive() and state_of(probe, 'fusion_node') == 'unconfigured'


def test_autostart_false_waits_for_a_lifecycle_manager(graph: ChildProcess,
                                                       probe: Probe) -> None:
    graph.wait_for_log(r'\[detection_node\]: autostart is false', 60)
    assert state_of(probe, 'detection_node') == 'unconfigured'
    assert probe.node.count_publishers('/detections') == 0
    assert change_state(probe, 'detection_node', Transition.TRANSITION_CONFIGURE)
    assert state_of(probe, 'detection_node') == 'inactive'
    assert probe.node.count_subscribers('/fused/image') == 0
    assert change_state(probe, 'detection_node', Transition.TRANSITION_ACTIVATE)
    assert probe.wait_for(lambda: probe.node.count_subscribers('/fused/image') == 1, 10)
    assert probe.node.count_publishers('/detections') == 1
    assert change_state(probe, 'detection_node', Transition.TRANSITION_DEACTIVATE)
    assert probe.wait_for(lambda: probe.node.count_subscribers('/fused/image') == 0, 10)
    assert change_state(probe, 'detection_node', Transition.TRANSITION_CLEANUP)
    assert probe.wait_for(lambda: probe.node.count_publishers('/detections') == 0, 10)


def test_out_of_range_override_exits_with_one_clear_line(tmp_path: Path) -> None:
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, '-m', 'ivf_ros.nodes.graph', '--nodes', 'detection_node',
         '--ros-args', '-p', 'detection_node:conf:=3.0'],
        capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert 'invalid parameter' in result.stderr and 'conf' in result.stderr
    assert 'Traceback' not in result.stderr


def test_a_static_export_refuses_an_imgsz_it_would_ignore(
        tmp_path_factory: pytest.TempPathFactory, yolo_config_dir: Path, probe: Probe) -> None:
    import shutil

    from ultralytics import YOLO

    folder = tmp_path_factory.mktemp('static_export')
    tiny = Path(shutil.copy(cached_tiny_yolo(tmp_path_factory.getbasetemp()),
                            folder / 'tiny.pt'))
    onnx = YOLO(str(tiny)).export(format='onnx', imgsz=64, simplify=False, verbose=False)
    params = write_params(folder / 'params.yaml', fusion={},
                          detection={'model': str(onnx), 'device': 'cpu', 'imgsz': 64})
    process = ChildProcess(['-m', 'ivf_ros.nodes.graph', '--params-file', str(params),
                            '--nodes', 'detection_node', '--ros-args', '-r', '__ns:=/static'],
                           folder / 'graph.log')
    try:
        process.wait_for_log(r'detection_node\]: YOLO .*tiny\.onnx .* at 64 px', 90)
        refused, = probe.set_parameters('static/detection_node', {'imgsz': 128})
        assert not refused.successful
        assert 'static export that runs at 64 px' in refused.reason
        kept, = probe.set_parameters('static/detection_node', {'imgsz': 64})
        assert kept.successful, kept.reason
        assert process.alive() and 'Traceback' not in process.log()
    finally:
        assert process.stop() == 0, process.log()[-2000:]
