"""What the benchmarks share: the models timed alone, each on the whole machine, in this run."""

from __future__ import annotations

from collections.abc import Callable
import os
import time

import numpy as np


def median_ms(function: Callable[[], object], repeats: int) -> float:
    """Return the median wall time of function() in ms (after one warm-up call)."""
    function()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        times.append(time.perf_counter() - started)
    return float(np.median(times) * 1e3)


def time_models_alone(width: int, height: int, device: str, detector: str,
                      fusion_weights: str | None = None) -> dict[str, float]:
    """Return median ms of fusion, YOLO and decoding one pair, each alone with every core."""
    from std_msgs.msg import Header

    from ivf_ros.fusion.inference import FusionModel
    from ivf_ros.io.image_codec import to_mono8, to_rgb8
    from ivf_ros.io.synthetic import make_night_pair
    from ivf_ros.nodes.ros_image import array_to_image_msg, image_msg_to_array
    from ivf_ros.pipeline.detector import YoloDetector
    from ivf_ros.pipeline.runtime import use_threads

    pair = make_night_pair(seed=7, width=width, height=height)
    fusion = FusionModel.load(fusion_weights, device=device)
    yolo = YoloDetector(detector, imgsz=640, device=device)
    # Ultralytics leaves this thread with 1 thread: each model alone gets the whole machine.
    use_threads(os.cpu_count() or 1)
    fused = fusion.run(pair.visible, pair.infrared).fused
    visible_msg = array_to_image_msg(pair.visible, 'rgb8', Header())
    infrared_msg = array_to_image_msg(pair.infrared, 'mono8', Header())

    def decode() -> None:
        to_rgb8(*image_msg_to_array(visible_msg))
        to_mono8(*image_msg_to_array(infrared_msg))

    return {'fusion_ms': median_ms(lambda: fusion.run(pair.visible, pair.infrared), 20),
            'yolo_ms': median_ms(lambda: yolo.detect(fused), 20),
            'decode_ms': median_ms(decode, 50)}
