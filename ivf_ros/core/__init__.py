"""Pure algorithms of ivf_ros: no rclpy or ROS message imports here, so they test without ROS."""
