"""Command-line tools (ivf-eval, ivf-train, ivf-bag, ivf-demo, ivf-export).

The top layer: may import every other package; tools that need no ROS import no node.
"""
