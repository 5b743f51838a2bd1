"""Command-line tools (ivf-eval, ivf-train, ivf-bag, ivf-demo); they need no ROS install."""
