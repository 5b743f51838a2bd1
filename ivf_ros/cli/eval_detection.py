"""ivf-eval detect: detection AP per input, to see if fusion finds more people and cars at night.

Runs a COCO detector (default: ../shared/weights/yolo11n/yolo11n-rebuilt.pt) on every input of
each labelled pair (visible, infrared as grey RGB, every fusion method) and reports per class
(person, car) AP@0.5, AP@0.5:0.95 (COCO protocol: conf 0.001, Ultralytics' matching and
ap_per_class) and recall at conf 0.25, with 95 % intervals from a paired bootstrap over images
for each fused method minus each source, for the whole run and, when it spans several dataset
folders, per folder (a camera whose scenes favour one source shows there), and how much of the
infrared's contrast each input keeps on the labelled objects that are warm in the infrared (the
thermal salience the fusion is trained for). It draws the frames where a fused image lost an
object that a source found, and a contact sheet (visible | infrared | fused | detections).
``--pseudo-labels`` adds the split's unlabelled night pairs with pseudo-labels (the detector at
imgsz 1280 on both sources, score >= 0.4, merged): the training-split proxy that design choices
are made on, so that the validation split is only measured.

Examples::

    ivf-eval detect                                   # validation split, baselines + model
    ivf-eval detect -m max clahe_laplacian new=runs/ship14/stage3.pt --imgsz 1280
    ivf-eval detect --split training --pseudo-labels -m max new=runs/try/stage3.pt  # the proxy
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
import csv
import math
from pathlib import Path
import shlex
import sys
from typing import TYPE_CHECKING

import cv2
import numpy as np
from tqdm import tqdm

from ivf_ros.cli.help import DefaultsHelpFormatter, node_parameter
from ivf_ros.evaluation.baselines import BASELINES
from ivf_ros.evaluation.detection import (
    bootstrap_ap,
    bootstrap_by_group,
    BootstrapResult,
    contrast_summary,
    ContrastSummary,
    DATASET_CLASSES,
    LabelError,
    lost_objects,
    MAP_CONFIDENCE,
    match_image,
    PSEUDO_CONFIDENCE,
    PSEUDO_IMGSZ,
    pseudo_labels,
    PSEUDO_NMS_IOU,
    read_yolo_labels,
    REPORT_CLASSES,
    target_contrast,
    to_dataset_classes,
    WARM_CONTRAST,
)
from ivf_ros.evaluation.plots import save_image_grid
from ivf_ros.evaluation.report import MethodError, pick_examples, resolve_method
from ivf_ros.io.datasets import (
    DatasetError,
    is_labelled,
    is_night,
    label_path,
    load_pair,
    PairedImage,
    SPLITS,
    VALIDATION,
)
from ivf_ros.io.paths import shared_dir
from ivf_ros.nodes.param_specs import DETECTION_NODE

if TYPE_CHECKING:   # the detector module imports Ultralytics: only when detecting
    from ivf_ros.pipeline.detector import YoloDetector

SOURCES = ('visible', 'infrared')
NO_TARGETS = 'n/a'   # the AP of a class without targets (NaN), in the Markdown tables
DEFAULT_DETECTOR = Path('weights') / 'yolo11n' / 'yolo11n-rebuilt.pt'   # under ../shared
LOST_ROWS = 8
SHEET_ROWS = 6


def build_parser() -> argparse.ArgumentParser:
    """Return the parser of ``ivf-eval detect``."""
    parser = argparse.ArgumentParser(
        prog='ivf-eval detect', description=__doc__.split('\n\n')[0],
        formatter_class=DefaultsHelpFormatter)
    parser.add_argument('data', nargs='*', type=Path,
                        help='paired folders or dataset roots (default ../shared/datasets)')
    parser.add_argument('-m', '--methods', nargs='+',
                        default=[name for name in BASELINES if name not in SOURCES] + ['model'],
                        metavar='METHOD',
                        help='fusion methods as in ivf-eval (baselines, model, folders, .pt); '
                             'the two sources are always scored')
    parser.add_argument('--fused', nargs='+', default=None, metavar='NAME',
                        help='methods whose differences to every other input get intervals '
                             '(default: every model and folder method, else the last method)')
    parser.add_argument('--split', choices=SPLITS, default=VALIDATION,
                        help='team split (validation: the labelled night pairs)')
    parser.add_argument('--pseudo-labels', action='store_true',
                        help='also score the unlabelled night pairs, on pseudo-labels: the '
                             f'detector at imgsz {PSEUDO_IMGSZ} on both sources, score >= '
                             f'{PSEUDO_CONFIDENCE}, merged (a proxy: they favour the source '
                             'that found each object)')
    parser.add_argument('--detector', type=Path, default=None,
                        help=f'YOLO weights (default ../shared/{DEFAULT_DETECTOR})')
    parser.add_argument('--imgsz', type=node_parameter(DETECTION_NODE, 'imgsz', int),
                        default=640, help='detector input size (a multiple of 32)')
    parser.add_argument('--allow-unsafe-checkpoint', action='store_true',
                        help='load a --detector file that needs full pickle (it can run code)')
    parser.add_argument('--conf', type=float, default=MAP_CONFIDENCE,
                        help='detector confidence threshold for AP (COCO protocol)')
    parser.add_argument('--iou', type=float, default=0.7, help='NMS IoU (Ultralytics val)')
    parser.add_argument('--bootstrap', type=int, default=1000, help='bootstrap resamples')
    parser.add_argument('--seed', type=int, default=0, help='bootstrap seed')
    parser.add_argument('--device', default='auto', help='auto|cpu|cuda:N')
    parser.add_argument('-o', '--output', type=Path, default=Path('output/detect'),
                        help='report folder')
    parser.add_argument('--limit', type=int, default=None, help='first N labelled pairs only')
    parser.add_argument('--no-figures', action='store_true', help='tables only')
    parser.add_argument('--no-progress', action='store_true', help='hide the progress bar')
    return parser


def scored_pairs(data: Sequence[Path], split: str, limit: int | None,
                 pseudo: bool = False) -> list[PairedImage]:
    """Return the split's pairs that have a label file [or, if pseudo, are night pairs].

    A frame without a label file is unlabelled, not empty: it is left out unless it gets
    pseudo-labels. The validation split is only ever scored on its labels.
    """
    from ivf_ros.cli.eval import collect_pairs

    if pseudo and split == VALIDATION:
        raise DatasetError('--pseudo-labels is for the training split (choices are made there; '
                           'the validation split is scored on its labels only)')
    pairs = [pair for pair in collect_pairs(data, split, False, None)
             if is_labelled(pair) or (pseudo and is_night(pair))]
    if limit is not None:
        pairs = pairs[:limit]
    if not pairs:
        wanted = 'labelled or night pairs' if pseudo else 'labelled pairs'
        raise DatasetError(f'no {wanted} in the {split} split of {list(data) or "default"}')
    return pairs


def pair_targets(pair: PairedImage, visible: np.ndarray, infrared_rgb: np.ndarray,
                 labeller: YoloDetector | None) -> np.ndarray:
    """Return the pair's (n, 5) targets of the reported classes: its labels, else pseudo-labels."""
    if is_labelled(pair) or labeller is None:
        targets = read_yolo_labels(label_path(pair), visible.shape[1], visible.shape[0])
    else:
        targets = pseudo_labels(to_dataset_classes(labeller.detect(visible))
                                + to_dataset_classes(labeller.detect(infrared_rgb)))
    return targets[np.isin(targets[:, 0], [i for i, n in DATASET_CLASSES.items()
                                           if n in REPORT_CLASSES])]


def _draw(image: np.ndarray, boxes: Sequence[Sequence[float]], colour: tuple[int, int, int],
          thickness: int = 2) -> np.ndarray:
    """Return a copy of an RGB image with xyxy boxes drawn."""
    canvas = np.ascontiguousarray(image).copy()
    for x1, y1, x2, y2 in boxes:
        cv2.rectangle(canvas, (int(x1), int(y1)), (int(x2), int(y2)), colour, thickness)
    return canvas


def difference_cell(delta: float, low: float, high: float) -> str:
    """Return 'Δ [low, high]', marked where the interval is all below or above 0."""
    if not math.isfinite(delta):
        return NO_TARGETS
    mark = ' **<0**' if high < 0 else (' **>0**' if low > 0 else '')
    return f'{delta:+.3f} [{low:+.3f}, {high:+.3f}]{mark}'


def markdown(result: BootstrapResult, recall_note: str) -> str:
    """Return the detection tables: per input and class, then fused minus each source."""
    lines = [f'{result.images} images; 95 % intervals from {result.resamples} paired '
             f'bootstrap resamples over images. {recall_note}', '',
             '| input | ' + ' | '.join(f'{c} AP@0.5 [95 %] | {c} AP@0.5:0.95 | {c} recall'
                                       for c in REPORT_CLASSES) + ' |',
             '|---|' + '---|---|---|' * len(REPORT_CLASSES)]
    for kind, per_class in result.scores.items():
        cells = []
        for name in REPORT_CLASSES:
            score = per_class[name]
            low, high = result.intervals[kind, name]
            if not math.isfinite(score.ap50):      # no target of the class in these images
                cells += [NO_TARGETS] * 3
                continue
            cells += [f'{score.ap50:.3f} [{low:.3f}, {high:.3f}]', f'{score.ap50_95:.3f}',
                      f'{score.recall:.3f}']
        lines.append(f'| {kind} | ' + ' | '.join(cells) + ' |')
    lines += ['', '| fused - source | ' + ' | '.join(f'{c} ΔAP@0.5 [95 %]'
                                                       for c in REPORT_CLASSES) + ' |',
              '|---|' + '---|' * len(REPORT_CLASSES)]
    pairs = dict.fromkeys((fused, source) for fused, source, _ in result.differences)
    for fused, source in pairs:
        cells = []
        for name in REPORT_CLASSES:
            cells.append(difference_cell(*result.differences[fused, source, name]))
        lines.append(f'| {fused} - {source} | ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines)


def markdown_by_group(results: dict[str, BootstrapResult]) -> str:
    """Return one table of AP@0.5 per group and input, with each fused input minus a source."""
    header = ['group (images)', 'input'] + [f'{c} AP@0.5' for c in REPORT_CLASSES] + [
        f'{c} Δ {source} [95 %]' for c in REPORT_CLASSES for source in SOURCES]
    lines = ['| ' + ' | '.join(header) + ' |', '|---' * len(header) + '|']
    for group, result in results.items():
        for kind, per_class in result.scores.items():
            cells = [f'{group} ({result.images})', kind]
            cells += [f'{per_class[name].ap50:.3f}' if math.isfinite(per_class[name].ap50)
                      else NO_TARGETS for name in REPORT_CLASSES]
            for name in REPORT_CLASSES:
                for source in SOURCES:
                    if (kind, source, name) not in result.differences:
                        cells.append('')
                        continue
                    cells.append(difference_cell(*result.differences[kind, source, name]))
            lines.append('| ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines)


def write_csv(result: BootstrapResult, path: Path,
              by_group: dict[str, BootstrapResult] | None = None) -> None:
    """Write one row per input and class (point values and AP@0.5 interval) [and per group]."""
    with path.open('w', newline='') as handle:
        writer = csv.writer(handle)
        writer.writerow(['group', 'input', 'class', 'targets', 'ap50', 'ap50_low', 'ap50_high',
                         'ap50_95', 'recall'])
        for group, group_result in [('all', result), *(by_group or {}).items()]:
            for kind, per_class in group_result.scores.items():
                for name, score in per_class.items():
                    low, high = group_result.intervals[kind, name]
                    writer.writerow([group, kind, name, score.targets, score.ap50, low, high,
                                     score.ap50_95, score.recall])


def write_differences_csv(result: BootstrapResult, path: Path,
                          by_group: dict[str, BootstrapResult] | None = None) -> None:
    """Write the paired differences (fused minus each source, AP@0.5) with their intervals."""
    with path.open('w', newline='') as handle:
        writer = csv.writer(handle)
        writer.writerow(['group', 'fused', 'source', 'class', 'delta_ap50', 'low', 'high'])
        for group, group_result in [('all', result), *(by_group or {}).items()]:
            for (fused, source, name), (delta, low, high) in group_result.differences.items():
                writer.writerow([group, fused, source, name, delta, low, high])


def contrast_by_class(contrasts: dict[str, list[np.ndarray]], classes: Sequence[np.ndarray]
                      ) -> dict[str, dict[str, ContrastSummary]]:
    """Return {class: {input: summary}} of the per-pair target contrasts of each input."""
    every_class = np.concatenate(classes) if classes else np.zeros(0)
    joined = {kind: (np.concatenate(values) if values else np.zeros(0))
              for kind, values in contrasts.items()}
    by_class = {}
    for name in REPORT_CLASSES:
        ids = [i for i, label in DATASET_CLASSES.items() if label == name]
        chosen = np.isin(every_class, ids)
        by_class[name] = contrast_summary({kind: values[chosen]
                                           for kind, values in joined.items()})
    return by_class


def markdown_contrast(by_class: dict[str, dict[str, ContrastSummary]]) -> str:
    """Return the warm-target contrast table: per input, each class's contrast and losses."""
    counts = ', '.join(f'{next(iter(per.values())).targets} {name}' for name, per in
                       by_class.items() if per)
    lines = [f'Targets warm in the infrared ({counts}: the mean luma of the box more than '
             f'{WARM_CONTRAST} above that of the ring round it, out to half the box size): '
             "each input's mean box-minus-ring contrast on them, that mean over the "
             "infrared's, and the share of them under half the infrared's contrast (a warm "
             'object fading into its surround).', '',
             '| input | ' + ' | '.join(f'{c} contrast | {c} vs infrared | {c} under half'
                                       for c in by_class) + ' |',
             '|---|' + '---|---|---|' * len(by_class)]
    kinds = next(iter(by_class.values())).keys() if by_class else []
    for kind in kinds:
        cells = []
        for per in by_class.values():
            summary = per[kind]
            cells += ([NO_TARGETS] * 3 if not summary.targets else [
                f'{summary.mean:.3f}', f'{summary.ratio:.2f}',
                f'{100 * summary.below_half:.0f} %'])
        lines.append(f'| {kind} | ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines)


def write_contrast_csv(by_class: dict[str, dict[str, ContrastSummary]], path: Path) -> None:
    """Write one row per input and class of the warm-target contrast summary."""
    with path.open('w', newline='') as handle:
        writer = csv.writer(handle)
        writer.writerow(['input', 'class', 'warm_targets', 'contrast', 'ratio_to_infrared',
                         'below_half'])
        for name, per in by_class.items():
            for kind, summary in per.items():
                writer.writerow([kind, name, summary.targets, summary.mean, summary.ratio,
                                 summary.below_half])


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``ivf-eval detect``; return 0, or 2 on bad input."""
    args = build_parser().parse_args(argv)
    try:
        pairs = scored_pairs(args.data, args.split, args.limit, args.pseudo_labels)
        methods = [resolve_method(spec, args.device) for spec in args.methods]
        names = [method.name for method in methods]
        if len(set(names) | set(SOURCES)) != len(names) + len(SOURCES):
            raise MethodError(f'method names must be unique and not {SOURCES}: {names}')
        fused = args.fused or ([m.name for m in methods if m.kind != 'baseline']
                               or names[-1:])
        unknown = sorted(set(fused) - set(names))
        if unknown:
            raise MethodError(f'--fused {unknown}: not among the methods {names}')
        from ivf_ros.pipeline.detector import DetectorLoadError, YoloDetector

        weights = args.detector or shared_dir() / DEFAULT_DETECTOR
        try:
            detector = YoloDetector(weights, conf=args.conf, iou=args.iou, imgsz=args.imgsz,
                                    max_det=300, device=args.device,
                                    allow_unsafe_checkpoint=args.allow_unsafe_checkpoint)
            labeller = YoloDetector(weights, conf=PSEUDO_CONFIDENCE, iou=PSEUDO_NMS_IOU,
                                    imgsz=PSEUDO_IMGSZ, max_det=300, device=args.device,
                                    allow_unsafe_checkpoint=args.allow_unsafe_checkpoint
                                    ) if args.pseudo_labels else None
        except DetectorLoadError as error:
            raise MethodError(str(error)) from error
        kinds = list(SOURCES) + names
        matches: dict[str, list] = {kind: [] for kind in kinds}
        contrasts: dict[str, list[np.ndarray]] = {kind: [] for kind in kinds}
        target_classes: list[np.ndarray] = []
        lost_rows, sheet_rows = [], []
        sheet_indices = pick_examples(pairs, SHEET_ROWS)
        bar = tqdm(pairs, desc='detect', unit='pair', disable=args.no_progress)
        for index, pair in enumerate(bar):
            visible, infrared = load_pair(pair)
            images = {'visible': visible,
                      'infrared': cv2.cvtColor(infrared, cv2.COLOR_GRAY2RGB)}
            targets = pair_targets(pair, visible, images['infrared'], labeller)
            for method in methods:
                images[method.name] = method.apply(pair, visible, infrared)
            found = {kind: to_dataset_classes(detector.detect(image))
                     for kind, image in images.items()}
            target_classes.append(targets[:, 0])
            for kind in kinds:
                matches[kind].append(match_image(found[kind], targets))
                luma = cv2.cvtColor(images[kind], cv2.COLOR_RGB2GRAY).astype(np.float32) / 255
                contrasts[kind].append(target_contrast(luma, targets[:, 1:]))
            for name in fused:
                lost = lost_objects(targets, found[name], {s: found[s] for s in SOURCES})
                if lost:
                    boxes = [targets[i, 1:] for i, _ in lost]
                    kept = [d.xyxy for d in found[name] if d.score >= 0.25]
                    lost_rows.append((f'{pair.key} {name}: {len(lost)} lost', [
                        _draw(images['visible'], boxes, (255, 0, 0)),
                        _draw(images['infrared'], boxes, (255, 0, 0)),
                        _draw(_draw(images[name], kept, (0, 255, 0)), boxes, (255, 0, 0))]))
            if index in sheet_indices:
                name = fused[0]
                shown = [d for d in found[name] if d.score >= 0.25]
                sheet_rows.append((pair.key, [visible, infrared, images[name],
                                              detector.annotate(images[name], shown)]))
        bar.close()
    except (DatasetError, MethodError, LabelError) as error:
        print(f'ivf-eval detect: error: {error}', file=sys.stderr)
        return 2
    result = bootstrap_ap(matches, fused, args.bootstrap, args.seed)
    groups = [pair.dataset for pair in pairs]
    by_dataset = (bootstrap_by_group(matches, groups, fused, args.bootstrap, args.seed)
                  if len(set(groups)) > 1 else {})
    args.output.mkdir(parents=True, exist_ok=True)
    command = shlex.join(['ivf-eval', 'detect'] + list(sys.argv[2:] if argv is None else argv))
    datasets = ', '.join(sorted(set(groups)))
    pseudo_count = sum(not is_labelled(pair) for pair in pairs)
    which = (f'{len(pairs) - pseudo_count} labelled pairs and {pseudo_count} unlabelled night '
             f'pairs on pseudo-labels (imgsz {PSEUDO_IMGSZ}, both sources, score >= '
             f'{PSEUDO_CONFIDENCE}, merged)' if pseudo_count else 'labelled pairs')
    text = '\n'.join([
        '# Detection on the fused images', '',
        f'Command: `{command}`', '',
        f'Detector `{weights}` at imgsz {args.imgsz}, conf {args.conf}, NMS IoU {args.iou}; '
        f'{args.split} split, {which} of {datasets}; classes person, car (the detections '
        "renumbered by name to the label files' ids).", '',
        markdown(result, 'Recall: share of targets matched at IoU 0.5 by a detection with '
                         'score >= 0.25.'), ''])
    contrast = contrast_by_class(contrasts, target_classes)
    text += '\n'.join(['', '## Warm-target contrast', '', markdown_contrast(contrast), ''])
    if by_dataset:
        text += '\n'.join([
            '', '## Per dataset', '',
            'The same detections scored per dataset folder (each with its own paired bootstrap '
            f'over its images); {NO_TARGETS}: the folder holds no target of the class.', '',
            markdown_by_group(by_dataset), ''])
    (args.output / 'detection.md').write_text(text, encoding='utf-8')   # 'Δ' in any locale
    write_csv(result, args.output / 'detection.csv', by_dataset)
    write_differences_csv(result, args.output / 'detection_paired.csv', by_dataset)
    write_contrast_csv(contrast, args.output / 'contrast.csv')
    print(text)
    for figure in ('lost.png', 'contact.png'):   # an earlier run's must not pass for this one's
        (args.output / figure).unlink(missing_ok=True)
    if not args.no_figures:
        if lost_rows:
            save_image_grid(lost_rows[:LOST_ROWS], ['visible', 'infrared', 'fused'],
                            args.output / 'lost.png')
            print(f'lost: {args.output / "lost.png"} ({len(lost_rows)} frames, first '
                  f'{min(len(lost_rows), LOST_ROWS)} shown; red: lost targets, green: fused '
                  'detections >= 0.25)')
        if sheet_rows:
            save_image_grid(sheet_rows, ['visible', 'infrared', f'fused ({fused[0]})',
                                         'detections >= 0.25'], args.output / 'contact.png')
            print(f'contact sheet: {args.output / "contact.png"}')
    if not all(math.isfinite(s.ap50) for per in result.scores.values() for s in per.values()):
        print('note: a class without targets has NaN AP', file=sys.stderr)
    return 0


if __name__ == '__main__':
    sys.exit(main())
