"""Launch the visible-infrared fusion node and the YOLO detection node (optionally RViz)."""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue
from launch_ros.substitutions import FindPackageShare

PACKAGE = 'ivf_ros'


def generate_launch_description() -> LaunchDescription:
    """Return fusion_node + detection_node configured from the package YAML, plus RViz."""
    share = FindPackageShare(PACKAGE)
    params_file = LaunchConfiguration('params_file')
    namespace = LaunchConfiguration('namespace')
    use_sim_time = ParameterValue(LaunchConfiguration('use_sim_time'), value_type=bool)
    arguments = [
        DeclareLaunchArgument(
            'params_file', default_value=PathJoinSubstitution([share, 'config', 'ivf_ros.yaml']),
            description='ROS params file for both nodes (keys /**/fusion_node, '
                        '/**/detection_node)'),
        DeclareLaunchArgument(
            'namespace', default_value='', description='Namespace of both nodes and topics'),
        DeclareLaunchArgument(
            'use_sim_time', default_value='false',
            description='Use /clock (true when replaying a bag with --clock)'),
        DeclareLaunchArgument(
            'visible_topic', default_value='visible/image_raw',
            description='Visible camera sensor_msgs/Image topic'),
        DeclareLaunchArgument(
            'infrared_topic', default_value='infrared/image_raw',
            description='Infrared (thermal) camera sensor_msgs/Image topic'),
        DeclareLaunchArgument(
            'detector_model', default_value='yolo11n.pt',
            description='YOLO weights: a path, or an Ultralytics name (downloaded only online)'),
        DeclareLaunchArgument(
            'device', default_value='auto',
            description='Inference device of both networks: auto, cpu or cuda:N'),
        DeclareLaunchArgument(
            'use_rviz', default_value='false', description='Start RViz with the image panels'),
        DeclareLaunchArgument(
            'rviz_config',
            default_value=PathJoinSubstitution([share, 'config', 'fusion_detect.rviz']),
            description='RViz configuration file'),
    ]
    device = ParameterValue(LaunchConfiguration('device'), value_type=str)
    fusion_node = Node(
        package=PACKAGE, executable='fusion_node', name='fusion_node', namespace=namespace,
        parameters=[params_file, {'use_sim_time': use_sim_time, 'device': device}],
        remappings=[('visible/image_raw', LaunchConfiguration('visible_topic')),
                    ('infrared/image_raw', LaunchConfiguration('infrared_topic'))],
        output='screen')
    detection_node = Node(
        package=PACKAGE, executable='detection_node', name='detection_node', namespace=namespace,
        parameters=[params_file, {
            'use_sim_time': use_sim_time, 'device': device,
            'model': ParameterValue(LaunchConfiguration('detector_model'), value_type=str)}],
        output='screen')
    rviz = Node(
        package='rviz2', executable='rviz2', name='rviz2', namespace=namespace,
        arguments=['-d', LaunchConfiguration('rviz_config')],
        parameters=[{'use_sim_time': use_sim_time}],
        condition=IfCondition(LaunchConfiguration('use_rviz')), output='screen')
    return LaunchDescription([*arguments, fusion_node, detection_node, rviz])
