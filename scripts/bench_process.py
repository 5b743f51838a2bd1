#!/usr/bin/env python3
"""Benchmark `ivf-bag process`: pairs/s at 640x512, fusion only and fusion + YOLO11n detection."""

from __future__ import annotations

import argparse
from pathlib import Path
import sys
import tempfile

from benchlib import positive_int, time_models_alone

from ivf_ros.cli.bag import parse_size, process_bag, ProcessOptions
from ivf_ros.io import bagio
from ivf_ros.io.paths import shared_dir


def yolo11n_weights(folder: Path) -> tuple[Path, str]:
    """Return COCO YOLO11n from ../shared, else the same network built from yaml (same speed)."""
    shared = shared_dir() / 'weights' / 'yolo11n' / 'yolo11n-rebuilt.pt'
    if shared.is_file():
        return shared, 'yolo11n (COCO, ../shared)'
    from ultralytics import YOLO

    path = folder / 'yolo11n_random.pt'
    YOLO('yolo11n.yaml').save(path)
    return path, 'yolo11n architecture, random weights (same cost)'


def main(argv: list[str] | None = None) -> int:
    """Make a synthetic 640x512 bag, process it twice, print the throughput table."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument('--frames', type=positive_int, default=20)
    parser.add_argument('--size', type=parse_size, default='640x512', help='WIDTHxHEIGHT')
    parser.add_argument('--device', default='auto')
    parser.add_argument('--storage', default='sqlite3', choices=tuple(bagio.STORAGES))
    args = parser.parse_args(argv)
    width, height = args.size
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        bag = folder / 'night'
        bagio.write_pairs(bag, bagio.synthetic_pairs(args.frames, width, height),
                          storage=args.storage)
        detector, detector_name = yolo11n_weights(folder)
        rows = []
        for name, weights in (('fusion only', None), ('fusion + detection', detector)):
            options = ProcessOptions(detector=str(weights) if weights else None,
                                     device=args.device, storage=args.storage)
            stats = process_bag(bag, folder / f'out_{len(rows)}', options, progress=False)
            summary = stats.summary()
            rows.append((name, summary['fps'], summary['fusion_ms_median'],
                         min(stats.fusion_ms), summary['detection_ms_median'],
                         min(stats.detection_ms, default=0.0), stats.pairs))
    print(f'ivf-bag process, {args.frames} synthetic pairs {width}x{height}, device '
          f'{args.device}, storage {args.storage}; detector: {detector_name}')
    print(f'{"pipeline":<20} {"pairs/s":>8} {"fusion ms p50/min":>18} '
          f'{"detect ms p50/min":>18} {"pairs":>6}')
    for name, fps, fusion_ms, fusion_min, detection_ms, detection_min, pairs in rows:
        print(f'{name:<20} {fps:>8.2f} {fusion_ms:>9.1f} /{fusion_min:>7.1f} '
              f'{detection_ms:>9.1f} /{detection_min:>7.1f} {pairs:>6}')
    print('pairs/s: reading, decoding, pairing, models and writing the output bag (end to end); '
          'min = the uncontended cost on a shared machine')
    alone = time_models_alone(width, height, args.device, str(detector))
    ideal = 1e3 / (alone['fusion_ms'] + alone['yolo_ms'])
    fps = rows[1][1]
    print(f'bar: fusion + detection {fps:.2f} pairs/s >= 0.9 x 1 / (fusion '
          f'{alone["fusion_ms"]:.1f} + YOLO {alone["yolo_ms"]:.1f} ms, timed alone in this run) '
          f'= {0.9 * ideal:.2f}: '
          f'{"met" if fps >= 0.9 * ideal else "NOT met"}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
