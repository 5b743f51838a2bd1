#!/usr/bin/env python3
"""Check the enhanced visible output on night frames: brightness, clipping, colour cast, noise.

Prints one row per validation pair (the night pairs of the validation split) and the means,
input beside output, and writes a PNG with input | enhanced | fused for a few pairs. Usage:
``python scripts/enhancement_report.py [--weights W] [--output output/enhancement]``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from ivf_ros.evaluation import metrics
from ivf_ros.fusion.inference import FusionModel
from ivf_ros.io.datasets import load_pair, validation_pairs

COLUMNS = ('brightness', 'clipped_luma', 'clipped_any', 'cast', 'noise')


def measure(image_rgb: np.ndarray) -> dict[str, float]:
    """Return the enhancement measures of one (h, w, 3) uint8 image."""
    grey = metrics.to_grey(image_rgb)
    return {
        'brightness': metrics.mean_brightness(grey) / 255.0,
        'clipped_luma': metrics.clipped_fraction(grey),
        'clipped_any': metrics.clipped_channels_fraction(image_rgb),
        'cast': metrics.colour_cast(image_rgb),
        'noise': metrics.noise_sigma(grey),
    }


def row(name: str, values: dict[str, float]) -> str:
    """Format one Markdown table row (fractions of pixels as percentages)."""
    return (f"| {name} | {values['brightness']:.3f} | {100 * values['clipped_luma']:.2f} % | "
            f"{100 * values['clipped_any']:.2f} % | {values['cast']:.3f} | "
            f"{values['noise']:.2f} |")


def main(argv: list[str] | None = None) -> int:
    """Enhance every validation pair, print the table, write the picture."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--weights', type=Path, default=None, help='default: shipped weights')
    parser.add_argument('--output', type=Path, default=Path('output/enhancement'))
    parser.add_argument('--examples', type=int, default=4, help='pairs in the PNG (0: none)')
    parser.add_argument('--device', default='auto')
    args = parser.parse_args(argv)
    if args.examples < 0:
        parser.error(f'--examples must be 0 or more, got {args.examples}')
    pairs = validation_pairs()
    if not pairs:
        parser.error('no validation pairs: ../shared/datasets is missing')
    model = FusionModel.load(args.weights, device=args.device)
    print('| pair / mean | brightness (0-1) | clipped luma | clipped any channel | cast | noise |')
    print('|---|---|---|---|---|---|')
    inputs, outputs, tiles = [], [], []
    for pair in tqdm(pairs, desc='enhancing', leave=False):
        visible, infrared = load_pair(pair)
        result = model.run(visible, infrared, with_enhanced=True)
        inputs.append(measure(visible))
        outputs.append(measure(result.enhanced))
        tqdm.write(row(f'{pair.name} input', inputs[-1]))   # keeps the bar below the rows
        tqdm.write(row(f'{pair.name} enhanced', outputs[-1]))
        if len(tiles) < args.examples:
            tiles.append(np.hstack([visible, result.enhanced, result.fused]))
    for name, values in (('mean input', inputs), ('mean enhanced', outputs)):
        print(row(f'**{name}**', {key: float(np.mean([v[key] for v in values]))
                                  for key in COLUMNS}))
    if not tiles:
        return 0
    args.output.mkdir(parents=True, exist_ok=True)
    picture = args.output / 'enhancement.png'
    height = min(tile.shape[0] for tile in tiles)
    grid = np.vstack([cv2.resize(tile, (tile.shape[1] * height // tile.shape[0], height))
                      for tile in tiles])
    small = cv2.resize(grid, (grid.shape[1] // 2, grid.shape[0] // 2),
                       interpolation=cv2.INTER_AREA)
    cv2.imwrite(str(picture), cv2.cvtColor(small, cv2.COLOR_RGB2BGR))
    print(f'picture (input | enhanced | fused): {picture}')
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
