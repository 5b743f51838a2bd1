"""Does fusion help detection? mAP with YOLO labels, or a label-free comparison of inputs.

The detector is any callable ``rgb (h, w, 3) uint8 -> Sequence[Detection]`` (normally
:meth:`ivf_ros.pipeline.detector.YoloDetector.detect`). mAP uses Ultralytics' own matching
(``BaseValidator.match_predictions``), ``box_iou`` and ``DetMetrics`` / ``ap_per_class``, so the
numbers are those ``yolo val`` would print for the same boxes. Inputs compared: the visible image,
the infrared image (grey as RGB) and each fusion method's output.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
import math
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np

from ivf_ros.pipeline.detector import Detection

DetectFunction = Callable[[np.ndarray], Sequence[Detection]]
FuseFunction = Callable[[np.ndarray, np.ndarray], np.ndarray]
# COCO-style IoU thresholds 0.50:0.05:0.95, as Ultralytics' validator uses.
IOU_THRESHOLDS = np.linspace(0.5, 0.95, 10)
TABLE_CLASSES = 4  # classes listed per row of the label-free Markdown table
# How far outside [0, 1] a normalised label coordinate may stray (rounding in converted
# datasets): Ultralytics' verify_image_label allows the same.
LABEL_TOLERANCE = 0.01


class LabelError(ValueError):
    """A YOLO label file is malformed (wrong column count, non-numbers, out-of-range boxes)."""


@dataclass(frozen=True)
class Sample:
    """One registered pair and its ground truth: targets (n, 5) = class, x1, y1, x2, y2 pixels."""

    name: str
    visible: np.ndarray
    infrared: np.ndarray
    targets: np.ndarray | None = None  # None: no labels (label-free comparison only)


def read_yolo_labels(path: str | Path, width: int, height: int) -> np.ndarray:
    """Read 'class cx cy w h' (normalised) lines into (n, 5) class, x1, y1, x2, y2 in pixels.

    As Ultralytics' label check: coordinates may stray LABEL_TOLERANCE outside [0, 1], and a
    line repeated in a file counts once (a duplicate target could never be matched); the box
    corners are then clipped to the image.
    """
    path = Path(path)
    if not path.is_file():
        return np.zeros((0, 5))  # Ultralytics: an image without a label file has no objects
    rows = []
    seen: set[tuple[float, ...]] = set()
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        try:
            values = [float(value) for value in fields]
        except ValueError as error:
            raise LabelError(f'{path}:{number}: not numbers: {line!r}') from error
        if len(values) != 5:
            raise LabelError(f'{path}:{number}: expected 5 values (class cx cy w h), '
                             f'got {len(values)}')
        if not all(math.isfinite(value) for value in values):
            raise LabelError(f'{path}:{number}: not finite: {line!r}')
        class_id, cx, cy, box_w, box_h = values
        if class_id < 0 or class_id != int(class_id) or min(box_w, box_h) < 0 \
                or min(cx, cy) < -LABEL_TOLERANCE \
                or max(cx, cy, box_w, box_h) > 1 + LABEL_TOLERANCE:
            raise LabelError(f'{path}:{number}: class must be an integer >= 0 and the box '
                             f'normalised to [0, 1]: {line!r}')
        if tuple(values) in seen:
            continue
        seen.add(tuple(values))
        x1, x2 = (min(max(value, 0.0), 1.0) * width for value in (cx - box_w / 2, cx + box_w / 2))
        y1, y2 = (min(max(value, 0.0), 1.0) * height
                  for value in (cy - box_h / 2, cy + box_h / 2))
        rows.append([class_id, x1, y1, x2, y2])
    return np.array(rows, dtype=np.float64).reshape(-1, 5)


def detections_to_arrays(detections: Sequence[Detection]) -> tuple[np.ndarray, np.ndarray,
                                                                   np.ndarray]:
    """Return (boxes (n, 4) xyxy, scores (n,), classes (n,)) sorted by descending score."""
    order = sorted(range(len(detections)), key=lambda index: -detections[index].score)
    boxes = np.array([detections[i].xyxy for i in order], dtype=np.float64).reshape(-1, 4)
    scores = np.array([detections[i].score for i in order], dtype=np.float64)
    classes = np.array([detections[i].class_id for i in order], dtype=np.float64)
    return boxes, scores, classes


def input_images(sample: Sample, methods: Mapping[str, FuseFunction]) -> dict[str, np.ndarray]:
    """Return the RGB images a detector is compared on: visible, infrared, then each method."""
    images = {'visible': sample.visible,
              'infrared': cv2.cvtColor(sample.infrared, cv2.COLOR_GRAY2RGB)}
    for name, fuse in methods.items():
        images[name] = fuse(sample.visible, sample.infrared)
    return images


# ---------------------------------------------------------------------------------------------
# mAP with labels


@dataclass
class DetectionScores:
    """mAP@0.5, mAP@0.5:0.95, mean precision/recall and AP@0.5 per class of one input kind."""

    map50: float
    map50_95: float
    precision: float
    recall: float
    images: int
    targets: int
    ap50_per_class: dict[str, float] = field(default_factory=dict)


class MapAccumulator:
    """Collect per-image matches in Ultralytics' DetMetrics; scores() runs its ap_per_class."""

    def __init__(self, names: Mapping[int, str]) -> None:
        import torch
        from ultralytics.engine.validator import BaseValidator
        from ultralytics.utils.metrics import box_iou, DetMetrics

        self._torch = torch
        self._box_iou = box_iou
        self._match = BaseValidator.match_predictions
        # match_predictions only reads self.iouv: a namespace stands in for a whole validator.
        self._matcher = SimpleNamespace(iouv=torch.tensor(IOU_THRESHOLDS, dtype=torch.float32))
        self.metrics = DetMetrics(names=dict(names))
        self.images = 0
        self.targets = 0

    def add(self, detections: Sequence[Detection], targets: np.ndarray, name: str) -> None:
        """Match one image's detections (any order) to its targets (n, 5) and store the stats."""
        torch = self._torch
        boxes, scores, classes = detections_to_arrays(detections)
        target_classes = targets[:, 0]
        if len(boxes) and len(targets):
            iou = self._box_iou(torch.from_numpy(targets[:, 1:]), torch.from_numpy(boxes))
            correct = self._match(self._matcher, torch.from_numpy(classes),
                                  torch.from_numpy(target_classes), iou).numpy()
        else:
            correct = np.zeros((len(boxes), IOU_THRESHOLDS.size), dtype=bool)
        self.metrics.update_stats({
            'tp': correct, 'conf': scores, 'pred_cls': classes, 'target_cls': target_classes,
            'target_img': np.unique(target_classes), 'im_name': name})
        self.images += 1
        self.targets += len(targets)

    def scores(self) -> DetectionScores:
        """Return mAP@0.5 and mAP@0.5:0.95 (Ultralytics' ap_per_class) over the added images."""
        self.metrics.process()
        box = self.metrics.box
        names = self.metrics.names
        per_class = {names.get(int(class_id), str(int(class_id))): float(box.ap50[index])
                     for index, class_id in enumerate(box.ap_class_index)}
        return DetectionScores(float(box.map50), float(box.map), float(box.mp), float(box.mr),
                               self.images, self.targets, per_class)


def map_by_input(detect: DetectFunction, samples: Iterable[Sample], names: Mapping[int, str],
                 methods: Mapping[str, FuseFunction] | None = None
                 ) -> dict[str, DetectionScores]:
    """Return mAP per input kind (visible, infrared, each fusion method) on labelled samples."""
    accumulators: dict[str, MapAccumulator] = {}
    for sample in samples:
        if sample.targets is None:
            raise LabelError(f'sample {sample.name} has no labels: use label_free_by_input')
        for kind, image in input_images(sample, methods or {}).items():
            accumulator = accumulators.setdefault(kind, MapAccumulator(names))
            accumulator.add(detect(image), sample.targets, sample.name)
    return {kind: accumulator.scores() for kind, accumulator in accumulators.items()}


# ---------------------------------------------------------------------------------------------
# Without labels


@dataclass
class LabelFreeStats:
    """Detections per image and mean confidence, overall and per class name, of one input kind."""

    images: int = 0
    detections: int = 0
    confidence_sum: float = 0.0
    per_class_count: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    per_class_confidence: dict[str, float] = field(default_factory=lambda: defaultdict(float))

    def add(self, detections: Sequence[Detection]) -> None:
        """Count one image's detections."""
        self.images += 1
        for detection in detections:
            self.detections += 1
            self.confidence_sum += detection.score
            self.per_class_count[detection.class_name] += 1
            self.per_class_confidence[detection.class_name] += detection.score

    @property
    def detections_per_image(self) -> float:
        """Return detections / images."""
        return self.detections / self.images if self.images else 0.0

    @property
    def mean_confidence(self) -> float:
        """Return the mean score over all detections (0 when there are none)."""
        return self.confidence_sum / self.detections if self.detections else 0.0

    def class_summary(self) -> dict[str, tuple[float, float]]:
        """Return class name -> (detections per image, mean confidence)."""
        return {name: (count / self.images, self.per_class_confidence[name] / count)
                for name, count in sorted(self.per_class_count.items())}


def label_free_by_input(detect: DetectFunction, samples: Iterable[Sample],
                        methods: Mapping[str, FuseFunction] | None = None
                        ) -> dict[str, LabelFreeStats]:
    """Return detections per image and mean confidence per input kind (no labels needed)."""
    stats: dict[str, LabelFreeStats] = {}
    for sample in samples:
        for kind, image in input_images(sample, methods or {}).items():
            stats.setdefault(kind, LabelFreeStats()).add(detect(image))
    return stats


def markdown_summary(results: Mapping[str, DetectionScores | LabelFreeStats]) -> str:
    """Return a Markdown table of map_by_input or label_free_by_input results."""
    if all(isinstance(value, DetectionScores) for value in results.values()):
        lines = ['| input | images | targets | mAP@0.5 ↑ | mAP@0.5:0.95 ↑ | P ↑ | R ↑ |',
                 '|---|---|---|---|---|---|---|']
        lines += [f'| {kind} | {s.images} | {s.targets} | {s.map50:.3f} | {s.map50_95:.3f} | '
                  f'{s.precision:.3f} | {s.recall:.3f} |' for kind, s in results.items()]
        return '\n'.join(lines)
    lines = ['| input | images | detections / image | mean confidence | '
             'top classes (n/img @ conf) |', '|---|---|---|---|---|']
    for kind, stats in results.items():
        # The most frequent classes only: a COCO detector names a dozen rare ones at night.
        frequent = sorted(stats.class_summary().items(), key=lambda item: -item[1][0])
        classes = ', '.join(f'{name} {per_image:.2f} @ {confidence:.2f}' for name,
                            (per_image, confidence) in frequent[:TABLE_CLASSES])
        lines.append(f'| {kind} | {stats.images} | {stats.detections_per_image:.2f} | '
                     f'{stats.mean_confidence:.3f} | {classes or "-"} |')
    return '\n'.join(lines)


# ---------------------------------------------------------------------------------------------
# Per-class AP with paired bootstrap intervals (the detection report of ``ivf-eval detect``)

# Class ids of the labelled night sets' files (../shared/datasets/README.md).
DATASET_CLASSES: dict[int, str] = {0: 'person', 1: 'car', 2: 'bicycle'}
REPORT_CLASSES = ('person', 'car')
RECALL_CONFIDENCE = 0.25   # recall counts detections a deployed detector would keep
# AP keeps every box above this, as yolo val does: the whole precision-recall curve.
MAP_CONFIDENCE = 0.001


def to_dataset_classes(detections: Sequence[Detection],
                       classes: Mapping[int, str] = DATASET_CLASSES) -> list[Detection]:
    """Keep the detections of the label files' classes, renumbered to their ids (by name).

    A COCO detector says 'car' with id 2; the label files say 1: matching goes by name.
    """
    ids = {name: class_id for class_id, name in classes.items()}
    return [Detection(ids[d.class_name], d.class_name, d.score, d.cx, d.cy, d.width, d.height)
            for d in detections if d.class_name in ids]


@dataclass
class ImageMatches:
    """One image's detections matched to its targets at the 10 COCO IoU thresholds."""

    correct: np.ndarray       # (n, 10) bool: detection i is a true positive at threshold j
    scores: np.ndarray        # (n,)
    classes: np.ndarray       # (n,)
    target_classes: np.ndarray  # (m,)


def match_image(detections: Sequence[Detection], targets: np.ndarray) -> ImageMatches:
    """Match detections (any order) to targets (m, 5) as Ultralytics' validator does."""
    import torch
    from ultralytics.engine.validator import BaseValidator
    from ultralytics.utils.metrics import box_iou

    boxes, scores, classes = detections_to_arrays(detections)
    if len(boxes) and len(targets):
        iou = box_iou(torch.from_numpy(targets[:, 1:]), torch.from_numpy(boxes))
        matcher = SimpleNamespace(iouv=torch.tensor(IOU_THRESHOLDS, dtype=torch.float32))
        correct = BaseValidator.match_predictions(
            matcher, torch.from_numpy(classes), torch.from_numpy(targets[:, 0]), iou).numpy()
    else:
        correct = np.zeros((len(boxes), IOU_THRESHOLDS.size), dtype=bool)
    return ImageMatches(correct, scores, classes, targets[:, 0].copy())


@dataclass(frozen=True)
class ClassScores:
    """AP@0.5, AP@0.5:0.95 and recall (at RECALL_CONFIDENCE, IoU 0.5) of one class."""

    ap50: float
    ap50_95: float
    recall: float
    targets: int


def class_scores(matches: Sequence[ImageMatches], class_id: int) -> ClassScores:
    """Return one class's AP as ``yolo val`` computes it, and its recall, over the images.

    Ultralytics' ap_per_class: COCO's matching and IoU thresholds, but the precision envelope
    integrated by the trapezoid rule over 101 recall points, so a perfect class scores 0.995
    (pycocotools: 1.000) and other values sit within about 0.01 below pycocotools'.
    """
    from ultralytics.utils.metrics import ap_per_class

    target_classes = np.concatenate([m.target_classes for m in matches] or [np.zeros(0)])
    targets = int(np.count_nonzero(target_classes == class_id))
    if targets == 0:
        return ClassScores(float('nan'), float('nan'), float('nan'), 0)
    keep = [m.classes == class_id for m in matches]
    correct = np.concatenate([m.correct[k] for m, k in zip(matches, keep, strict=True)])
    scores = np.concatenate([m.scores[k] for m, k in zip(matches, keep, strict=True)])
    if correct.shape[0] == 0:
        return ClassScores(0.0, 0.0, 0.0, targets)
    classes = np.full(scores.shape, float(class_id))
    result = ap_per_class(correct, scores, classes, np.full(targets, float(class_id)))
    ap = result[5]                                            # (1, 10)
    # match_predictions matches each target at most once per threshold: TPs count targets.
    found = int(np.count_nonzero(correct[:, 0] & (scores >= RECALL_CONFIDENCE)))
    return ClassScores(float(ap[0, 0]), float(ap[0].mean()), found / targets, targets)


@dataclass
class BootstrapResult:
    """Point values per input and class, and paired-bootstrap intervals of differences."""

    scores: dict[str, dict[str, ClassScores]]
    # (input, class) -> (low, high) 95 % interval of the AP@0.5 over image resamples
    intervals: dict[tuple[str, str], tuple[float, float]]
    # (fused, source, class) -> (delta, low, high) of AP@0.5: fused minus source
    differences: dict[tuple[str, str, str], tuple[float, float, float]]
    resamples: int
    images: int


def bootstrap_ap(matches: Mapping[str, Sequence[ImageMatches]],
                 fused: Sequence[str], resamples: int = 1000, seed: int = 0,
                 classes: Mapping[int, str] | None = None) -> BootstrapResult:
    """Per-class AP of every input, with 95 % paired-bootstrap intervals over the images.

    Every resample draws the images with replacement once and scores all inputs on the same
    draw, so the interval of (fused - source) is that of a paired difference.
    """
    classes = dict(classes or {i: n for i, n in DATASET_CLASSES.items() if n in REPORT_CLASSES})
    kinds = list(matches)
    count = len(next(iter(matches.values())))
    if any(len(value) != count for value in matches.values()):
        raise ValueError('every input must be matched on the same images')
    point = {kind: {name: class_scores(matches[kind], class_id)
                    for class_id, name in classes.items()} for kind in kinds}
    generator = np.random.default_rng(seed)
    draws: dict[tuple[str, str], list[float]] = defaultdict(list)
    for _ in range(resamples):
        picks = generator.integers(0, count, count)
        for kind in kinds:
            chosen = [matches[kind][i] for i in picks]
            for class_id, name in classes.items():
                draws[kind, name].append(class_scores(chosen, class_id).ap50)
    intervals = {key: _interval(values) for key, values in draws.items()}
    differences = {}
    for fused_kind in fused:
        for source in kinds:
            if source == fused_kind:
                continue
            for name in classes.values():
                delta = np.array(draws[fused_kind, name]) - np.array(draws[source, name])
                low, high = _interval(delta)
                differences[fused_kind, source, name] = (
                    point[fused_kind][name].ap50 - point[source][name].ap50, low, high)
    return BootstrapResult(point, intervals, differences, resamples, count)


def bootstrap_by_group(matches: Mapping[str, Sequence[ImageMatches]], groups: Sequence[str],
                       fused: Sequence[str], resamples: int = 1000, seed: int = 0
                       ) -> dict[str, BootstrapResult]:
    """Return :func:`bootstrap_ap` of each group's images (groups: one name per image).

    Per dataset, for instance: a camera whose scenes favour one source shows up here where the
    whole split's AP averages it away.
    """
    if any(len(value) != len(groups) for value in matches.values()):
        raise ValueError('one group name per matched image is needed')
    results = {}
    for group in sorted(set(groups)):
        indices = [i for i, name in enumerate(groups) if name == group]
        results[group] = bootstrap_ap({kind: [value[i] for i in indices]
                                       for kind, value in matches.items()},
                                      fused, resamples, seed)
    return results


def _interval(values: Sequence[float]) -> tuple[float, float]:
    """Return the 2.5 and 97.5 percentiles, ignoring NaN draws (a class absent from a draw)."""
    array = np.asarray(values, dtype=np.float64)
    array = array[np.isfinite(array)]
    if array.size == 0:
        return float('nan'), float('nan')
    low, high = np.percentile(array, [2.5, 97.5])
    return float(low), float(high)


def lost_objects(targets: np.ndarray, fused: Sequence[Detection],
                 sources: Mapping[str, Sequence[Detection]],
                 confidence: float = RECALL_CONFIDENCE, iou: float = 0.5
                 ) -> list[tuple[int, list[str]]]:
    """Return (target index, sources that found it) for targets a source found and fused lost.

    Found = a detection of the target's class with score >= confidence and IoU >= iou.
    """
    def found(index: int, detections: Sequence[Detection]) -> bool:
        target = targets[index]
        for detection in detections:
            if detection.class_id != int(target[0]) or detection.score < confidence:
                continue
            if _iou(target[1:], detection.xyxy) >= iou:
                return True
        return False

    lost = []
    for index in range(len(targets)):
        finders = [name for name, detections in sources.items() if found(index, detections)]
        if finders and not found(index, fused):
            lost.append((index, finders))
    return lost


# Pseudo-labels for unlabelled frames (the training-split proxy): what the detector finds
# confidently on either source, at a larger input size than it is evaluated at.
PSEUDO_CONFIDENCE = 0.4
PSEUDO_IOU = 0.5        # merging the two sources' boxes
PSEUDO_NMS_IOU = 0.7    # the labelling detector's own NMS (Ultralytics' default)
PSEUDO_IMGSZ = 1280


def pseudo_labels(detections: Sequence[Detection], confidence: float = PSEUDO_CONFIDENCE,
                  iou: float = PSEUDO_IOU) -> np.ndarray:
    """Return (m, 5) class, x1, y1, x2, y2 targets: both sources' confident boxes, merged.

    ``detections`` are both sources' detections in the label files' classes; those scored
    >= ``confidence`` are merged by greedy NMS per class (a box overlapping a higher-scored one
    of its class by IoU > ``iou`` is the same object seen by the other camera). Such targets
    favour whichever source found each object: a proxy for choices, never a validation.
    """
    kept: list[Detection] = []
    for detection in sorted((d for d in detections if d.score >= confidence),
                            key=lambda d: -d.score):
        if all(other.class_id != detection.class_id or _iou(other.xyxy, detection.xyxy) <= iou
               for other in kept):
            kept.append(detection)
    rows = [[float(d.class_id), *d.xyxy] for d in kept]
    return np.array(rows, dtype=np.float64).reshape(-1, 5)


def _iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Return the IoU of two xyxy boxes."""
    width = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    height = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = width * height
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


# Warm-target contrast: does a labelled object keep the infrared's contrast to its surround
# (the thermal salience, measured on held-out labels instead of trained on)?
WARM_CONTRAST = 0.03   # an object is warm when the infrared's contrast exceeds this (the
#                        salience term's margin, in luma units of [0, 1])


def target_contrast(luma: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """Return each xyxy box's mean luma minus its surround's (n,); NaN where undefined.

    ``luma`` is (h, w) in [0, 1]. The surround is the ring between the box and the box grown by
    half its width and height on each side (clipped to the image), as a viewer or a detector
    compares an object with what is round it. A box with no pixel inside the image, or whose
    ring is empty (it covers the image), has no contrast.
    """
    height, width = luma.shape
    # Summed-area table: any rectangle's sum in four lookups, (h + 1, w + 1) float64.
    table = np.zeros((height + 1, width + 1), np.float64)
    table[1:, 1:] = luma.astype(np.float64).cumsum(0).cumsum(1)

    def rectangle(x1: float, y1: float, x2: float, y2: float) -> tuple[float, int]:
        left, top = min(max(round(x1), 0), width), min(max(round(y1), 0), height)
        right, bottom = min(max(round(x2), 0), width), min(max(round(y2), 0), height)
        total = (table[bottom, right] - table[top, right] - table[bottom, left]
                 + table[top, left])
        return float(total), max(right - left, 0) * max(bottom - top, 0)

    contrasts = np.full(len(boxes), np.nan)
    for index, (x1, y1, x2, y2) in enumerate(np.asarray(boxes, np.float64).reshape(-1, 4)):
        inner_sum, inner_area = rectangle(x1, y1, x2, y2)
        grow_x, grow_y = (x2 - x1) / 2, (y2 - y1) / 2
        outer_sum, outer_area = rectangle(x1 - grow_x, y1 - grow_y, x2 + grow_x, y2 + grow_y)
        if inner_area and outer_area > inner_area:
            contrasts[index] = (inner_sum / inner_area
                                - (outer_sum - inner_sum) / (outer_area - inner_area))
    return contrasts


@dataclass(frozen=True)
class ContrastSummary:
    """One input's contrast on the targets that are warm in the infrared."""

    targets: int        # warm targets of the class (infrared contrast > WARM_CONTRAST)
    mean: float         # their mean contrast on this input
    ratio: float        # that mean over the infrared's on the same targets
    below_half: float   # share of them whose contrast here is under half the infrared's


def contrast_summary(contrasts: Mapping[str, np.ndarray], reference: str = 'infrared'
                     ) -> dict[str, ContrastSummary]:
    """Summarise each input's per-target contrasts (same targets, same order) on warm ones."""
    infrared = np.asarray(contrasts[reference], np.float64)
    warm = np.isfinite(infrared) & (infrared > WARM_CONTRAST)
    summaries = {}
    for kind, values in contrasts.items():
        values = np.asarray(values, np.float64)
        if values.shape != infrared.shape:
            raise ValueError(f'{kind}: {values.shape[0]} contrasts for {infrared.shape[0]} '
                             f'targets of {reference}')
        if not warm.any():
            summaries[kind] = ContrastSummary(0, math.nan, math.nan, math.nan)
            continue
        # A target the input cannot measure (NaN) has no contrast there: counted as lost.
        here = np.nan_to_num(values[warm], nan=0.0)
        summaries[kind] = ContrastSummary(
            int(warm.sum()), float(here.mean()), float(here.mean() / infrared[warm].mean()),
            float((here < 0.5 * infrared[warm]).mean()))
    return summaries
