#!/usr/bin/env python3
"""Time the fusion metrics and baselines on one visible/infrared pair; prints milliseconds."""

from __future__ import annotations

import argparse
import time

from benchlib import median_ms, positive_int

from ivf_ros.evaluation.baselines import BASELINES
from ivf_ros.evaluation.metrics import evaluate, METRICS
from ivf_ros.io.datasets import (
    load_pair,
    resize_to,
    VALIDATION_FUSION_FOLDER,
    validation_pairs,
)
from ivf_ros.io.paths import datasets_dir
from ivf_ros.io.synthetic import make_night_pair


def main() -> None:
    """Print per-metric, whole-evaluate and per-baseline times for a width x height pair."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument('--width', type=positive_int, default=640)
    parser.add_argument('--height', type=positive_int, default=480)
    parser.add_argument('--repeats', type=positive_int, default=5)
    args = parser.parse_args()
    msrs = ([pair for pair in validation_pairs() if pair.dataset == VALIDATION_FUSION_FOLDER]
            if (datasets_dir() / VALIDATION_FUSION_FOLDER).is_dir() else [])
    if msrs:   # validation_pairs()[0] is not an MSRS pair: name what is timed
        visible, infrared = load_pair(msrs[0])
        source = f'{msrs[0].dataset}/{msrs[0].name}'
    else:  # a fresh clone without ../shared: the synthetic night scene
        pair = make_night_pair(seed=0, width=args.width, height=args.height)
        visible, infrared, source = pair.visible, pair.infrared, 'synthetic'
    visible = resize_to(visible, args.height, args.width)
    infrared = resize_to(infrared, args.height, args.width)
    fused = BASELINES['laplacian'](visible, infrared)
    print(f'{source}, {args.width}x{args.height}, median of {args.repeats} runs')
    evaluate(visible, infrared, fused)  # warm-up: first calls pay for OpenCV's lazy set-up
    for name in METRICS:
        milliseconds = median_ms(lambda n=name: evaluate(visible, infrared, fused, [n]),
                                 args.repeats)
        print(f'  {name:12s} {milliseconds:8.1f} ms')
    total = median_ms(lambda: evaluate(visible, infrared, fused), args.repeats)
    # CPU time too: on a shared machine the wall time mostly measures the neighbours.
    start = time.process_time()
    for _ in range(args.repeats):
        evaluate(visible, infrared, fused)
    cpu_ms = 1000.0 * (time.process_time() - start) / args.repeats
    print(f'  {"evaluate()":12s} {total:8.1f} ms wall, {cpu_ms:.1f} ms CPU '
          f'(all {len(METRICS)} metrics)')
    for name, fuse in BASELINES.items():
        milliseconds = median_ms(lambda f=fuse: f(visible, infrared), args.repeats)
        print(f'  baseline {name:16s} {milliseconds:8.1f} ms')


if __name__ == '__main__':
    main()
