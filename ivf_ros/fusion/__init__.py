"""The fusion network: its layers, the fixed rendering maths, inference and ONNX export.

May import ivf_ros.io only; never rclpy, never training or evaluation.
"""
