"""The frame pipeline shared by the nodes and ivf-bag: pairing, registration, detector, workers.

May import ivf_ros.io and ivf_ros.fusion; never rclpy (the nodes adapt it to ROS).
"""
