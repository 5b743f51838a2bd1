"""ROS 2 adapters: messages in, arrays to the pipeline, messages out; node parameter specs.

The only package that imports rclpy; may import io, fusion and pipeline, never cli.
"""
