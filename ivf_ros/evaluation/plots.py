"""Figures for reports and training logs (matplotlib's Agg backend: no display needed)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
import csv
import math
from pathlib import Path
from types import ModuleType

import cv2
import numpy as np

from ivf_ros.io.datasets import resize_to

GRID_IMAGE_WIDTH = 320  # pixels per cell of an image grid
# Training-log columns that are shares in [0, 1] (stage 3's gate), with their legend text.
GAUGES = {'gate_w': 'mean working-grid gate w (1 = infrared)',
          'gate_saturated': 'saturated gate share'}


def pyplot() -> ModuleType:
    """Import pyplot with the file-only Agg backend (headless CI, SSH sessions)."""
    import matplotlib

    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    return plt


def save_image_grid(rows: Sequence[tuple[str, Sequence[np.ndarray]]], columns: Sequence[str],
                    path: Path) -> None:
    """Save a grid of images: one labelled row per entry, one titled column per image.

    Images are RGB (h, w, 3) or grey (h, w) uint8; each cell is GRID_IMAGE_WIDTH wide.
    """
    plt = pyplot()
    first = rows[0][1][0]
    aspect = first.shape[0] / first.shape[1]
    cell_w = GRID_IMAGE_WIDTH / 100.0  # inches at 100 dpi
    figure, axes = plt.subplots(len(rows), len(columns), squeeze=False,
                                figsize=(cell_w * len(columns), cell_w * aspect * len(rows) + 0.6))
    for row_index, (label, images) in enumerate(rows):
        for column_index, (title, image) in enumerate(zip(columns, images, strict=True)):
            if image.ndim == 2:
                image = cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
            axis = axes[row_index][column_index]
            height = round(GRID_IMAGE_WIDTH * image.shape[0] / image.shape[1])
            axis.imshow(resize_to(image, height, GRID_IMAGE_WIDTH))
            axis.set_xticks([])
            axis.set_yticks([])
            if row_index == 0:
                axis.set_title(title, fontsize=12)
            if column_index == 0:
                axis.set_ylabel(label, fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def save_bar_chart(values: Mapping[str, Mapping[str, Sequence[float]]], path: Path,
                   titles: Mapping[str, str] | None = None, suptitle: str = '') -> None:
    """Save one bar panel per metric (mean with std error bars), methods side by side.

    ``values[metric][method]`` holds the per-image values; ``titles`` names the panels.
    """
    plt = pyplot()
    metrics = list(values)
    methods = list(next(iter(values.values()))) if values else []
    columns = 4
    rows = max(1, math.ceil(len(metrics) / columns))
    figure, axes = plt.subplots(rows, columns, squeeze=False,
                                figsize=(4.2 * columns, 2.9 * rows + 0.4))
    colours = plt.get_cmap('tab10')(np.arange(len(methods)) % 10)
    positions = np.arange(len(methods))
    for index, metric in enumerate(metrics):
        axis = axes[index // columns][index % columns]
        means = [float(np.mean(values[metric][name])) for name in methods]
        stds = [float(np.std(values[metric][name])) for name in methods]
        finite = [value if math.isfinite(value) else 0.0 for value in means]
        axis.bar(positions, finite, yerr=[s if math.isfinite(s) else 0 for s in stds],
                 color=colours, capsize=3)
        axis.set_title((titles or {}).get(metric, metric), fontsize=11)
        axis.set_xticks(positions)
        axis.set_xticklabels(methods, rotation=35, ha='right', fontsize=8)
        axis.tick_params(axis='y', labelsize=8)
        axis.grid(axis='y', alpha=0.3)
    for index in range(len(metrics), rows * columns):
        axes[index // columns][index % columns].axis('off')
    if suptitle:
        figure.suptitle(suptitle, fontsize=12)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def save_loss_curves(csv_path: Path, png_path: Path, title: str) -> None:
    """Draw a training CSV log's losses (log axis) and GAUGES shares (second axis) into a PNG."""
    plt = pyplot()
    with csv_path.open() as handle:
        rows = list(csv.DictReader(handle))
    if not rows:
        return
    steps = [int(row['step']) for row in rows]
    names = [name for name in rows[0] if name not in ('step', 'lr', 'elapsed_s', *GAUGES)]
    figure, axis = plt.subplots(figsize=(8, 4.5))
    for name in names:
        values = [max(float(row[name]), 1e-8) for row in rows]
        axis.plot(steps, values, label=name, linewidth=2.0 if name == 'total' else 1.0)
    axis.set_yscale('log')
    axis.set_xlabel('step')
    axis.set_ylabel('loss (unweighted terms, weighted total)')
    axis.set_title(title)
    axis.grid(True, alpha=0.3)
    gauges = [name for name in GAUGES if name in rows[0]]
    axis.legend(fontsize=8, loc='upper left' if gauges else 'best')
    if gauges:   # shares in [0, 1], not losses: their own linear axis, dashed
        shares = axis.twinx()
        for name, colour in zip(gauges, ('black', 'grey'), strict=False):
            shares.plot(steps, [float(row[name]) for row in rows], '--', color=colour,
                        linewidth=1.0, label=GAUGES[name])
        shares.set_ylim(0.0, 1.0)
        shares.set_ylabel('share')
        shares.legend(fontsize=8, loc='upper right')
    figure.tight_layout()
    figure.savefig(png_path, dpi=100)
    plt.close(figure)
