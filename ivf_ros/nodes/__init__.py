"""ROS 2 adapters: nodes that turn messages into arrays, call the core and publish the result."""
