"""Training the fusion network in three stages: config, losses and the trainer.

May import io, fusion, pipeline and evaluation; never rclpy or the adapters.
"""
