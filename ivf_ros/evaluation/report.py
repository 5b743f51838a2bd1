"""Evaluate fusion methods on paired images and write a Markdown + CSV + PNG report.

A *method* turns a (visible RGB, infrared) pair into a fused RGB image. Three kinds are
resolved from a command-line spec by :func:`resolve_method`: a classical baseline name
(``laplacian``), a folder of already fused images named like the pairs, or a fusion-network
checkpoint (``*.pt``, loaded through :class:`ivf_ros.fusion.inference.FusionModel`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
import csv
from dataclasses import dataclass, field
import math
from pathlib import Path
import time

import numpy as np
from tqdm import tqdm

from ivf_ros.evaluation import plots
from ivf_ros.evaluation.baselines import BASELINES
from ivf_ros.evaluation.detection import (
    DetectFunction,
    DetectionScores,
    LabelFreeStats,
    MapAccumulator,
    markdown_summary,
    read_yolo_labels,
)
from ivf_ros.evaluation.metrics import evaluate, METRICS
from ivf_ros.evaluation.plots import Summary
from ivf_ros.io.datasets import (
    DatasetError,
    IMAGE_SUFFIXES,
    is_night,
    load_pair,
    load_visible,
    PairedImage,
)

# The pass-through baselines are the inputs themselves: shown for reference, never 'best'.
SOURCE_METHODS = frozenset({'visible', 'infrared'})
CHECKPOINT_SUFFIXES = frozenset({'.pt', '.pth'})
MODEL_SPEC = 'model'  # the shipped weights, share/ivf_ros/models/ivf_fusion.pt
FUSE_TIME_COLUMN = 'fuse_ms'
# Pair keys named in the report's note on resized infrared images (the rest are counted).
RESIZED_SHOWN = 10
# Metrics that are shares in [0, 1]: the table and the bar chart show them in percent.
PERCENT_METRICS = frozenset({'clipped', 'clipped_rgb'})


class MethodError(ValueError):
    """A method spec names nothing usable, or a method cannot fuse a pair."""


@dataclass
class Method:
    """A named fusion method: fuse(pair, visible_rgb, infrared) -> fused (h, w, 3) uint8 RGB."""

    name: str
    kind: str  # 'baseline' | 'folder' | 'model'
    fuse: Callable[[PairedImage, np.ndarray, np.ndarray], np.ndarray]
    source: str = ''
    # A pass-through of an input (the visible or infrared baseline, whatever its label):
    # shown for reference, never 'best', not repeated in the image grid.
    is_input: bool = False

    def apply(self, pair: PairedImage, visible: np.ndarray, infrared: np.ndarray) -> np.ndarray:
        """Fuse one pair; a pair the method refuses is a MethodError naming both."""
        try:
            return self.fuse(pair, visible, infrared)
        except MethodError:
            raise
        except ValueError as error:   # FusionInputError of a baseline or the network
            raise MethodError(f'method {self.name} on {pair.key}: {error}') from error


def _baseline_method(name: str) -> Method:
    """Wrap BASELINES[name] as a Method."""
    function = BASELINES[name]
    return Method(name, 'baseline', lambda pair, visible, infrared: function(visible, infrared),
                  f'ivf_ros.evaluation.baselines.{function.__name__}',
                  is_input=name in SOURCE_METHODS)


def _folder_method(name: str, folder: Path) -> Method:
    """Read fused images from folder by pair name (any image suffix; grey is replicated)."""
    suffixes = sorted(IMAGE_SUFFIXES)

    def fuse(pair: PairedImage, visible: np.ndarray, infrared: np.ndarray) -> np.ndarray:
        # Result folders mirror the datasets (dataset/name.png) or are flat (name.png); the
        # mirrored form wins because names may repeat across datasets.
        candidates = [folder / pair.dataset / f'{pair.name}{suffix}' for suffix in suffixes]
        candidates += [folder / f'{pair.name}{suffix}' for suffix in suffixes]
        for path in candidates:
            if path.is_file():
                fused = load_visible(path)
                if fused.shape[:2] != visible.shape[:2]:
                    raise MethodError(
                        f'{path} is {fused.shape[1]}x{fused.shape[0]}, but the pair '
                        f'{pair.key} is {visible.shape[1]}x{visible.shape[0]}')
                return fused
        raise MethodError(f'method {name}: no fused image for {pair.key} in {folder}')

    return Method(name, 'folder', fuse, str(folder))


def _model_method(name: str, checkpoint: Path | None, device: str) -> Method:
    """Load a fusion-network checkpoint through the one inference API (imported lazily)."""
    try:
        from ivf_ros.fusion.inference import FusionModel
    except ImportError as error:  # the network module is optional for baseline-only reports
        raise MethodError(
            f'cannot evaluate {checkpoint or MODEL_SPEC}: ivf_ros.fusion.inference is not '
            f'available ({error})') from error
    try:
        model = FusionModel.load(checkpoint, device=device)
    except (RuntimeError, ValueError) as error:  # ModelLoadError names the file; bad device
        raise MethodError(str(error)) from error
    return Method(name, 'model', lambda pair, visible, infrared: model.fuse(visible, infrared)[0],
                  f'{checkpoint or "shipped weights"} on {model.device}')


def resolve_method(spec: str, device: str = 'auto') -> Method:
    """
    Resolve a method spec: a baseline name, 'model', a fused-image folder or a checkpoint.

    'label=spec' sets the name shown in the report (default: the baseline name, the folder's or
    checkpoint's stem). Errors name the spec and the accepted forms.
    """
    label, _, target = spec.rpartition('=')
    if target in BASELINES:
        method = _baseline_method(target)
        method.name = label or target
        return method
    if target == MODEL_SPEC:
        return _model_method(label or MODEL_SPEC, None, device)
    path = Path(target).expanduser()
    if path.is_dir():
        return _folder_method(label or path.name, path)
    if path.is_file() and path.suffix in CHECKPOINT_SUFFIXES:
        return _model_method(label or path.stem, path, device)
    raise MethodError(
        f'unknown method {spec!r}: expected a baseline ({", ".join(BASELINES)}), '
        f"'{MODEL_SPEC}' (shipped weights), a folder of fused images or a checkpoint "
        f'({", ".join(sorted(CHECKPOINT_SUFFIXES))})')


@dataclass
class DetectionSetup:
    """A detector run on every fused image; labels_dir holds YOLO '<pair name>.txt' files."""

    detect: DetectFunction
    names: dict[int, str]
    description: str = ''
    labels_dir: Path | None = None

    # Label ids the user chose to leave out ('-' in --label-names): their targets are dropped.
    ignored_ids: frozenset[int] = frozenset()
    # The label-free table counts detections at or above this score: mAP wants every box down
    # to 0.001, counts of near-zero boxes would say nothing.
    count_confidence: float = 0.0

    def label_path(self, pair: PairedImage) -> Path:
        """Return a pair's label file: labels_dir/dataset/name.txt, else labels_dir/name.txt."""
        if self.labels_dir is None:
            raise MethodError('no labels folder was given')
        nested = self.labels_dir / pair.dataset / f'{pair.name}.txt'
        return nested if nested.is_file() else self.labels_dir / f'{pair.name}.txt'

    def labels_for(self, pair: PairedImage, width: int, height: int) -> np.ndarray:
        """Return the (n, 5) targets of a pair in pixels, without the ignored ids."""
        path = self.label_path(pair)
        targets = read_yolo_labels(path, width, height)
        ids = targets[:, 0].astype(int)
        unnamed = sorted(set(ids.tolist()) - set(self.names) - self.ignored_ids)
        if unnamed:
            # Such targets would be in no class's AP: say so instead of leaving them out.
            raise MethodError(f"{path} has class ids {unnamed} that the detector's classes (or "
                              "--label-names, where '-' leaves an id out) do not name")
        return targets[~np.isin(ids, list(self.ignored_ids))]

    def check_labels(self, pairs: Sequence[PairedImage]) -> None:
        """Read every pair's label file once, so a bad one fails before any pair is fused."""
        if self.labels_dir is not None:
            for pair in pairs:
                self.labels_for(pair, 1, 1)


@dataclass
class Evaluation:
    """Per-image metric rows of several methods, plus fused images kept for the grid."""

    methods: list[Method]
    pairs: list[PairedImage]
    rows: list[dict[str, object]] = field(default_factory=list)
    # pair key -> (visible, infrared, {method: fused}) for the first few pairs only.
    examples: dict[str, tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]] = field(
        default_factory=dict)
    metric_names: list[str] = field(default_factory=lambda: list(METRICS))
    detection: DetectionSetup | None = None
    # method -> detections per image and confidences on its fused images (with a detector).
    label_free: dict[str, LabelFreeStats] = field(default_factory=dict)
    # method -> mAP on its fused images (with a detector and labels).
    detection_scores: dict[str, DetectionScores] = field(default_factory=dict)
    # Keys of the pairs whose infrared image was resized to the visible image's size.
    resized: list[str] = field(default_factory=list)
    # (pair key, reason) of the pairs left out because an image could not be read.
    unreadable: list[tuple[str, str]] = field(default_factory=list)

    def values(self, method: str, metric: str, dataset: str | None = None) -> np.ndarray:
        """Return one metric of one method over all its images (or one dataset's)."""
        return np.array([row[metric] for row in self.rows if row['method'] == method
                         and (dataset is None or row['dataset'] == dataset)], dtype=np.float64)

    def datasets(self) -> list[str]:
        """Return the dataset folder names in the order they first appear."""
        return list(dict.fromkeys(pair.dataset for pair in self.pairs))


def _middle_out(items: list[int]) -> list[int]:
    """Return items ordered from the middle outwards (a dataset's typical frame comes first)."""
    middle = len(items) // 2
    return [items[k] for k in sorted(range(len(items)), key=lambda k: abs(k - middle))]


def pick_examples(pairs: Sequence[PairedImage], count: int) -> set[int]:
    """Return count pair indices for the grid: one per dataset in turn, each from its middle."""
    by_dataset: dict[str, list[int]] = {}
    for index, pair in enumerate(pairs):
        by_dataset.setdefault(pair.dataset, []).append(index)
    queues = [_middle_out(indices) for indices in by_dataset.values()]
    chosen: list[int] = []
    while len(chosen) < min(count, len(pairs)):
        for queue in queues:
            if queue and len(chosen) < count:
                chosen.append(queue.pop(0))
    return set(chosen)


def evaluate_methods(pairs: Sequence[PairedImage], methods: Sequence[Method],
                     example_count: int = 4, metric_names: list[str] | None = None,
                     progress: bool = True,
                     detection: DetectionSetup | None = None) -> Evaluation:
    """Fuse every pair with every method and evaluate it; keep example_count pairs for grids."""
    if not pairs:
        raise MethodError('no image pairs to evaluate (check the folder, split and filters)')
    names = list(metric_names or METRICS)
    if detection is not None:
        detection.check_labels(pairs)
    result = Evaluation(list(methods), list(pairs), metric_names=names, detection=detection)
    accumulators: dict[str, MapAccumulator] = {}
    example_indices = pick_examples(pairs, example_count)
    bar = tqdm(total=len(pairs) * len(methods), desc='evaluating', unit='img',
               disable=not progress)
    for index, pair in enumerate(pairs):
        # A resized infrared image is counted: the report must say so.
        try:
            visible, infrared = load_pair(pair, on_resize=lambda p: result.resized.append(p.key))
        except DatasetError as error:
            # One corrupt file among hundreds: left out of every method alike (the comparison
            # stays paired), counted and named, not the end of the whole run.
            result.unreadable.append((pair.key, str(error)))
            bar.update(len(methods))
            continue
        fused_examples: dict[str, np.ndarray] = {}
        for method in methods:
            bar.set_postfix_str(f'{method.name} {pair.key}', refresh=False)
            start = time.perf_counter()
            fused = method.apply(pair, visible, infrared)
            fuse_ms = 1000.0 * (time.perf_counter() - start)
            row: dict[str, object] = {
                'method': method.name, 'dataset': pair.dataset, 'image': pair.name,
                'night': is_night(pair), FUSE_TIME_COLUMN: fuse_ms}
            row.update(evaluate(visible, infrared, fused, names))
            result.rows.append(row)
            if detection is not None:
                detections = detection.detect(fused)
                result.label_free.setdefault(method.name, LabelFreeStats()).add(
                    [box for box in detections if box.score >= detection.count_confidence])
                if detection.labels_dir is not None:
                    targets = detection.labels_for(pair, fused.shape[1], fused.shape[0])
                    accumulators.setdefault(method.name, MapAccumulator(detection.names)).add(
                        detections, targets, pair.key)
            if index in example_indices:
                fused_examples[method.name] = fused
            bar.update()
        if index in example_indices:
            result.examples[pair.key] = (visible, infrared, fused_examples)
    bar.close()
    if len(result.unreadable) == len(pairs):
        key, reason = result.unreadable[0]
        raise DatasetError(f'none of the {len(pairs)} pairs could be read (first: {reason})')
    left_out = {key for key, _ in result.unreadable}
    result.pairs = [pair for pair in result.pairs if pair.key not in left_out]
    result.detection_scores = {name: acc.scores() for name, acc in accumulators.items()}
    return result


# ---------------------------------------------------------------------------------------------
# Tables


def _arrow(metric: str) -> str:
    """Return the direction mark of a metric: up, down, or a dot where neither is better."""
    better = METRICS[metric].higher_is_better
    return '·' if better is None else ('↑' if better else '↓')


def best_methods(evaluation: Evaluation, metric: str,
                 dataset: str | None = None) -> set[str]:
    """Return the fusion methods (not the pass-through sources) with the best mean of metric."""
    better = METRICS[metric].higher_is_better
    candidates = [m.name for m in evaluation.methods if not m.is_input]
    if better is None or not candidates:
        return set()
    summaries = {name: Summary.of(evaluation.values(name, metric, dataset))
                 for name in candidates if evaluation.values(name, metric, dataset).size}
    # An infinite value is a real extreme (the PSNR of identical images), not a missing one:
    # more images at the better infinity rank first, then the mean of the finite values. NaN
    # alone has no rank.
    ranks = {name: summary.rank(better) for name, summary in summaries.items()
             if summary.rank(better) != (0, -math.inf)}
    if not ranks:
        return set()
    target = max(ranks.values())
    return {name for name, rank in ranks.items() if rank == target}


# Decimals shown per metric: enough to separate methods, no more (the CSV keeps full precision).
DECIMALS = {'SD': 2, 'SF': 2, 'PSNR': 2, 'PSNR_tang': 2, 'brightness': 1, 'LOE': 1}
DEFAULT_DECIMALS = 3


def _format(value: float, metric: str) -> str:
    """Format a value with the metric's number of decimals (clipped as a percentage)."""
    if not math.isfinite(value):
        return str(value)
    if metric in PERCENT_METRICS:
        return f'{100 * value:.2f}%'
    return f'{value:.{DECIMALS.get(metric, DEFAULT_DECIMALS)}f}'


def markdown_table(evaluation: Evaluation, dataset: str | None = None,
                   with_std: bool = True) -> str:
    """Return the methods x metrics table (mean ± std), the best per metric in bold."""
    metrics = evaluation.metric_names
    header = ['method', 'n'] + [f'{name} {_arrow(name)}' for name in metrics] + ['fuse ms']
    lines = ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
    best = {metric: best_methods(evaluation, metric, dataset) for metric in metrics}
    for method in evaluation.methods:
        count = evaluation.values(method.name, metrics[0], dataset).size
        if count == 0:
            continue
        cells = [method.name, str(count)]
        for metric in metrics:
            summary = Summary.of(evaluation.values(method.name, metric, dataset))
            if math.isnan(summary.mean):   # no finite value at all: say which kind there is
                text = 'n/a' + summary.note()
            else:
                text = _format(summary.mean, metric)
                if with_std:
                    text += f' ± {_format(summary.std, metric)}'
                text += summary.note()
            cells.append(f'**{text}**' if method.name in best[metric] else text)
        times = evaluation.values(method.name, FUSE_TIME_COLUMN, dataset)
        cells.append(f'{np.mean(times):.1f}')
        lines.append('| ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines)


def write_csv(evaluation: Evaluation, per_image_path: Path, summary_path: Path) -> None:
    """Write per-image rows and per-method mean/std (over all images) as CSV."""
    columns = ['method', 'dataset', 'image', 'night', FUSE_TIME_COLUMN] + evaluation.metric_names
    with per_image_path.open('w', newline='') as stream:
        writer = csv.DictWriter(stream, fieldnames=columns)
        writer.writeheader()
        writer.writerows(evaluation.rows)
    with summary_path.open('w', newline='') as stream:
        writer = csv.writer(stream)
        measured = evaluation.metric_names + [FUSE_TIME_COLUMN]
        writer.writerow(['method', 'n'] + [f'{name}_{stat}' for name in measured
                                           for stat in ('mean', 'std')])
        for method in evaluation.methods:
            count = evaluation.values(method.name, measured[0]).size
            stats = []
            for name in measured:
                values = evaluation.values(method.name, name)
                with np.errstate(invalid='ignore'):   # the std of +inf values is nan: fine
                    stats += [f'{np.mean(values):.6g}', f'{np.std(values):.6g}']
            writer.writerow([method.name, count] + stats)


def save_image_grid(evaluation: Evaluation, path: Path) -> None:
    """Save rows of visible | infrared | fused-per-method for the kept example pairs."""
    methods = [m.name for m in evaluation.methods if not m.is_input]
    rows = [(key, [visible, infrared] + [fused[name] for name in methods])
            for key, (visible, infrared, fused) in evaluation.examples.items()]
    plots.save_image_grid(rows, ['visible', 'infrared'] + methods, path)


def save_bar_chart(evaluation: Evaluation, path: Path) -> None:
    """Save one bar panel per metric (mean with std error bars), methods side by side."""
    # Shares in percent, as in the table: 1.5 % beside the table's 1.50%, not 0.015.
    scale = {metric: 100.0 if metric in PERCENT_METRICS else 1.0
             for metric in evaluation.metric_names}
    values = {metric: {m.name: scale[metric] * evaluation.values(m.name, metric)
                       for m in evaluation.methods}
              for metric in evaluation.metric_names}
    titles = {metric: f'{metric}{" %" * (scale[metric] != 1.0)} {_arrow(metric)}'
              for metric in values}
    plots.save_bar_chart(
        values, path, titles=titles,
        suptitle='mean ± std per method (↑ higher is better, ↓ lower, · neither)')


# ---------------------------------------------------------------------------------------------
# The report


CONVENTIONS_NOTE = """\
Metrics are computed on grey 0-255 images (Y = 0.299 R + 0.587 G + 0.114 B) following the
conventions of MMIF-CDDFuse's `utils/Evaluator.py`, so they compare with published tables:
MI = MI(vi, F) + MI(ir, F) on 256 bins **in bits** (CDDFuse's sklearn call gives nats:
multiply by 0.693); SSIM = SSIM(vi, F) + SSIM(ir, F) with CDDFuse's effective constants (L = 2);
VIF = VIF(vi, F) + VIF(ir, F); Qabf reaches at most 0.975; PSNR is the standard one (peak 255,
mean of the two MSEs) and PSNR_tang that of Tang's MATLAB toolbox used by DFVO (PSNR + 48.13 dB).
No-reference: brightness (mean grey level), clipped (share of pixels at 0 or 255), noise
(Immerkær sigma on the flattest half of the pixels) and LOE (lightness order error against the
visible image). SF and AG also grow with amplified noise: read them beside `noise`.
Table means and stds are over the finite values: a cell such as `31.20 ± 2.10 (1 +inf)` counts
the images left out (PSNR is +inf where visible, infrared and fused image are identical) and more
images at the better infinity rank first; `summary.csv` keeps the plain mean and std of all
values (inf, nan).
Bold marks the best fusion method per metric; the `visible` and `infrared` rows are the inputs,
shown for reference and never marked. `fuse ms` is the wall time of one fusion on this machine.
"""


def write_report(evaluation: Evaluation, output: Path, title: str = 'Fusion evaluation',
                 command: str = '', data_description: str = '',
                 figures: bool = True) -> dict[str, Path]:
    """Write report.md, per_image.csv, summary.csv (and grid.png, metrics.png) into output."""
    output.mkdir(parents=True, exist_ok=True)
    paths = {
        'report': output / 'report.md',
        'per_image': output / 'per_image.csv',
        'summary': output / 'summary.csv',
        'grid': output / 'grid.png',
        'bars': output / 'metrics.png',
    }
    write_csv(evaluation, paths['per_image'], paths['summary'])
    for figure in ('bars', 'grid'):   # an earlier run's must not pass for this one's
        paths[figure].unlink(missing_ok=True)
    if figures:
        save_bar_chart(evaluation, paths['bars'])
    else:
        del paths['bars']
    if figures and evaluation.examples:
        save_image_grid(evaluation, paths['grid'])
    else:
        del paths['grid']
    datasets = evaluation.datasets()
    lines = [f'# {title}', '']
    if command:
        lines += [f'Regenerate: `{command}`', '']
    counts = ', '.join(f'{name} {sum(p.dataset == name for p in evaluation.pairs)}'
                       for name in datasets)
    lines += [f'{len(evaluation.pairs)} pairs ({counts}). {data_description}'.rstrip(), '']
    if evaluation.resized:
        count = len(evaluation.resized)
        shown = ', '.join(evaluation.resized[:RESIZED_SHOWN])
        more = f' and {count - RESIZED_SHOWN} more' if count > RESIZED_SHOWN else ''
        lines += [f'{count} pair{"s" * (count != 1)} with the infrared image resized to the '
                  f'visible size: {shown}{more}.', '']
    if evaluation.unreadable:
        count = len(evaluation.unreadable)
        lines += [f'{count} pair{"s" * (count != 1)} left out (an image could not be read):', '']
        lines += [f'- {key}: {reason}' for key, reason in evaluation.unreadable] + ['']
    lines += ['## Methods', '']
    lines += [f'- `{m.name}` ({m.kind}): {m.source}' for m in evaluation.methods] + ['']
    lines += ['## Mean ± std over all pairs', '', markdown_table(evaluation), '']
    if len(datasets) > 1:
        lines += ['## Per dataset (means)', '']
        for name in datasets:
            lines += [f'### {name}', '', markdown_table(evaluation, name, with_std=False), '']
    if evaluation.detection is not None:
        lines += ['## Detection on each output', '', evaluation.detection.description, '']
        if evaluation.detection_scores:
            lines += [markdown_summary(evaluation.detection_scores), '']
        lines += [markdown_summary(evaluation.label_free), '']
    if figures:
        lines += ['## Figures', '', f'![metrics]({paths["bars"].name})', '']
    if 'grid' in paths:
        lines += [f'![examples]({paths["grid"].name})', '']
    lines += ['## Conventions', '', CONVENTIONS_NOTE,
              f'Per-image values: `{paths["per_image"].name}`; '
              f'means and stds: `{paths["summary"].name}`.', '']
    paths['report'].write_text('\n'.join(lines), encoding='utf-8')
    return paths
