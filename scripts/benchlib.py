"""What the benchmarks share: argument types; the models timed alone, each on the whole machine."""

from __future__ import annotations

import argparse
from collections.abc import Callable
import math
import os
import time

import numpy as np


def positive_int(text: str) -> int:
    """Return text as an integer of at least 1 (an argparse type: counts, repeats, sizes)."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f'must be an integer >= 1, got {text}')
    return value


def positive_float(text: str) -> float:
    """Return text as a finite number above 0 (an argparse type: rates)."""
    value = float(text)
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f'must be a finite number above 0, got {text}')
    return value


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
    """Return median ms of fusion, YOLO and decoding one pair, each alone, in this run.

    Each model is timed with every core and with one thread; the faster of the two counts
    (the strictest bar: on a busy 2-core machine two threads can be several times slower).
    """
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
    fused = fusion.run(pair.visible, pair.infrared).fused
    visible_msg = array_to_image_msg(pair.visible, 'rgb8', Header())
    infrared_msg = array_to_image_msg(pair.infrared, 'mono8', Header())

    def decode() -> None:
        to_rgb8(*image_msg_to_array(visible_msg))
        to_mono8(*image_msg_to_array(infrared_msg))

    timings: dict[str, float] = {}
    for threads in sorted({os.cpu_count() or 1, 1}, reverse=True):
        use_threads(threads)  # Ultralytics set 1 for this thread: set it for each trial
        timings[f'fusion_ms_{threads}t'] = median_ms(
            lambda: fusion.run(pair.visible, pair.infrared), 20)
        timings[f'yolo_ms_{threads}t'] = median_ms(lambda: yolo.detect(fused), 20)
    timings['fusion_ms'] = min(v for k, v in timings.items() if k.startswith('fusion_ms_'))
    timings['yolo_ms'] = min(v for k, v in timings.items() if k.startswith('yolo_ms_'))
    timings['decode_ms'] = median_ms(decode, 50)
    return timings
