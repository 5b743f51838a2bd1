"""Data in and out: image encodings, rosbag2 files, datasets on disk, synthetic scenes, paths.

The bottom layer: imports nothing else of ivf_ros and never rclpy (bags are read with rosbags).
"""
