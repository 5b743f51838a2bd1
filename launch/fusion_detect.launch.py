"""Launch the visible-infrared fusion node and the YOLO detection node (optionally RViz)."""

import os

from ament_index_python.packages import get_package_prefix, PackageNotFoundError
from launch import Condition, LaunchContext, LaunchDescription
from launch.actions import DeclareLaunchArgument, GroupAction, LogInfo
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration, NotEqualsSubstitution, PathJoinSubstitution
from launch_ros.actions import Node, SetParameter, SetParametersFromFile
from launch_ros.parameter_descriptions import ParameterValue
from launch_ros.substitutions import FindPackageShare

PACKAGE = 'ivf_ros'


def rviz_installed(_context: LaunchContext | None = None) -> bool:
    """Return whether the ament index knows rviz2 (pip mode has no RViz)."""
    try:
        get_package_prefix('rviz2')
    except PackageNotFoundError:
        return False
    return True


def params_file_exists(context: LaunchContext) -> bool:
    """Return True when params_file is a file; raise FileNotFoundError naming it otherwise."""
    path = LaunchConfiguration('params_file').perform(context)
    if not os.path.isfile(path):
        # Before any node starts, so the launch stops with this message and nothing running.
        raise FileNotFoundError(f'params_file:={path} is not a file')
    return True


def given(name: str) -> IfCondition:
    """Return a condition true when launch argument name was set (its default is '')."""
    return IfCondition(NotEqualsSubstitution(LaunchConfiguration(name), ''))


def override(parameter: str, argument: str, value_type: type = str) -> SetParameter:
    """Return an action setting parameter from a launch argument only when that was given."""
    return SetParameter(parameter,
                        ParameterValue(LaunchConfiguration(argument), value_type=value_type),
                        condition=given(argument))


def generate_launch_description() -> LaunchDescription:
    """Return fusion_node + detection_node configured from the package YAML, plus RViz."""
    share = FindPackageShare(PACKAGE)
    namespace = LaunchConfiguration('namespace')
    arguments = [
        DeclareLaunchArgument(
            'params_file', default_value=PathJoinSubstitution([share, 'config', 'ivf_ros.yaml']),
            description='ROS params file for both nodes (keys /**/fusion_node, '
                        '/**/detection_node)'),
        DeclareLaunchArgument(
            'namespace', default_value='', description='Namespace of both nodes and topics'),
        DeclareLaunchArgument(
            'use_sim_time', default_value='',
            description="Use /clock (true when replaying a bag with --clock); '' = the params "
                        "file's (false where it does not set it)"),
        DeclareLaunchArgument(
            'visible_topic', default_value='visible/image_raw',
            description='Visible camera sensor_msgs/Image topic'),
        DeclareLaunchArgument(
            'infrared_topic', default_value='infrared/image_raw',
            description='Infrared (thermal) camera sensor_msgs/Image topic'),
        DeclareLaunchArgument(
            'detector_model', default_value='',
            description="YOLO weights, a path or an Ultralytics name (downloaded when online); "
                        "'' = the params file's model (yolo11n.pt in the package YAML)"),
        DeclareLaunchArgument(
            'device', default_value='',
            description="Inference device of both networks: auto, cpu, cuda or cuda:N; "
                        "'' = the params file's (auto in the package YAML)"),
        DeclareLaunchArgument(
            'use_rviz', default_value='false',
            description='Start RViz with the image panels (skipped with a message where '
                        'rviz2 is not installed)'),
        DeclareLaunchArgument(
            'rviz_config',
            default_value=PathJoinSubstitution([share, 'config', 'fusion_detect.rviz']),
            description='RViz configuration file (relative topics: it follows namespace)'),
    ]
    remappings = [('visible/image_raw', LaunchConfiguration('visible_topic')),
                  ('infrared/image_raw', LaunchConfiguration('infrared_topic'))]
    # The params file goes in as a scoped global parameter file: launch_ros passes global ones
    # first, so the overrides set after it (only those given on the command line) win, and every
    # value the user's YAML sets otherwise stays. Each group keeps its overrides to its node.
    def sim_time() -> SetParameter:
        return override('use_sim_time', 'use_sim_time', bool)

    fusion = GroupAction([
        SetParametersFromFile(LaunchConfiguration('params_file')),
        override('device', 'device'),
        sim_time(),
        Node(package=PACKAGE, executable='fusion_node', name='fusion_node', namespace=namespace,
             remappings=remappings, output='screen'),
    ], condition=Condition(predicate=params_file_exists))
    detection = GroupAction([
        SetParametersFromFile(LaunchConfiguration('params_file')),
        override('device', 'device'),
        override('model', 'detector_model'),
        sim_time(),
        Node(package=PACKAGE, executable='detection_node', name='detection_node',
             namespace=namespace, output='screen'),
    ])
    # A missing rviz2 must not fail the launch: launch would stop with both nodes left running.
    wants_rviz = IfCondition(LaunchConfiguration('use_rviz'))
    rviz = GroupAction([sim_time(), Node(
        package='rviz2', executable='rviz2', name='rviz2', namespace=namespace,
        arguments=['-d', LaunchConfiguration('rviz_config')], remappings=remappings,
        condition=Condition(predicate=lambda context: (
            wants_rviz.evaluate(context) and rviz_installed())),
        output='screen')])
    no_rviz = LogInfo(
        msg='use_rviz:=true, but rviz2 is not installed (pip mode has no RViz): running '
            'without it. On a full ROS install: apt install ros-$ROS_DISTRO-rviz2',
        condition=Condition(predicate=lambda context: (
            wants_rviz.evaluate(context) and not rviz_installed())))
    return LaunchDescription([*arguments, fusion, detection, rviz, no_rviz])
