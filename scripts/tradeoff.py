#!/usr/bin/env python3
"""Map the brightness/fidelity trade-off: EN and VIF against Qabf, rendering knobs and baselines.

Qabf rewards a fused image that keeps each source's Sobel gradients as they are; brightening a
night frame amplifies the visible gradients, which Qabf penalises like losing them. This script
renders the validation night pairs with the shipped weights at several ``fusion_tone`` values
(with and without the local-contrast step: rendering settings, nothing is retrained), a classical
family that brightens the ``max`` fusion by histogram equalisation with a slope cap (CLAHE's clip
limit on one tile; cap 1 is ``max`` itself), and every classical baseline. It prints a Markdown
table and writes tradeoff.csv and tradeoff.png (Qabf across, VIF and EN up, the region that beats
every baseline on both shaded). Usage:
``python scripts/tradeoff.py [--weights W] [--output output/tradeoff]``.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ivf_ros.evaluation import baselines, metrics
from ivf_ros.evaluation.baselines import BASELINES
from ivf_ros.evaluation.plots import pyplot
from ivf_ros.evaluation.report import SOURCE_METHODS
from ivf_ros.fusion.inference import FusionModel
from ivf_ros.io.datasets import load_pair, VALIDATION_FUSION_FOLDER, validation_pairs

COLUMNS = ('EN', 'VIF', 'Qabf', 'SF', 'brightness', 'noise')
FUSION_TONES = (0.0, 0.2, 0.4, 0.6, 0.8)
SLOPE_CAPS = (1.0, 1.3, 1.6, 2.0, 3.0)
Fuse = Callable[[np.ndarray, np.ndarray], np.ndarray]


@dataclass
class Point:
    """One rendering: its family (a line in the plot), label and mean metrics."""

    family: str
    label: str
    means: dict[str, float]


def capped_equalisation(grey: np.ndarray, slope_cap: float) -> np.ndarray:
    """Return the 256-entry uint8 lookup table equalising (h, w) uint8 grey, slope <= slope_cap."""
    histogram = np.bincount(grey.ravel(), minlength=256).astype(np.float64)
    histogram /= histogram.sum()
    limit = slope_cap / 256.0   # a bin above the uniform share x cap is clipped ...
    for _ in range(20):         # ... and the excess redistributed evenly, until nothing is left
        excess = np.clip(histogram - limit, 0.0, None).sum()
        histogram = np.minimum(histogram, limit) + excess / 256.0
    return np.clip(np.rint(np.cumsum(histogram) * 255.0), 0, 255).astype(np.uint8)


def equalised_max(slope_cap: float) -> Fuse:
    """Return a fusion: the max rule on luma, brightened by capped equalisation (one tile)."""
    def fuse(visible: np.ndarray, infrared: np.ndarray) -> np.ndarray:
        fused_y = np.maximum(baselines.luminance(visible), infrared)     # (h, w) uint8
        if slope_cap > 1.0:   # cap 1 is the max baseline itself
            fused_y = capped_equalisation(fused_y, slope_cap)[fused_y]
        return baselines.with_luminance(visible, fused_y)
    return fuse


def model_renderer(model: FusionModel, fusion_tone: float, local_contrast: float) -> Fuse:
    """Return a fusion that renders with the given knobs (set just before each frame)."""
    config = model.network.config

    def fuse(visible: np.ndarray, infrared: np.ndarray) -> np.ndarray:
        config.fusion_tone, config.local_contrast = fusion_tone, local_contrast
        return model.fuse(visible, infrared)[0]
    return fuse


def mean_metrics(pairs: list[tuple[np.ndarray, np.ndarray]], fuse: Fuse) -> dict[str, float]:
    """Return the mean of COLUMNS over the pairs."""
    rows = [metrics.evaluate(visible, infrared, fuse(visible, infrared), COLUMNS)
            for visible, infrared in pairs]
    return {name: float(np.mean([row[name] for row in rows])) for name in COLUMNS}


def plot(points: list[Point], path: Path) -> None:
    """Save VIF-vs-Qabf and EN-vs-Qabf panels; shade what beats every baseline on both."""
    plt = pyplot()
    baseline_points = [p for p in points if p.family == 'baselines']
    families = list(dict.fromkeys(p.family for p in points if p.family != 'baselines'))
    figure, axes = plt.subplots(1, 2, figsize=(12, 5), constrained_layout=True)
    for axis, metric in zip(axes, ('VIF', 'EN'), strict=True):
        best_qabf = max(p.means['Qabf'] for p in baseline_points)
        best_metric = max(p.means[metric] for p in baseline_points)
        qabf = [p.means['Qabf'] for p in points]
        values = [p.means[metric] for p in points]
        x_high, y_high = max(qabf) + 0.08, max(values) + 0.1
        axis.fill_between([best_qabf, x_high], best_metric, y_high, color='tab:green',
                          alpha=0.12, label='beats every baseline on both')
        for family in families:
            members = [p for p in points if p.family == family]
            axis.plot([p.means['Qabf'] for p in members], [p.means[metric] for p in members],
                      'o-', label=family)
            for p in members:
                axis.annotate(p.label, (p.means['Qabf'], p.means[metric]), fontsize=7,
                              xytext=(3, 3), textcoords='offset points')
        for p in baseline_points:
            axis.plot(p.means['Qabf'], p.means[metric], 'k^')
            axis.annotate(p.label, (p.means['Qabf'], p.means[metric]), fontsize=8,
                          xytext=(4, -10), textcoords='offset points')
        axis.set_xlim(min(qabf) - 0.03, x_high)
        axis.set_ylim(min(values) - 0.1, y_high)
        axis.set_xlabel('Qabf (source gradients kept as they are)')
        axis.set_ylabel(metric)
        axis.grid(alpha=0.3)
    axes[0].legend(fontsize=8, loc='upper center')
    figure.suptitle('Validation night pairs (means): brightening buys VIF and EN with Qabf')
    figure.savefig(path, dpi=90)
    plt.close(figure)


def main(argv: list[str] | None = None) -> int:
    """Render every setting, print the table, write the CSV and the plot."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--weights', type=Path, default=None, help='default: shipped weights')
    parser.add_argument('--output', type=Path, default=Path('output/tradeoff'))
    parser.add_argument('--device', default='auto')
    args = parser.parse_args(argv)
    # The MSRS night pairs of the validation split, as every fusion-metric table reports.
    found = [pair for pair in validation_pairs() if pair.dataset == VALIDATION_FUSION_FOLDER]
    if not found:
        parser.error('no validation pairs: ../shared/datasets/msrs is missing')
    pairs = [load_pair(pair) for pair in found]
    # No CUDA graphs: a captured graph would replay the first frame's knob values.
    model = FusionModel.load(args.weights, device=args.device, cuda_graphs=False)
    shipped = (model.network.config.fusion_tone, model.network.config.local_contrast)
    settings: list[tuple[str, str, Fuse]] = [
        ('baselines', name, function) for name, function in BASELINES.items()
        if name not in SOURCE_METHODS]
    # dict.fromkeys: shipped weights without the step (0) would render that family twice.
    for local_contrast in dict.fromkeys((shipped[1], 0.0)):
        family = f'ours, local_contrast {local_contrast:g}'
        settings += [(family, f'tone {tone:g}' + (' (shipped)' if (tone, local_contrast) == shipped
                                                else ''),
                      model_renderer(model, tone, local_contrast))
                     for tone in sorted({*FUSION_TONES, shipped[0]})]
    settings += [('max + capped equalisation', f'cap {cap:g}', equalised_max(cap))
                 for cap in SLOPE_CAPS]
    points = [Point(family, label, mean_metrics(pairs, fuse))
              for family, label, fuse in tqdm(settings, desc='rendering', unit='setting')]
    model.network.config.fusion_tone, model.network.config.local_contrast = shipped

    print(f'{len(pairs)} validation night pairs; shipped: fusion_tone {shipped[0]:g}, '
          f'local_contrast {shipped[1]:g}')
    print('| family | setting | ' + ' | '.join(COLUMNS) + ' |')
    print('|---|---|' + '---|' * len(COLUMNS))
    for p in points:
        print(f'| {p.family} | {p.label} | '
              + ' | '.join(f'{p.means[name]:.3f}' for name in COLUMNS) + ' |')
    args.output.mkdir(parents=True, exist_ok=True)
    with open(args.output / 'tradeoff.csv', 'w', newline='') as stream:
        writer = csv.writer(stream)
        writer.writerow(['family', 'setting', *COLUMNS])
        writer.writerows([p.family, p.label, *(f'{p.means[n]:.4f}' for n in COLUMNS)]
                         for p in points)
    plot(points, args.output / 'tradeoff.png')
    print(f'table: {args.output / "tradeoff.csv"}  plot: {args.output / "tradeoff.png"}')
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
