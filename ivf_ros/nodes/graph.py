r"""
ivf-graph: fusion_node + detection_node in one process, without launch_ros.

The one-process twin of `ros2 launch ivf_ros fusion_detect.launch.py` (which needs launch_ros):
same YAML, same ROS arguments; --params-file also takes what `ros2 param dump` writes.

    ivf-graph --params-file config/ivf_ros.yaml --namespace car1 \
        --ros-args -r visible/image_raw:=/cam/vis -r infrared/image_raw:=/cam/ir \
        -p use_sim_time:=true -p detection_node:model:=/path/yolo11n.pt

or, with the launch file's argument names:

    ivf-graph --visible-topic /cam/vis --infrared-topic /cam/ir --detector-model yolo11n.pt \
        --device cpu --use-sim-time
"""

from __future__ import annotations

import argparse
from pathlib import Path
import sys

from rclpy.utilities import remove_ros_args

from ivf_ros.io.paths import share_file
from ivf_ros.nodes.param_specs import (
    DETECTION_NODE,
    fully_qualified_name,
    FUSION_NODE,
    load_params_file,
    ParameterValueError,
)


def parse_args(argv: list[str]) -> argparse.Namespace:
    """Parse the non-ROS arguments (ROS ones after --ros-args go to rclpy untouched)."""
    parser = argparse.ArgumentParser(
        prog='ivf-graph', description=__doc__.split('\n\n')[0].strip(),
        epilog='ROS arguments after --ros-args (-r remaps, -p name:=value, '
               '-p node_name:param:=value) apply as with ros2 run.')
    parser.add_argument('--params-file', type=Path, default=share_file('config', 'ivf_ros.yaml'),
                        help='ROS params file keyed by node name (default: the package YAML)')
    parser.add_argument('--namespace', default='', help='namespace for both nodes')
    parser.add_argument('--nodes', nargs='+', choices=(FUSION_NODE, DETECTION_NODE),
                        default=[FUSION_NODE, DETECTION_NODE], help='which nodes to run')
    # The launch file's arguments, for the same command lines in both worlds.
    parser.add_argument('--visible-topic', help='remap visible/image_raw to this topic')
    parser.add_argument('--infrared-topic', help='remap infrared/image_raw to this topic')
    parser.add_argument('--detector-model', help='detection_node model (path or Ultralytics name)')
    parser.add_argument('--device', help='device of both networks: auto, cpu, cuda:N')
    parser.add_argument('--use-sim-time', action='store_true', help='use /clock')
    parser.add_argument('--no-fast-path', action='store_true',
                        help='detection_node reads fused/image over DDS instead of taking the '
                             'fused array in-process (the default when both nodes run here)')
    return parser.parse_args(remove_ros_args(argv)[1:])


def connect_fast_path(nodes: list) -> None:
    """Hand fusion_node's fused array straight to detection_node when they share the topic."""
    from ivf_ros.nodes.detection_node import DetectionNode
    from ivf_ros.nodes.fusion_node import FusionNode

    fusion = next((node for node in nodes if isinstance(node, FusionNode)), None)
    detection = next((node for node in nodes if isinstance(node, DetectionNode)), None)
    if fusion is None or detection is None:
        return
    # Remaps may point detection_node elsewhere: only the same resolved topic is shortcut.
    if fusion.resolve_topic_name('fused/image') != detection.resolve_topic_name('fused/image'):
        return
    detection.direct_input = True
    fusion.downstream = detection.submit_array
    fusion.get_logger().info(
        'fast path: fused images go to detection_node in-process; fused/image is published '
        'for other subscribers')


def ros_arguments(argv: list[str], options: argparse.Namespace) -> list[str]:
    """Return argv for rclpy.init: params file, then the user's ROS args, then the options."""
    extra = ['--ros-args', '--params-file', str(options.params_file)]
    if options.namespace:
        extra += ['-r', f'__ns:=/{options.namespace.strip("/")}']
    overrides = []
    if options.visible_topic:
        overrides += ['-r', f'visible/image_raw:={options.visible_topic}']
    if options.infrared_topic:
        overrides += ['-r', f'infrared/image_raw:={options.infrared_topic}']
    if options.detector_model:
        overrides += ['-p', f'{DETECTION_NODE}:model:={options.detector_model}']
    if options.device:
        overrides += ['-p', f'{FUSION_NODE}:device:={options.device}',
                      '-p', f'{DETECTION_NODE}:device:={options.device}']
    if options.use_sim_time:
        overrides += ['-p', 'use_sim_time:=true']
    tail = ['--ros-args', *overrides, '--'] if overrides else []
    return [argv[0], *extra, '--', *argv[1:], *tail]


def main(argv: list[str] | None = None) -> int:
    """Run the graph until Ctrl-C."""
    argv = list(sys.argv if argv is None else argv)
    options = parse_args(argv)
    try:
        for node_name in options.nodes:
            # Fail early on typos; a file with no value for a node is legal, but say so.
            if not load_params_file(options.params_file, node_name, options.namespace):
                print(f'ivf-graph: {options.params_file} sets no parameter of '
                      f'{fully_qualified_name(node_name, options.namespace)}: its defaults apply',
                      file=sys.stderr)
    except ParameterValueError as error:
        print(f'ivf-graph: {error}', file=sys.stderr)
        return 2
    # Import after argument parsing: --help stays fast (no torch, no Ultralytics).
    from ivf_ros.nodes.base import spin_nodes
    from ivf_ros.nodes.detection_node import DetectionNode
    from ivf_ros.nodes.fusion_node import FusionNode

    factories = {FUSION_NODE: FusionNode, DETECTION_NODE: DetectionNode}
    return spin_nodes([factories[name] for name in options.nodes],
                      args=ros_arguments(argv, options),
                      connect=None if options.no_fast_path else connect_fast_path)


if __name__ == '__main__':
    sys.exit(main())
