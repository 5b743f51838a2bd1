"""Figures for reports and training logs (matplotlib's Agg backend: no display needed)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
import csv
from dataclasses import dataclass
import math
from pathlib import Path
import textwrap
from types import ModuleType

import cv2
import numpy as np

from ivf_ros.io.datasets import resize_to

GRID_IMAGE_WIDTH = 320  # pixels per cell of an image grid
# Characters of a 12-point column title that fit a GRID_IMAGE_WIDTH cell: longer ones wrap.
GRID_TITLE_CHARS = 30
# Training-log columns that are shares in [0, 1] (stage 3's gate), with their legend text.
GAUGES = {'gate_w': 'mean working-grid gate w (1 = infrared)',
          'gate_saturated': 'saturated gate share'}


def pyplot() -> ModuleType:
    """Import pyplot with the file-only Agg backend (headless CI, SSH sessions)."""
    import matplotlib

    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    return plt


def wrap_label(text: str, width: int) -> str:
    """Return text broken into lines of at most width characters (long names too)."""
    # Pair keys (dataset/name) break best after the slash: a space there lets textwrap.
    lines = textwrap.wrap(text.replace('/', '/ '), width, break_on_hyphens=False)
    return '\n'.join(line.replace('/ ', '/') for line in lines) or text


def save_image_grid(rows: Sequence[tuple[str, Sequence[np.ndarray]]], columns: Sequence[str],
                    path: Path) -> None:
    """Save a grid of images: one labelled row per entry, one titled column per image.

    Images are RGB (h, w, 3) or grey (h, w) uint8; each cell is GRID_IMAGE_WIDTH wide.
    """
    plt = pyplot()
    # Each row is as tall as its tallest image at the cell width, so that rows of other sizes
    # (portrait frames, mixed datasets) are not shrunk into the first row's aspect.
    aspects = [max(image.shape[0] / image.shape[1] for image in images) for _, images in rows]
    cell_w = GRID_IMAGE_WIDTH / 100.0  # inches at 100 dpi
    title_lines = max(wrap_label(title, GRID_TITLE_CHARS).count('\n') + 1 for title in columns)
    figure, axes = plt.subplots(
        len(rows), len(columns), squeeze=False, gridspec_kw={'height_ratios': aspects},
        figsize=(cell_w * len(columns), cell_w * sum(aspects) + 0.25 + 0.22 * title_lines))
    for row_index, (label, images) in enumerate(rows):
        # The row label runs up the first image: about 7 pixels per 10-point character.
        first = images[0]
        label_chars = max(GRID_TITLE_CHARS // 2,
                          round(GRID_IMAGE_WIDTH * first.shape[0] / first.shape[1] / 7))
        for column_index, (title, image) in enumerate(zip(columns, images, strict=True)):
            if image.ndim == 2:
                image = cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
            axis = axes[row_index][column_index]
            height = round(GRID_IMAGE_WIDTH * image.shape[0] / image.shape[1])
            axis.imshow(resize_to(image, height, GRID_IMAGE_WIDTH))
            axis.set_anchor('N')   # a shorter image than its row sits under the column title
            axis.set_xticks([])
            axis.set_yticks([])
            if row_index == 0:
                axis.set_title(wrap_label(title, GRID_TITLE_CHARS), fontsize=12)
            if column_index == 0:
                axis.set_ylabel(wrap_label(label, label_chars), fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


@dataclass(frozen=True)
class Summary:
    """Mean and std of a metric over its finite values, and how many were +inf, -inf, NaN."""

    mean: float
    std: float
    positive_inf: int = 0
    negative_inf: int = 0
    nan: int = 0

    @classmethod
    def of(cls, values: np.ndarray) -> Summary:
        """Summarise per-image values (PSNR is +inf where visible, infrared and F are equal)."""
        finite = values[np.isfinite(values)]
        mean, std = ((float(np.mean(finite)), float(np.std(finite))) if finite.size
                     else (math.nan, math.nan))
        return cls(mean, std, int(np.sum(values == math.inf)),
                   int(np.sum(values == -math.inf)), int(np.sum(np.isnan(values))))

    def rank(self, higher_is_better: bool) -> tuple[int, float]:
        """Return the sort key, larger = better: images at the better infinity, then the mean."""
        sign = 1 if higher_is_better else -1
        # No finite value ranks last in either direction (-inf under max).
        return (sign * (self.positive_inf - self.negative_inf),
                -math.inf if math.isnan(self.mean) else sign * self.mean)

    def note(self) -> str:
        """Return ' (1 +inf, 2 nan)'-style counts of the values left out of the mean, or ''."""
        counts = [(self.positive_inf, '+inf'), (self.negative_inf, '-inf'), (self.nan, 'nan')]
        parts = [f'{count} {name}' for count, name in counts if count]
        return f' ({", ".join(parts)})' if parts else ''


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
        # Bars of the finite values; the left-out ones (the PSNR of identical images is +inf)
        # are counted on the bar's foot, where a 0 bar alone would read as a value.
        summaries = [Summary.of(np.asarray(values[metric][name], dtype=np.float64))
                     for name in methods]
        axis.bar(positions, [0.0 if math.isnan(s.mean) else s.mean for s in summaries],
                 yerr=[0.0 if math.isnan(s.std) else s.std for s in summaries], color=colours,
                 capsize=3)
        for position, summary in zip(positions, summaries, strict=True):
            if summary.note():
                axis.text(position, 0.0, summary.note().strip(' ()'), ha='center',
                          va='bottom', fontsize=8, rotation=90)
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
