"""
launch/fusion_detect.launch.py run by launch_testing: real launch_ros, real processes, real DDS.

The launch file starts fusion_node and detection_node as `ros2 launch` does (executables found
under <prefix>/lib/ivf_ros), with a params file whose device, model and conf differ from the
defaults, namespace:=car1, and use_rviz:=true where rviz2 is absent. A camera process publishes
synthetic night pairs; the tests read the outputs, the lifecycle states and the parameters, run
`ros2 param dump`, and check after the launch's shutdown that nothing is left running.
"""

from __future__ import annotations

import atexit
import os
from pathlib import Path
import shutil
import subprocess
import sys
import tempfile
from typing import Any
import unittest

import pytest

SKIP = ('needs the ROS 2 tools (launch_testing, launch_ros): scripts/setup.sh installs them from '
        '../shared/ros2_tools/src, $ROS2_TOOLS_SRC or GitHub; none was available')
pytest.importorskip('launch_testing', reason=SKIP)
pytest.importorskip('launch_ros.actions', reason=SKIP)

from launch import LaunchDescription  # noqa: E402
from launch.actions import IncludeLaunchDescription  # noqa: E402
from launch.launch_description_sources import PythonLaunchDescriptionSource  # noqa: E402
import launch_testing.actions  # noqa: E402
import launch_testing.asserts  # noqa: E402
from lifecycle_msgs.srv import GetState  # noqa: E402
from node_helpers.harness import (  # noqa: E402
    Probe,
    publish_night_pairs,
    write_params,
)
from node_helpers.tiny_yolo import build_tiny_yolo  # noqa: E402
import psutil  # noqa: E402
from rcl_interfaces.srv import GetParameters  # noqa: E402
from rclpy.parameter import parameter_value_to_python  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402
from vision_msgs.msg import Detection2DArray  # noqa: E402

from ivf_ros.nodes.param_specs import load_params_file  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parent.parent
NAMESPACE = '/car1'
NODES = ('fusion_node', 'detection_node')
WIDTH, HEIGHT = 160, 128
# Topics of rclpy and of the diagnostics convention that are absolute on purpose.
GLOBAL_TOPICS = {'/diagnostics', '/parameter_events', '/rosout'}
# The node processes (and theirs), seen while the launch runs; checked after it shut down.
LAUNCHED: list[psutil.Process] = []


def rviz_installed() -> bool:
    """Return whether rviz2 is installed (then use_rviz:=true would open a window)."""
    from ament_index_python.packages import get_package_prefix, PackageNotFoundError

    try:
        get_package_prefix('rviz2')
    except PackageNotFoundError:
        return False
    return True


@pytest.mark.launch_test
@pytest.mark.timeout(420)
def generate_test_description() -> tuple[LaunchDescription, dict[str, Any]]:
    """Return the package's launch file with a params file, a namespace and use_rviz."""
    folder = Path(tempfile.mkdtemp(prefix='ivf_launch_test_'))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    os.environ.setdefault('YOLO_CONFIG_DIR', str(folder / 'ultralytics'))  # never $HOME
    tiny = build_tiny_yolo(folder / 'tiny_yolo11n.pt')
    # Random weights score boxes near zero: conf 0 makes them appear at all. The fusion node
    # keeps its default model_path: the shipped weights.
    params = {'fusion_node': {'device': 'cpu'},
              'detection_node': {'model': str(tiny), 'device': 'cpu', 'conf': 0.0,
                                 'imgsz': 160, 'max_det': 5}}
    path = write_params(folder / 'params.yaml', params['fusion_node'], params['detection_node'])
    arguments = {'params_file': str(path), 'namespace': NAMESPACE.strip('/'),
                 'use_rviz': str(not rviz_installed()).lower()}
    return LaunchDescription([
        IncludeLaunchDescription(
            PythonLaunchDescriptionSource(str(REPO_ROOT / 'launch' / 'fusion_detect.launch.py')),
            launch_arguments=arguments.items()),
        launch_testing.actions.ReadyToTest(),
    ]), {'params': params, 'folder': folder}




def lifecycle_state(probe: Probe, node: str) -> str:
    return probe.call(GetState, f'{NAMESPACE}/{node}/get_state',
                GetState.Request()).current_state.label


def parameters(probe: Probe, node: str, names: list[str]) -> dict[str, Any]:
    response = probe.call(GetParameters, f'{NAMESPACE}/{node}/get_parameters',
                    GetParameters.Request(names=names))
    return {name: parameter_value_to_python(value)
            for name, value in zip(names, response.values, strict=True)}


class TestWhileRunning(unittest.TestCase):
    """Checks on the running launch (unittest runs them in name order)."""

    probe: Probe

    @classmethod
    def setUpClass(cls) -> None:
        cls.probe = Probe({f'{NAMESPACE}/fused/image': Image,
                           f'{NAMESPACE}/detections': Detection2DArray})

    @classmethod
    def tearDownClass(cls) -> None:
        cls.probe.close()

    def test_1_both_nodes_become_active(self) -> None:
        probe = self.probe
        # Two processes that import torch and Ultralytics: a minute or more on a loaded host.
        for node in NODES:
            probe.call(GetState, f'{NAMESPACE}/{node}/get_state', GetState.Request(),
                 timeout=180)
            assert probe.wait_for(lambda node=node: lifecycle_state(probe, node) == 'active',
                                  120), f'{node} is {lifecycle_state(probe, node)}'
        LAUNCHED.extend(launched_processes())
        assert len(LAUNCHED) >= 2, LAUNCHED

    def test_2_the_params_file_is_honoured(self, params: dict[str, Any]) -> None:
        for node in NODES:
            assert parameters(self.probe, node, list(params[node])) == params[node]

    def test_3_frames_come_back_fused_and_detected_with_their_stamps(
            self, folder: Path) -> None:
        probe = self.probe
        sent = publish_night_pairs(folder / 'publisher.log', 6, WIDTH, HEIGHT, '--wait', '60',
                                   '--ros-args', '-r', f'__ns:={NAMESPACE}', timeout=120)
        fused_topic, detections_topic = f'{NAMESPACE}/fused/image', f'{NAMESPACE}/detections'
        # Best-effort camera QoS: a pair may be lost; most must come back.
        assert probe.wait_for(lambda: len(probe.stamps(detections_topic) & sent) >= 3, 60), (
            f'fused {probe.stamps(fused_topic)}, detected {probe.stamps(detections_topic)}, '
            f'sent {sorted(sent)}')
        assert probe.stamps(fused_topic) <= sent  # the visible frames' stamps, untouched
        assert probe.stamps(detections_topic) <= probe.stamps(fused_topic)
        fused = probe.received[fused_topic][0]
        assert (fused.width, fused.height, fused.header.frame_id) == (WIDTH, HEIGHT,
                                                                      'visible_camera')
        assert all(1 <= len(array.detections) <= 5
                   for array in probe.received[detections_topic])

    def test_4_the_namespace_moves_every_topic(self) -> None:
        probe, graph = self.probe, self.probe.node
        assert probe.wait_for(lambda: {(node, NAMESPACE) for node in NODES}
                              <= set(graph.get_node_names_and_namespaces()), 30)
        for node in NODES:
            endpoints = [*graph.get_publisher_names_and_types_by_node(node, NAMESPACE),
                         *graph.get_subscriber_names_and_types_by_node(node, NAMESPACE)]
            outside = {topic for topic, _ in endpoints if not topic.startswith(NAMESPACE + '/')}
            assert outside <= GLOBAL_TOPICS, f'{node} uses {outside} outside {NAMESPACE}'
        topics = {topic for topic, _ in graph.get_topic_names_and_types()}
        assert {f'{NAMESPACE}/{topic}' for topic in (
            'fused/image', 'detections', 'visible/image_raw', 'infrared/image_raw')} <= topics

    def test_5_a_ros2_param_dump_is_an_ivf_graph_params_file(
            self, params: dict[str, Any], folder: Path) -> None:
        ros2 = shutil.which('ros2') or str(Path(sys.executable).parent / 'ros2')
        for node in NODES:
            result = subprocess.run(
                [ros2, 'param', 'dump', f'{NAMESPACE}/{node}', '--no-daemon', '--timeout', '30'],
                capture_output=True, text=True, timeout=120)
            assert result.returncode == 0, result.stdout + result.stderr
            dump = folder / f'{node}.yaml'
            dump.write_text(result.stdout)
            assert f'{NAMESPACE}/{node}:' in result.stdout and 'qos_overrides' in result.stdout
            # What `ivf-graph --params-file DUMP --namespace car1` checks before it starts.
            values = load_params_file(dump, node, NAMESPACE)
            assert {name: values[name] for name in params[node]} == params[node]


def launched_processes() -> list[psutil.Process]:
    """Return the node processes the launch started, and their children."""
    nodes = [process for process in psutil.Process().children(recursive=True)
             if any(part.endswith(tuple(f'/lib/ivf_ros/{node}' for node in NODES))
                    for part in process.cmdline())]
    return [*nodes, *(child for process in nodes for child in process.children(recursive=True))]


@launch_testing.post_shutdown_test()
class TestAfterShutdown(unittest.TestCase):
    """Checks once the launch has shut down (as Ctrl-C does)."""

    def test_nodes_exit_cleanly(self, proc_info: Any) -> None:
        launch_testing.asserts.assertExitCodes(proc_info)

    def test_no_process_is_left_behind(self) -> None:
        assert LAUNCHED, 'the nodes were never seen running'
        _, alive = psutil.wait_procs(LAUNCHED, timeout=30)
        assert not alive, f'left running after the launch shut down: {alive}'
